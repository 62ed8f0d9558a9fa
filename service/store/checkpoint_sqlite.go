package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"
)

// walCheckpointInterval is how often the checkpointer copies the WAL into the database
// file. At 20,000 audit records per second the WAL grows by about 1.5 MB in that time.
const walCheckpointInterval = 250 * time.Millisecond

// writerConnector opens the SQLite writer connections with the automatic WAL checkpoint
// moved from 1000 pages to walAutoCheckpointFrames. SQLite runs that checkpoint inside
// the commit that crosses the limit, and the commit waits for the copy and two fsyncs. In
// scripts/bench.sh at one connection those commits put decrypt-datakey's p99 at about
// 3 ms. The checkpointer now copies most frames beforehand, off the commit path, so the
// automatic checkpoint is rare and has little left to copy.
//
// It stays on because only a checkpoint that finds every frame copied lets the next write
// start the WAL over. Under steady writes one on another connection never does, and with
// the automatic checkpoint off the WAL grew without bound (15 GB in a 6-minute soak).
type writerConnector struct {
	dsn    string
	driver *sqlite3.SQLiteDriver
}

func newWriterConnector(dsn string) *writerConnector {
	return &writerConnector{dsn: dsn, driver: &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			_, err := c.Exec(fmt.Sprintf("PRAGMA wal_autocheckpoint=%d", walAutoCheckpointFrames), nil)
			return err
		},
	}}
}

// Connect implements driver.Connector.
func (w *writerConnector) Connect(context.Context) (driver.Conn, error) {
	return w.driver.Open(w.dsn)
}

// Driver implements driver.Connector.
func (w *writerConnector) Driver() driver.Driver { return w.driver }

// walCheckpointer runs PASSIVE WAL checkpoints on a connection of its own, so that they
// never hold up a commit. PASSIVE copies what no reader still needs and waits for no
// lock. A later run, or the automatic checkpoint, copies the frames it leaves.
type walCheckpointer struct {
	db       *sql.DB
	log      *slog.Logger
	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
}

// startWALCheckpointer starts checkpointing through db, a pool of one connection that the
// checkpointer owns and closes on stop. When a checkpoint finds the database read-only,
// the checkpointer closes its connection, so that the next checkpoint opens a new one
// (see renew.go).
func startWALCheckpointer(db *sql.DB, log *slog.Logger) *walCheckpointer {
	c := &walCheckpointer{db: db, log: log, stop: make(chan struct{})}
	c.done.Go(c.run)
	return c
}

func (c *walCheckpointer) run() {
	ticker := time.NewTicker(walCheckpointInterval)
	defer ticker.Stop()

	failing := false
	for {
		select {
		case <-c.stop:
			return
		case <-ticker.C:
		}

		err := c.checkpoint()
		if isSQLiteReadOnly(err) {
			closeIdleConns(c.db, 1)
		}
		switch {
		case err != nil && !failing:
			// Logged once per failure streak: the next tick tries again.
			c.log.Warn("WAL checkpoint failed; the WAL grows until one succeeds", "error", err)
			failing = true
		case err == nil && failing:
			c.log.Info("WAL checkpoint succeeded again")
			failing = false
		}
	}
}

// walAutoCheckpointFrames is the WAL length, in frames of one 4 KiB page, at which the
// writer's commit checkpoints the WAL itself (16 MiB).
const walAutoCheckpointFrames = 4096

// checkpoint runs one PASSIVE checkpoint. The pragma returns one row: busy (never set by
// PASSIVE), the frames in the WAL, and the frames copied to the database so far.
func (c *walCheckpointer) checkpoint() error {
	ctx, cancel := context.WithTimeout(context.Background(), sqliteBusyTimeout)
	defer cancel()

	var busy, frames, copied int
	return c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
}

// close stops the checkpointer and closes its connection. Calls after the first return
// nil.
func (c *walCheckpointer) close() error {
	c.stopOnce.Do(func() { close(c.stop) })
	c.done.Wait()
	return c.db.Close()
}
