package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// aliasIndex is the name of the unique index on keys (project_id, alias) in both schemas.
const aliasIndex = "keys_project_alias_idx"

// dialect contains what differs between SQLite and PostgreSQL. Queries are written with
// "?" placeholders and rewritten by rebind.
type dialect struct {
	name string // "sqlite" or "postgres", also the migrations directory

	// numberedPlaceholders selects $1, $2, ... in place of ?.
	numberedPlaceholders bool

	// timeValue converts a time to its column value. The zero time is NULL.
	timeValue func(time.Time) any

	// rotationDue is a condition, with one placeholder for the current time, that is
	// true when a key's last rotation (or creation) plus rotation_interval days has passed.
	rotationDue string

	// migrationsTable creates the table that records applied migrations.
	migrationsTable string

	// lockMigrations is run first in the migration transaction to serialise concurrent
	// start-ups. Empty when the write transaction itself is exclusive.
	lockMigrations string

	// readTx are the options of multi-statement read transactions.
	readTx *sql.TxOptions

	// classify returns the sentinel error that err means, or nil.
	classify func(err error) error

	// isAliasViolation reports whether err is a violation of the alias index.
	isAliasViolation func(err error) bool

	// isBusy reports whether err means that another writer held a lock that the
	// statement needed, so that the statement failed without showing that writes fail.
	isBusy func(err error) bool
}

var sqliteDialect = dialect{
	name:        "sqlite",
	timeValue:   millisValue,
	rotationDue: "COALESCE(last_rotation_at, created_at) + rotation_interval * 86400000 <= ?",
	migrationsTable: "CREATE TABLE IF NOT EXISTS schema_migrations (" +
		"version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, " +
		"applied_at INTEGER NOT NULL) STRICT",
	// The SQLite writer begins every transaction with BEGIN IMMEDIATE, which already
	// excludes every other writer, in this process or another.
	lockMigrations:   "",
	readTx:           nil,
	classify:         classifySQLite,
	isAliasViolation: isSQLiteAliasViolation,
	isBusy:           isSQLiteBusy,
}

var postgresDialect = dialect{
	name:                 "postgres",
	numberedPlaceholders: true,
	timeValue:            timestampValue,
	// Seconds, not days: adding days to a timestamptz follows daylight saving time in the
	// session's time zone, and a rotation day is 24 hours on both backends.
	rotationDue: "COALESCE(last_rotation_at, created_at)" +
		" + make_interval(secs => rotation_interval * 86400) <= ?",
	migrationsTable: "CREATE TABLE IF NOT EXISTS schema_migrations (" +
		"version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, " +
		"applied_at TIMESTAMPTZ(3) NOT NULL)",
	// The advisory lock is keyed by the schema, so tests in separate schemas do not wait
	// for each other. It is released when the transaction ends.
	lockMigrations: "SELECT pg_advisory_xact_lock(" + migrationLockClass +
		", hashtext(current_schema()))",
	// Repeatable read gives the page and the count of ListKeys one snapshot.
	readTx:           &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
	classify:         classifyPostgres,
	isAliasViolation: isPostgresAliasViolation,
	isBusy:           isPostgresBusy,
}

// migrationLockClass is the first key of the migration advisory lock: the bytes of "kms"
// read as a big-endian integer, an arbitrary constant that keeps it apart from other
// users of advisory locks.
const migrationLockClass = "7040371"

