package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" database/sql driver
)

// SQLite settings.
const (
	// sqliteBusyTimeout is how long a write waits for another process (kmsctl, a second
	// kmsd) to release the database's write lock before it fails with ErrUnavailable.
	sqliteBusyTimeout = 5 * time.Second

	// sqliteMinReaders is the minimum size of the read pool, which otherwise has one
	// connection per CPU. In WAL mode readers block neither each other nor the writer.
	sqliteMinReaders = 4
)

// PostgreSQL pool settings.
const (
	// postgresMaxConns bounds the connections of one process unless the URL's max_conns
	// parameter sets another bound. PostgreSQL's default max_connections is 100, which
	// leaves room for four replicas at the default and maintenance.
	postgresMaxConns = 20

	// postgresConnectTimeout bounds each new connection, from the dial to the end of the
	// server's start-up messages, unless the URL's connect_timeout sets another bound. A
	// server that accepts TCP connections and never responds would otherwise hold a
	// request, or kmsd's start, for as long as it stays so.
	postgresConnectTimeout = 10 * time.Second

	// postgresConnMaxLifetime retires connections, so that after a failover or DNS change
	// no connection stays on the old server for longer than this.
	postgresConnMaxLifetime = 30 * time.Minute

	// postgresConnMaxIdleTime closes connections unused for this long.
	postgresConnMaxIdleTime = 5 * time.Minute
)

// SQLStore is the Store on SQLite or PostgreSQL. It is safe for concurrent use.
//
// On SQLite, every write goes through one connection whose transactions begin with BEGIN
// IMMEDIATE, so concurrent writers in one process queue in the connection pool and never
// fail with "database is locked". Reads use a separate pool of query-only connections.
// Audit batches of chains kept in the tables use the writer connection too. A second
// writer connection would compete with it for the database lock, and SQLite's lock is
// not fair, so a busy audit writer starved metadata writes past busy_timeout. New chains
// on a SQLite file go to chain files (see auditFiles) and take no database lock.
type SQLStore struct {
	write *sql.DB // every write; on SQLite a single connection
	read  *sql.DB // reads; the same pool as write on PostgreSQL and in-memory SQLite
	d     dialect
	log   *slog.Logger

	// auditFsync makes SQLite audit commits fsync like metadata writes. See
	// SetAuditFsync.
	auditFsync atomic.Bool

	// auditStmts are the statements of the relaxed SQLite audit commit, prepared on the
	// writer connection on first use (see appendAuditSQLite).
	auditStmtsMu sync.Mutex
	auditStmts   *sqliteAuditStmts

	// checkpointDB is the SQLite connection of checkpointer, nil on PostgreSQL and for an
	// in-memory database.
	checkpointDB *sql.DB
	checkpointer *walCheckpointer

	// files keeps the audit chains of a SQLite file in auditDir, beside it (see
	// auditFiles). It is nil on PostgreSQL and for an in-memory database.
	auditDir string
	readOnly bool // opened with mode=ro: no chain file is created or written
	files    *auditFiles

	// ownLock is the lock that Open took on a SQLite file opened for writing, which
	// Close releases. It is nil when the store takes no lock (see takesLock) and when
	// the caller of OpenLocked holds it.
	ownLock *FileLock

	writeCheck writeCheck
	// writeIdleConns is the idle connection limit of the write pool, restored after
	// renewWriteConns. It is 0 for an in-memory SQLite database, whose connection is
	// never closed.
	writeIdleConns int
	// lastRenewal is when renewWriteConns last closed the write pool's idle
	// connections, in Unix nanoseconds.
	lastRenewal atomic.Int64

	// keyLockWaiters bounds the WaitKeyLock calls that hold a connection at once on
	// PostgreSQL to a quarter of the pool. Each holds one while its function needs
	// others, so a holder for every connection would leave none for the functions.
	keyLockWaiters chan struct{}
}

