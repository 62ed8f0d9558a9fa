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

// writerConnector opens the SQLite writer connections with automatic WAL checkpoints off.
// SQLite otherwise checkpoints inside the commit that crosses 1000 WAL pages, and that
// commit then waits for the copy and two fsyncs. In scripts/bench.sh at one connection
// those commits put decrypt-datakey's p99 at about 3 ms; with the checkpoints on their
// own connection it was about 1 ms. The checkpointer runs them instead.
type writerConnector struct {
	dsn    string
	driver *sqlite3.SQLiteDriver
}

func newWriterConnector(dsn string) *writerConnector {
	return &writerConnector{dsn: dsn, driver: &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			_, err := c.Exec("PRAGMA wal_autocheckpoint=0", nil)
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

// walCheckpointer runs WAL checkpoints on a connection of its own: PASSIVE ones, which
// copy what no reader still needs, wait for no lock and never hold up a commit, and a
// RESTART one once per walRestartFrames of WAL (see checkpoint).
type walCheckpointer struct {
	db   *sql.DB
	log  *slog.Logger
	stop chan struct{}
	done sync.WaitGroup
}

// startWALCheckpointer starts checkpointing through db, a pool of one connection that the
// checkpointer owns and closes on stop.
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

// walRestartFrames is the WAL length, in frames of one 4 KiB page, from which a checkpoint
// also restarts the WAL (16 MiB).
const walRestartFrames = 4096

// checkpoint runs one PASSIVE checkpoint, then a RESTART one when the WAL has reached
// walRestartFrames. Only a checkpoint that leaves no frame to copy lets the next write
// start the WAL over, and under steady load new frames arrive while PASSIVE runs: without
// RESTART the WAL grew without bound (15 GB in a 6-minute soak). RESTART holds off the
// writer while it copies the few frames PASSIVE left and syncs, a few milliseconds once
// per 16 MiB of WAL. It waits for the writer lock up to busy_timeout, and a RESTART that
// cannot finish in time reports busy and is tried again at the next tick.
func (c *walCheckpointer) checkpoint() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*sqliteBusyTimeout)
	defer cancel()

	// The pragma returns one row: busy (1 when a RESTART gave up waiting), the frames in
	// the WAL, and the frames copied to the database so far.
	var busy, frames, copied int
	err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	if err != nil || frames < walRestartFrames {
		return err
	}

	err = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(RESTART)").Scan(&busy, &frames, &copied)
	if err == nil && busy != 0 {
		err = fmt.Errorf("WAL restart gave up waiting for the writer with %d of %d frames copied",
			copied, frames)
	}
	return err
}

// close stops the checkpointer and closes its connection.
func (c *walCheckpointer) close() error {
	close(c.stop)
	c.done.Wait()
	return c.db.Close()
}