// rebind rewrites the ? placeholders of query for the dialect. Queries in this package
// contain no ? inside string literals.
func (d dialect) rebind(query string) string {
	if !d.numberedPlaceholders {
		return query
	}

	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for _, r := range query {
		if r != '?' {
			b.WriteRune(r)
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}

// wrap wraps err with op and, unless err already carries a sentinel, with the sentinel
// that the database error means.
func (d dialect) wrap(op string, err error) error {
	if hasSentinel(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if sentinel := d.classify(err); sentinel != nil {
		return fmt.Errorf("%s: %w: %w", op, sentinel, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func hasSentinel(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrAliasExists) ||
		errors.Is(err, ErrConflict) || errors.Is(err, ErrUnavailable)
}

// storedTime truncates t to the precision the store keeps: UTC milliseconds.
func storedTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Millisecond)
}

func millisValue(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func timestampValue(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return storedTime(t)
}

// timeColumn scans a time column of either dialect: INTEGER milliseconds (SQLite),
// timestamptz (PostgreSQL) or NULL, which becomes the zero time.
type timeColumn struct{ t *time.Time }

func (c timeColumn) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*c.t = time.Time{}
	case int64:
		*c.t = time.UnixMilli(v).UTC()
	case time.Time:
		*c.t = v.UTC()
	default:
		return fmt.Errorf("scan time column: unsupported type %T", src)
	}
	return nil
}

func classifySQLite(err error) error {
	var sqliteErr sqlite3.Error
	if !errors.As(err, &sqliteErr) {
		return nil
	}

	switch sqliteErr.Code {
	case sqlite3.ErrConstraint:
		switch sqliteErr.ExtendedCode {
		case sqlite3.ErrConstraintUnique, sqlite3.ErrConstraintPrimaryKey:
			return ErrConflict
		}
	case sqlite3.ErrReadonly, sqlite3.ErrCantOpen, sqlite3.ErrPerm, sqlite3.ErrIoErr,
		sqlite3.ErrFull, sqlite3.ErrBusy, sqlite3.ErrLocked:
		return ErrUnavailable
	}
	return nil
}

func isSQLiteBusy(err error) bool {
	var sqliteErr sqlite3.Error
	if !errors.As(err, &sqliteErr) {
		return false
	}
	return sqliteErr.Code == sqlite3.ErrBusy || sqliteErr.Code == sqlite3.ErrLocked
}

// isSQLiteAliasViolation recognises the message SQLite gives for the alias index,
// "UNIQUE constraint failed: keys.project_id, keys.alias", because SQLite does not
// report the index name.
func isSQLiteAliasViolation(err error) bool {
	var sqliteErr sqlite3.Error
	if !errors.As(err, &sqliteErr) || sqliteErr.ExtendedCode != sqlite3.ErrConstraintUnique {
		return false
	}
	return strings.Contains(sqliteErr.Error(), "keys.project_id, keys.alias")
}

func classifyPostgres(err error) error {
	// A connection that could not be opened leaves the store unusable, whatever the
	// reason: refused or timed out, or rejected by the server with an SQLSTATE, as for a
	// database that does not accept connections (55000), a changed password (28P01) or
	// a missing database (3D000).
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return ErrUnavailable
	}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyPostgresCode(pgErr.Code)
	}

	// Errors without an SQLSTATE come from the connection: reset or timed out before the
	// server's response, or waiting for it past the caller's deadline.
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		pgconn.SafeToRetry(err):
		return ErrUnavailable
	}
	return nil
}

// LoginRejected reports whether err holds a PostgreSQL server's refusal of the
// connection's login: a wrong password or an unknown role (SQLSTATE class 28), or a
// database that does not exist (3D000). Such an error matches ErrUnavailable, because a
// password changed under a running replica is fixed outside kmsd, but at start it is
// a setting to correct.
func LoginRejected(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000"
}

// classifyPostgresCode maps an SQLSTATE (PostgreSQL manual, appendix A) to a sentinel.
func classifyPostgresCode(code string) error {
	switch {
	case code == "23505": // unique_violation
		return ErrConflict
	case strings.HasPrefix(code, "08"): // connection_exception
		return ErrUnavailable
	case code == "25006": // read_only_sql_transaction: a standby, or an old primary after failover
		return ErrUnavailable
	case strings.HasPrefix(code, "53"): // insufficient_resources: disk full, too many connections
		return ErrUnavailable
	case strings.HasPrefix(code, "57P"): // admin_shutdown, crash_shutdown, cannot_connect_now
		return ErrUnavailable
	case code == "40001", code == "40P01": // serialization_failure, deadlock_detected
		return ErrUnavailable
	}
	return nil
}

func isPostgresAliasViolation(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "23505" && pgErr.ConstraintName == aliasIndex
}

// isPostgresBusy recognises lock_not_available (55P03), serialization_failure (40001) and
// deadlock_detected (40P01).
func isPostgresBusy(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "55P03", "40001", "40P01":
		return true
	}
	return false
}