// SetAuditFsync chooses how SQLite stores flush audit batches. With false (the default),
// a batch written to a chain file (or committed with synchronous=NORMAL in WAL mode, for
// a chain kept in the audit_records table) survives a crash or kill of the process, and
// only an operating system crash or power loss can lose the batches written since the
// last flush, which runs every 250 ms. That keeps the per-request audit write at a few
// microseconds instead of one fsync (about 0.6 ms on the development machines' disks).
// With true, every batch is flushed before AppendAudit returns, as metadata writes
// always are. PostgreSQL ignores the setting: its server's synchronous_commit decides.
func (s *SQLStore) SetAuditFsync(fsync bool) { s.auditFsync.Store(fsync) }

var _ Store = (*SQLStore)(nil)

// Open opens the store at databaseURL and applies pending schema migrations.
//
// A URL that starts with "postgres://" or "postgresql://" selects PostgreSQL; its query
// parameters go to pgx, so search_path=... or target_session_attrs=read-write work there.
// Anything else is the path of a SQLite file, optionally prefixed with "sqlite:",
// "sqlite://" or "file:", and optionally followed by "?" and SQLite URI parameters (for
// example mode=ro). The path is taken literally, not percent-decoded. The file is
// created with mode 0600 when missing, unless mode=ro or mode=rw forbids it, and an
// existing file that group or others may read or write is logged as a warning. The path
// ":memory:" opens a private in-memory database on a single connection. A libpq
// keyword/value connection string ("host=db password=...") is rejected rather than taken
// for a file name, and so is a URL of another scheme (IsUnsupportedURL) and a string with
// user:password@ (HasUserinfo) that is not a PostgreSQL URL.
//
// A SQLite file opened for writing, which is every SQLite store except ":memory:",
// mode=memory and mode=ro, is locked against other writers until Close: Open takes an
// exclusive flock on the lock file beside it, named after the database file with
// "-kmsd.lock" appended (created with mode 0600), and writes this process's PID into it.
// When another process, or another SQLStore of this process, holds that lock, Open fails
// with an error that wraps ErrStoreInUse (a *StoreInUseError). PostgreSQL stores take no
// lock, because replicas share them.
//
// A nil log discards log records. Open fails with ErrUnavailable when the database cannot
// be reached.
func Open(ctx context.Context, databaseURL string, log *slog.Logger) (*SQLStore, error) {
	return OpenLocked(ctx, databaseURL, nil, log)
}

// OpenLocked is Open for a caller that took the store's lock with LockSQLite: the store
// uses lock instead of taking its own, and the caller releases lock after Close. With a
// nil lock it is Open. It fails when lock is not the lock of databaseURL or is released.
// Stores opened with one lock are not locked against each other.
func OpenLocked(
	ctx context.Context, databaseURL string, lock *FileLock, log *slog.Logger,
) (*SQLStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if err := checkDatabaseURL(databaseURL); err != nil {
		return nil, err
	}

	var s *SQLStore
	var err error
	if IsPostgresURL(databaseURL) {
		s, err = openPostgres(databaseURL)
	} else {
		s, err = openSQLite(databaseURL, lock, log)
	}
	if err != nil {
		return nil, err
	}
	s.log = log
	if s.checkpointDB != nil {
		s.checkpointer = startWALCheckpointer(s.checkpointDB, log)
	}
	if s.auditDir != "" {
		files, err := openAuditFiles(s.auditDir, s.readOnly, log)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open %s store: %w", s.d.name, err)
		}
		s.files = files
	}

	if err := s.pingAtStart(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open %s store: %w", s.d.name, err)
	}

	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open %s store: %w", s.d.name, err)
	}

	log.Info("store opened", "backend", s.d.name)
	return s, nil
}

