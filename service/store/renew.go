package store

import (
	"database/sql"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// A database connection that found its database read-only stays read-only after the
// cause is gone. SQLite opens a connection read-only for good when it cannot write the
// -wal file at that moment. A PostgreSQL session keeps the default_transaction_read_only
// of its start, and one on a standby stays there, while a new one can reach the new
// primary when the URL names several hosts. So the store closes such connections, and
// the next calls open new ones, which see the database as it is now.

// isSQLiteReadOnly recognises SQLITE_READONLY and its extended codes.
func isSQLiteReadOnly(err error) bool {
	var sqliteErr sqlite3.Error
	return errors.As(err, &sqliteErr) && sqliteErr.Code == sqlite3.ErrReadonly
}

// isPostgresReadOnly recognises read_only_sql_transaction (25006).
func isPostgresReadOnly(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006"
}

// closeIdleConns closes the idle connections of db, whose pool keeps up to maxIdle idle
// connections, and lets it keep maxIdle again afterwards. Connections in use are kept.
func closeIdleConns(db *sql.DB, maxIdle int) {
	db.SetMaxIdleConns(0)
	db.SetMaxIdleConns(maxIdle)
}

// renewInterval is the shortest time between two renewals of the write pool, so that a
// database that stays read-only does not get a new connection for each failed call.
const renewInterval = time.Second

// wrap wraps err of op as dialect.wrap does, and renews the write pool when err shows
// that the database was read-only.
func (s *SQLStore) wrap(op string, err error) error {
	if isSQLiteReadOnly(err) || isPostgresReadOnly(err) {
		s.renewWriteConns()
	}
	return s.d.wrap(op, err)
}

// renewWriteConns closes the idle connections of the write pool after a call found the
// database read-only (see above), at most once per renewInterval. It does nothing for an
// in-memory SQLite database, which lives only as long as its connection. It is safe for
// concurrent use.
func (s *SQLStore) renewWriteConns() {
	// A pool without idle connections has nothing to close, and must not use up the
	// interval: the connection in use is idle at the next failure.
	if s.writeIdleConns == 0 || s.write.Stats().Idle == 0 {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastRenewal.Load()
	if now-last < int64(renewInterval) || !s.lastRenewal.CompareAndSwap(last, now) {
		return
	}
	closeIdleConns(s.write, s.writeIdleConns)
}
