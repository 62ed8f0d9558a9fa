package store

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// writeCheckSetting is the settings row that CheckWrite rewrites. Unlike the other rows
// of the settings table, which are written once, it changes on every check.
const writeCheckSetting = "write_check"

// Timing of CheckWrite.
const (
	// writeCheckReuse is how long CheckWrite returns the result of the last write
	// instead of writing again, so that frequent probes from many clients add at most
	// about one write a second to each process.
	writeCheckReuse = time.Second

	// writeCheckWait is how long CheckWrite waits for its write. A write that takes
	// longer goes on in the background, and CheckWrite returns the previous result.
	writeCheckWait = 500 * time.Millisecond

	// writeCheckTimeout bounds the wait for the write connection and, separately, the
	// statement of one write. A wait for the connection that reaches it shows load, not a
	// failure. A statement that has not committed by then fails the check, as on
	// PostgreSQL when a synchronous standby is missing and every commit waits for it. On
	// SQLite a wait for another process's write lock ends after sqliteBusyTimeout
	// instead, because the driver does not interrupt SQLite's busy handler.
	writeCheckTimeout = 5 * time.Second
)

// writeCheck is the state of CheckWrite.
type writeCheck struct {
	mu sync.Mutex
	// running is closed when the write in progress ends. It is nil while none runs.
	running chan struct{}
	// checkedAt is when the last write ended, zero before the first.
	checkedAt time.Time
	// err is the result of the last write that committed or failed, and nil before the
	// first. A write that met a busy database leaves it unchanged.
	err error
}

// CheckWrite returns nil when the store commits writes. A database can respond to pings
// and serve reads while every write fails, as with a SQLite -wal file that cannot be
// written, a full disk, or a PostgreSQL hot standby or session with
// default_transaction_read_only. So CheckWrite rewrites one row of the settings table, in
// a transaction of its own on the write pool. It returns the error of a failed write,
// wrapped with ErrUnavailable where the database error means it (see dialect.wrap).
//
// A result is reused for writeCheckReuse, and one write runs at a time. CheckWrite waits
// for that write for up to writeCheckWait or until ctx is done, and then returns the
// previous result while the write goes on. A write that meets a busy database proves
// nothing either way, so it leaves the previous result in place too. Busy means a lock
// held by another writer (SQLITE_BUSY, SQLITE_LOCKED, or a PostgreSQL lock or
// serialization failure), or a wait for the write connection that reached
// writeCheckTimeout.
//
// NOTE: a write that never returns, such as one stuck in an fsync on a hung disk, keeps
// the result of the write before it for as long as it hangs.
func (s *SQLStore) CheckWrite(ctx context.Context) error {
	c := &s.writeCheck
	c.mu.Lock()
	if !c.checkedAt.IsZero() && time.Since(c.checkedAt) < writeCheckReuse {
		err := c.err
		c.mu.Unlock()
		return err
	}
	done := c.running
	if done == nil {
		done = make(chan struct{})
		c.running = done
		go s.runWriteCheck(done)
	}
	c.mu.Unlock()

	wait := time.NewTimer(writeCheckWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
	case <-ctx.Done():
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// runWriteCheck writes the write-check row, records the result and closes done.
func (s *SQLStore) runWriteCheck(done chan struct{}) {
	busy, err := s.writeCheckRow()
	if busy {
		s.log.Debug("write check proved nothing: the database is busy", "error", err)
	}

	c := &s.writeCheck
	c.mu.Lock()
	defer c.mu.Unlock()
	if !busy {
		c.err = err
	}
	c.checkedAt = time.Now()
	c.running = nil
	close(done)
}

// writeCheckRow rewrites the write-check row in one autocommit statement, which holds the
// write lock only for that statement and its commit. It returns busy when the write met
// a busy database, as CheckWrite describes.
func (s *SQLStore) writeCheckRow() (busy bool, err error) {
	const op = "check write"
	connCtx, cancelConn := context.WithTimeout(context.Background(), writeCheckTimeout)
	defer cancelConn()
	conn, err := s.write.Conn(connCtx)
	if err != nil {
		busy := errors.Is(err, context.DeadlineExceeded)
		return busy, s.wrap(op+": get the write connection", err)
	}

	// The statement gets a timeout of its own, so that a long wait for the connection
	// does not count against it.
	ctx, cancel := context.WithTimeout(context.Background(), writeCheckTimeout)
	defer cancel()
	// The value differs on every write. With an unchanged value, SQLite (3.54.1 in
	// go-sqlite3 v1.14.53) committed the statement without writing to the -wal file, so
	// the check passed while that file could not be written.
	value := strconv.FormatInt(time.Now().UnixNano(), 10)
	_, err = conn.ExecContext(ctx, s.d.rebind("INSERT INTO settings (name, value) VALUES (?, ?) "+
		"ON CONFLICT (name) DO UPDATE SET value = excluded.value"), writeCheckSetting, value)
	// The connection goes back to the pool before s.wrap, which may close it. An error
	// of Close would only repeat the statement's.
	_ = conn.Close()
	if err != nil {
		return s.d.isBusy(err), s.wrap(op, err)
	}
	return false, nil
}