// checkDatabaseURL returns an error for a databaseURL that Open rejects before it picks a
// backend: a string that looks like a URL or connection string other than a PostgreSQL
// URL, which Open would otherwise take for the path of a SQLite file.
func checkDatabaseURL(databaseURL string) error {
	if IsMistypedPostgresURL(databaseURL) {
		// The string is left out of the error because it can contain a password.
		return errors.New("open store: the database URL starts like a PostgreSQL URL " +
			"but not with postgres:// or postgresql://")
	}
	if IsKeywordValueString(databaseURL) {
		// The string is left out of the error because it can contain a password.
		return errors.New("open store: the database URL is a keyword/value connection " +
			"string, which is not supported: write it as a postgres:// URL, or start a " +
			"SQLite path that contains \"=\" with ./ or sqlite:")
	}
	if HasUnencodedAt(databaseURL) {
		// The string is left out of the error because it contains a password.
		return errors.New("open store: the PostgreSQL URL has more than one \"@\" " +
			"before its path: write an \"@\" in the user name or password as %40")
	}
	if IsUnsupportedURL(databaseURL) {
		// The string is left out of the error because it can contain a password.
		return errors.New("open store: the database URL has an unsupported scheme, " +
			"plainly or percent-encoded: use postgres:// or postgresql:// for PostgreSQL, " +
			"and a file path for SQLite, starting it with ./ if it begins like a URL")
	}
	if HasUserinfo(databaseURL) {
		// The string is left out of the error because it contains a password.
		return errors.New("open store: the database URL contains user:password@ " +
			"but is not a postgres:// or postgresql:// URL: correct its scheme, or " +
			"rename a SQLite file whose path has \":\" before \"@\"")
	}
	return nil
}

// keywordValueString matches the start of a libpq keyword/value connection string.
var keywordValueString = regexp.MustCompile(`^\s*[A-Za-z_][A-Za-z0-9_]*\s*=`)

// IsKeywordValueString reports whether databaseURL is a libpq keyword/value connection
// string, such as "host=db password=secret", which Open rejects. A SQLite path whose
// first element contains "=" looks the same, and is accepted when it starts with "./" or
// "sqlite:".
func IsKeywordValueString(databaseURL string) bool {
	return keywordValueString.MatchString(databaseURL)
}

// IsPostgresURL reports whether databaseURL names a PostgreSQL database, which Open
// serves with pgx, rather than a SQLite file.
func IsPostgresURL(databaseURL string) bool {
	return strings.HasPrefix(databaseURL, "postgres://") ||
		strings.HasPrefix(databaseURL, "postgresql://")
}

// HasUnencodedAt reports whether databaseURL is a PostgreSQL URL with more than one "@"
// before its query, which is a password or user name with an unencoded "@". pgx then takes
// the part of the password after the first "@" for the host name, and its errors, such as
// a failed host lookup, show that part. Open rejects such a URL.
func HasUnencodedAt(databaseURL string) bool {
	if !IsPostgresURL(databaseURL) {
		return false
	}
	beforeQuery, _, _ := strings.Cut(databaseURL, "?")
	return strings.Count(beforeQuery, "@") > 1
}

// IsMistypedPostgresURL reports whether databaseURL starts like a PostgreSQL URL, with the
// scheme postgres or postgresql in any case, but is not one that IsPostgresURL accepts,
// as "postgres:/user:password@db/kms" is not. Open rejects such a string rather than take
// it for the path of a SQLite file, which would put its password in a file name.
func IsMistypedPostgresURL(databaseURL string) bool {
	scheme, _, ok := strings.Cut(databaseURL, ":")
	if !ok || IsPostgresURL(databaseURL) {
		return false
	}
	return strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")
}

// sqlitePrefixes are the prefixes that parseSQLiteURL removes from a SQLite path, longest
// first.
var sqlitePrefixes = []string{"sqlite://", "sqlite:", "file:"}

// urlScheme matches a URL scheme of two or more characters followed by ":/", possibly
// after other schemes, as in "mysql://", "pg:/" and "jdbc:postgresql://". A single letter
// is left out because it can be a Windows drive letter, as in "C:/kms/kms.db".
var urlScheme = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9+.-]+:)+/`)

// userinfo matches a "user:password@" part at the start of a string or after a "/". The
// password can contain "/", "?" and "#", which URLs do not allow unencoded but mistyped
// ones have.
var userinfo = regexp.MustCompile(`(?:^|/)[^/?#@:]*:[^@]*@`)

// percentEscape matches one valid percent-encoded byte.
var percentEscape = regexp.MustCompile(`%[0-9A-Fa-f]{2}`)

// IsUnsupportedURL reports whether databaseURL looks like a URL that Open does not
// serve. Such a URL has a scheme followed by ":/" other than postgres://, postgresql://,
// sqlite: or file:, as "mysql://db/kms", "pg:/kms@db/kms" and "sqlite:pg://db/kms" do.
// Percent-encoded forms such as "postgres%3A%2F%2Fdb/kms" count too. Open rejects such a
// string rather than take it for the path of a SQLite file, which would put a password in
// it into file names, errors and logs. A SQLite path that starts like this is accepted
// after "./".
func IsUnsupportedURL(databaseURL string) bool {
	if IsPostgresURL(databaseURL) {
		return false
	}
	for _, form := range decodedForms(trimSQLitePrefix(databaseURL)) {
		if urlScheme.MatchString(form) {
			return true
		}
	}
	return false
}

// HasUserinfo reports whether databaseURL contains a "user:password@" part, plainly or
// percent-encoded, without being a PostgreSQL URL (IsPostgresURL), the only form whose
// credentials Open uses. Open rejects such a string rather than take it for the path of
// a SQLite file, which would put the password into file names, errors and logs. It also
// reports a SQLite path with ":" before a later "@", such as "./backup:1@db.db", which
// Open therefore rejects.
func HasUserinfo(databaseURL string) bool {
	if IsPostgresURL(databaseURL) {
		return false
	}
	for _, form := range decodedForms(trimSQLitePrefix(databaseURL)) {
		if userinfo.MatchString(form) {
			return true
		}
	}
	return false
}

// trimSQLitePrefix removes the first of sqlitePrefixes that databaseURL starts with.
func trimSQLitePrefix(databaseURL string) string {
	for _, prefix := range sqlitePrefixes {
		if rest, ok := strings.CutPrefix(databaseURL, prefix); ok {
			return rest
		}
	}
	return databaseURL
}

// decodedForms returns s followed by the result of each round of percent-decoding it,
// until no valid escape is left, so that a URL encoded several times is seen as well.
// Invalid escapes, such as the "%" of "50%", stay as written. Every round shortens the
// string, so the loop ends.
func decodedForms(s string) []string {
	forms := []string{s}
	for percentEscape.MatchString(s) {
		s = percentEscape.ReplaceAllStringFunc(s, func(escape string) string {
			b, _ := strconv.ParseUint(escape[1:], 16, 8)
			return string([]byte{byte(b)})
		})
		forms = append(forms, s)
	}
	return forms
}

// CheckSQLiteURL parses the SQLite path or URL databaseURL as Open does, without
// opening it, and returns an error that names what is invalid, such as a host other
// than localhost in a file: URL or a parameter set twice.
func CheckSQLiteURL(databaseURL string) error {
	_, _, err := parseSQLiteURL(databaseURL)
	return err
}

// CheckPostgresURL parses the postgres:// or postgresql:// URL databaseURL as Open does,
// without connecting, and returns an error that names the invalid part, such as the
// port or a parameter's value. The error quotes neither the URL nor any secret in it.
func CheckPostgresURL(databaseURL string) error {
	_, _, err := parsePostgresURL(databaseURL)
	return err
}

// parsePostgresURL returns pgx's configuration of databaseURL and the max_conns that it
// sets (cutMaxConns).
func parsePostgresURL(databaseURL string) (*pgx.ConnConfig, int, error) {
	stripped, maxConns, err := cutMaxConns(databaseURL)
	if err != nil {
		return nil, 0, err
	}

	cfg, err := pgx.ParseConfig(stripped)
	if err != nil {
		return nil, 0, fmt.Errorf("invalid database URL: %s", parseErrorReason(err, stripped))
	}
	return cfg, maxConns, nil
}

// parseErrorReason returns the reason of pgx's parse error err without the URL that
// pgx quotes in it with only the password masked, and with the value of each secret
// parameter of databaseURL (IsSecretParam) replaced.
func parseErrorReason(err error, databaseURL string) string {
	var parseErr *pgconn.ParseConfigError
	if !errors.As(err, &parseErr) {
		return "check its syntax"
	}
	unquoted := *parseErr
	unquoted.ConnString = ""
	reason := strings.TrimPrefix(unquoted.Error(), "cannot parse ``: ")
	if strings.HasPrefix(reason, "failed to parse as URL") {
		// The cause is net/url's error, which quotes the whole URL.
		return "failed to parse as URL: check its syntax"
	}

	u, urlErr := url.Parse(databaseURL)
	if urlErr != nil {
		return "check its syntax"
	}
	var secrets []string
	if password, ok := u.User.Password(); ok && password != "" {
		secrets = append(secrets, password)
	}
	for name, values := range u.Query() {
		if IsSecretParam(name) {
			secrets = append(secrets, values...)
		}
	}
	sortLongestFirst(secrets)
	return redactValues(reason, secrets)
}

func openPostgres(databaseURL string) (*SQLStore, error) {
	// pgx's parse error quotes the URL with only the password masked, so a secret in
	// another parameter, such as options, would reach the log: parsePostgresURL leaves the
	// URL out. Connection errors go through redactingConnector.
	cfg, maxConns, err := parsePostgresURL(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = postgresConnectTimeout
	}
	db := sql.OpenDB(redactingConnector{
		Connector: stdlib.GetConnector(*cfg),
		secrets:   secretValues(cfg),
	})

	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxLifetime(postgresConnMaxLifetime)
	db.SetConnMaxIdleTime(postgresConnMaxIdleTime)

	return &SQLStore{write: db, read: db, d: postgresDialect, writeIdleConns: maxConns,
		keyLockWaiters: make(chan struct{}, max(1, maxConns/4))}, nil
}

// cutMaxConns removes this store's own max_conns parameter (2 to 1000 connections per
// process) from a postgres:// URL, which pgx would otherwise send to the server as a
// run-time parameter, and returns it, or postgresMaxConns when the URL has none. One
// connection is too few: a key's job lock holds one while the job needs another.
func cutMaxConns(databaseURL string) (string, int, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "", 0, urlParseError(err)
	}
	q := u.Query()
	if !q.Has("max_conns") {
		return databaseURL, postgresMaxConns, nil
	}
	if len(q["max_conns"]) > 1 {
		return "", 0, errors.New("max_conns is given more than once in the database URL")
	}

	n, err := strconv.Atoi(q.Get("max_conns"))
	if err != nil || n < 2 || n > 1000 {
		return "", 0, fmt.Errorf("max_conns %q in the database URL: expected 2 to 1000",
			q.Get("max_conns"))
	}

	// The other parameters keep their encoding: url.Values.Encode would write a space
	// that the URL encodes as %20 as "+", which pgx does not decode, so an options value
	// with a space would reach the server with "+" in it.
	prefix, query, _ := strings.Cut(databaseURL, "?")
	query, fragment, hasFragment := strings.Cut(query, "#")
	var otherParams []string
	for _, param := range strings.Split(query, "&") {
		name, _, _ := strings.Cut(param, "=")
		if decoded, err := url.QueryUnescape(name); err == nil && decoded == "max_conns" {
			continue
		}
		otherParams = append(otherParams, param)
	}
	stripped := prefix
	if len(otherParams) > 0 {
		stripped += "?" + strings.Join(otherParams, "&")
	}
	if hasFragment {
		stripped += "#" + fragment
	}
	return stripped, n, nil
}

// urlParseError returns the error for a database URL that net/url cannot parse. It names
// an invalid port, and leaves out the rest of net/url's error, which quotes the URL with
// its password.
func urlParseError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) && strings.HasPrefix(urlErr.Err.Error(), "invalid port") {
		return errors.New("invalid database URL: invalid port after the host name")
	}
	return errors.New("invalid database URL: check its syntax")
}

// openSQLite opens the SQLite store of databaseURL. A store that takesLock uses
// callerLock when it is not nil, and otherwise takes a lock of its own.
func openSQLite(databaseURL string, callerLock *FileLock, log *slog.Logger) (*SQLStore, error) {
	path, params, err := parseSQLiteURL(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}

	inMemory := path == ":memory:" || params.Get("mode") == "memory"
	if !inMemory {
		if err := prepareSQLiteFile(path, params.Get("mode"), log); err != nil {
			return nil, fmt.Errorf("open sqlite store: %w", err)
		}
	}

	var ownLock *FileLock
	if takesLock(path, params) {
		ownLock, err = useOrTakeLock(path, callerLock)
		if err != nil {
			return nil, fmt.Errorf("open sqlite store: %w", err)
		}
	}
	s, err := openSQLiteFile(path, params, inMemory)
	if err != nil {
		// A failed ownLock.Release leaves nothing to undo: the descriptor is gone.
		_ = ownLock.Release()
		return nil, err
	}
	s.ownLock = ownLock
	return s, nil
}

// useOrTakeLock returns nil when callerLock is the lock of the database file at path, and
// otherwise takes the lock and returns it. It fails when callerLock is another file's.
func useOrTakeLock(path string, callerLock *FileLock) (*FileLock, error) {
	if callerLock == nil {
		return lockSQLiteFile(path)
	}
	_, lockFile, err := lockPath(path)
	if err != nil {
		return nil, err
	}
	if callerLock.Path() != lockFile {
		return nil, fmt.Errorf("the lock passed to OpenLocked is %s, not the lock file %s "+
			"of this database", callerLock.Path(), lockFile)
	}
	if !callerLock.held() {
		return nil, fmt.Errorf("the lock %s passed to OpenLocked is released", lockFile)
	}
	return nil, nil
}

// openSQLiteFile opens the connection pools of the SQLite database at path.
func openSQLiteFile(path string, params url.Values, inMemory bool) (*SQLStore, error) {
	var err error

	writeParams := cloneValues(params)
	if !inMemory {
		// WAL lets readers run while a write is in progress.
		writeParams.Set("_journal_mode", "WAL")
	}
	// FULL syncs the WAL on every commit, so an acknowledged write survives power loss.
	writeParams.Set("_synchronous", "FULL")
	writeParams.Set("_foreign_keys", "on")
	writeParams.Set("_busy_timeout", strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10))
	// BEGIN IMMEDIATE takes the write lock at the start of a transaction, so that a
	// transaction never fails half-way when it upgrades from a read to a write lock.
	writeParams.Set("_txlock", "immediate")

	var write *sql.DB
	if inMemory {
		write, err = sql.Open("sqlite3", sqliteDSN(path, writeParams))
		if err != nil {
			return nil, fmt.Errorf("open sqlite store: %w", err)
		}
	} else {
		// WAL checkpoints run on a connection of their own (see walCheckpointer).
		write = sql.OpenDB(newWriterConnector(sqliteDSN(path, writeParams)))
	}
	write.SetMaxOpenConns(1)
	// An in-memory database lives as long as its connection, so it must never be closed.
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)

	if inMemory {
		return &SQLStore{write: write, read: write, d: sqliteDialect}, nil
	}

	readParams := cloneValues(params)
	readParams.Set("_foreign_keys", "on")
	readParams.Set("_busy_timeout", strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10))
	// query_only makes a write through a read connection fail instead of competing
	// with the writer for the lock.
	readParams.Set("_query_only", "1")
	readParams.Set("_txlock", "deferred")

	read, err := sql.Open("sqlite3", sqliteDSN(path, readParams))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	readers := max(sqliteMinReaders, runtime.NumCPU())
	read.SetMaxOpenConns(readers)
	read.SetMaxIdleConns(readers)

	checkpointParams := cloneValues(params)
	checkpointParams.Set("_busy_timeout", strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10))
	// FULL makes each checkpoint fsync the WAL before it copies and the database after.
	checkpointParams.Set("_synchronous", "FULL")
	checkpointDB, err := sql.Open("sqlite3", sqliteDSN(path, checkpointParams))
	if err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	checkpointDB.SetMaxOpenConns(1)

	return &SQLStore{write: write, read: read, d: sqliteDialect, writeIdleConns: 1,
		checkpointDB: checkpointDB, auditDir: path + "-audit",
		readOnly: params.Get("mode") == "ro"}, nil
}

// sqliteFileMode is the mode of a new SQLite database file. SQLite creates the -wal and
// -shm files of a database with the mode of the database file.
const sqliteFileMode = 0o600

// prepareSQLiteFile creates the database file at path with sqliteFileMode, so that
// SQLite, which would create it with mode 0644 less the umask, finds it in place. With
// mode (the URL's mode parameter) ro or rw SQLite never creates the file, and neither
// does prepareSQLiteFile. An existing file keeps its mode, and a warning is logged when
// group or others may read or write it.
func prepareSQLiteFile(path, mode string, log *slog.Logger) error {
	if mode != "ro" && mode != "rw" {
		// The chain files' directory beside the file is created with mode 0700 too, so a
		// missing parent directory is created as it would be for them.
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("create the database file's directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, sqliteFileMode)
		if err == nil {
			return f.Close()
		}
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create the database file: %w", err)
		}
	}

	info, err := os.Stat(path)
	if err != nil {
		return nil // SQLite reports a missing or unreadable file when it opens it
	}
	if perm := info.Mode().Perm(); perm&0o066 != 0 {
		log.Warn("the SQLite database file is readable or writable by group or others, "+
			"so run chmod 600 on it and on its -wal and -shm files",
			"path", path, "mode", fmt.Sprintf("%#o", perm))
	}
	return nil
}

// parseSQLiteURL splits a SQLite database URL into the file path and its parameters.
// Its errors leave the URL out, because a mistyped postgres:// URL becomes a SQLite URL
// that can contain a password.
func parseSQLiteURL(databaseURL string) (string, url.Values, error) {
	path, query, _ := strings.Cut(trimSQLitePrefix(databaseURL), "?")
	if after, ok := strings.CutPrefix(path, "//"); ok {
		// SQLite reads file://HOST/PATH as /PATH when HOST is empty or localhost, and
		// rejects other hosts. The lock file must sit beside the file that SQLite opens.
		authority, rest, _ := strings.Cut(after, "/")
		if authority != "" && !strings.EqualFold(authority, "localhost") {
			return "", nil, fmt.Errorf("the SQLite database URL names the host %q: only "+
				"localhost, or no host, is supported", authority)
		}
		if rest == "" {
			return "", nil, errors.New("database URL has no file path")
		}
		path = "/" + rest
	}
	if path == "" {
		return "", nil, errors.New("database URL has no file path")
	}

	params, err := url.ParseQuery(query)
	if err != nil {
		return "", nil, fmt.Errorf("parse the parameters of the SQLite database URL: %w", err)
	}
	for name, values := range params {
		// SQLite takes the last of a repeated parameter and kmsd the first, so
		// mode=memory&mode=rwc would open a file without the lock of a file store.
		if len(values) > 1 {
			return "", nil, fmt.Errorf("the SQLite database URL sets %s more than once", name)
		}
	}
	if path != ":memory:" && params.Get("mode") != "memory" {
		path = resolveSQLitePath(path)
	}
	return path, params, nil
}

// resolveSQLitePath returns path as an absolute path without symbolic links, "." or
// "..", resolved as the kernel resolves it when SQLite opens the file: a ".." after a
// symbolic link leaves the link's target, where filepath.Clean would drop the link. The
// lock file and the chain directory, named after the database file, then sit beside the
// file that SQLite opens. A path whose directory does not exist yet is only made absolute.
func resolveSQLitePath(path string) string {
	if !filepath.IsAbs(path) {
		if wd, err := os.Getwd(); err == nil {
			path = wd + string(filepath.Separator) + path
		}
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	// The file itself does not exist yet.
	if i := strings.LastIndexByte(path, filepath.Separator); i > 0 {
		if dir, err := filepath.EvalSymlinks(path[:i]); err == nil {
			return filepath.Join(dir, path[i+1:])
		}
	}
	return filepath.Clean(path)
}

// sqliteDSN builds the file: URI that go-sqlite3 passes to sqlite3_open_v2. The
// characters that a URI path cannot contain literally are percent-encoded.
func sqliteDSN(path string, params url.Values) string {
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + escaped + "?" + params.Encode()
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v)+6)
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// Ping checks that the database responds on the write and the read pools.
func (s *SQLStore) Ping(ctx context.Context) error {
	if err := s.write.PingContext(ctx); err != nil {
		return s.wrap("ping database", err)
	}
	if s.read != s.write {
		if err := s.read.PingContext(ctx); err != nil {
			return s.wrap("ping database", err)
		}
	}
	return nil
}

// pingAtStart pings the database. On SQLite it tries again for up to sqliteBusyTimeout
// while the database is locked. When several processes open a new file at once, setting
// WAL mode on a connection can fail at once with SQLITE_BUSY instead of waiting for the
// busy timeout (seen in TestMigrationsConcurrentOpen, about once in 30 runs).
func (s *SQLStore) pingAtStart(ctx context.Context) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for {
		err := s.Ping(ctx)
		if !isSQLiteBusy(err) || s.d.name != "sqlite" || time.Now().After(deadline) {
			return err
		}

		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close flushes and closes the chain files, then closes both connection pools. On
// SQLite the last connection to close checkpoints the WAL into the database file, and
// then the lock that Open took is released.
func (s *SQLStore) Close() error {
	var readErr, auditErr, filesErr error
	if s.files != nil {
		filesErr = s.files.close()
	}
	if s.checkpointer != nil {
		auditErr = s.checkpointer.close()
	} else if s.checkpointDB != nil {
		auditErr = s.checkpointDB.Close()
	}
	if s.read != s.write {
		readErr = s.read.Close()
	}
	s.auditStmtsMu.Lock()
	if s.auditStmts != nil {
		s.auditStmts.close()
		s.auditStmts = nil
	}
	s.auditStmtsMu.Unlock()
	writeErr := s.write.Close()

	// The lock goes last, so that the next writer starts after this one has finished.
	return errors.Join(filesErr, readErr, auditErr, writeErr, s.ownLock.Release())
}

// querier is the query interface that *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inWriteTx runs fn in a transaction on the write pool and commits it when fn returns
// nil. Errors are wrapped with op.
func (s *SQLStore) inWriteTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	return s.inTx(ctx, s.write, nil, op, fn)
}

// inReadTx runs fn in a read-only transaction on the read pool, so that its statements
// see one snapshot.
func (s *SQLStore) inReadTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	return s.inTx(ctx, s.read, s.d.readTx, op, fn)
}

// txBeginner is a *sql.DB or a *sql.Conn.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

func (s *SQLStore) inTx(
	ctx context.Context,
	db txBeginner,
	opts *sql.TxOptions,
	op string,
	fn func(tx *sql.Tx) error,
) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return s.wrap(op+": begin transaction", err)
	}

	if err := fn(tx); err != nil {
		// A cancelled context makes database/sql roll the transaction back and pgx
		// close the connection, so a failed Rollback is expected then.
		rbErr := tx.Rollback()
		if rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) && ctx.Err() == nil {
			s.log.Warn("transaction rollback failed", "op", op, "err", rbErr)
		}
		return s.wrap(op, err)
	}

	if err := tx.Commit(); err != nil {
		return s.wrap(op+": commit", err)
	}
	return nil
}

// currentTime returns the current time at the precision the store keeps.
func currentTime() time.Time {
	return storedTime(time.Now())
}
