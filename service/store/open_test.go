package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

// migrationCount is the number of files in each migrations/<dialect> directory, counted
// in the sqlite directory so that a new migration needs no change here.
var migrationCount = func() int {
	files, err := filepath.Glob(filepath.Join("migrations", "sqlite", "*.sql"))
	if err != nil {
		panic(err)
	}
	return len(files)
}()

func appliedMigrations(t *testing.T, b storetest.Backend) []int {
	t.Helper()

	rows, err := openRaw(t, b).QueryContext(t.Context(),
		"SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()

	var versions []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("read schema_migrations: %v", err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return versions
}

func checkMigrationsApplied(t *testing.T, b storetest.Backend) {
	t.Helper()

	got := appliedMigrations(t, b)
	if len(got) != migrationCount {
		t.Fatalf("schema_migrations = %v, want versions 1 to %d once each", got, migrationCount)
	}
	for i, v := range got {
		if v != i+1 {
			t.Errorf("schema_migrations = %v, want versions 1 to %d once each", got,
				migrationCount)
		}
	}
}

func TestMigrationsAppliedOnceOnReopen(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()

		for i := range 3 {
			s, err := store.Open(t.Context(), b.URL, testLogger(t))
			if err != nil {
				t.Fatalf("Open #%d failed: %v", i+1, err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close #%d failed: %v", i+1, err)
			}
		}
		checkMigrationsApplied(t, b)
	})
}

func TestMigrationsConcurrentOpen(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()

		const opens = 4
		var wg sync.WaitGroup
		errs := make([]error, opens)
		start := make(chan struct{})
		for i := range opens {
			wg.Go(func() {
				<-start
				s, err := store.Open(t.Context(), b.URL, testLogger(t))
				if err != nil {
					errs[i] = err
					return
				}
				errs[i] = s.Close()
			})
		}
		close(start)
		wg.Wait()

		// A SQLite file has one writer at a time, so the Opens that run while another
		// holds the file fail with ErrStoreInUse. At least one must succeed.
		opened := 0
		for i, err := range errs {
			switch {
			case err == nil:
				opened++
			case b.Name == storetest.SQLite && errors.Is(err, store.ErrStoreInUse):
			default:
				t.Errorf("concurrent Open #%d failed: %v", i+1, err)
			}
		}
		if opened == 0 {
			t.Error("no concurrent Open succeeded")
		}
		checkMigrationsApplied(t, b)
	})
}

func TestConcurrentWritersThenReopen(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s, err := store.Open(t.Context(), b.URL, testLogger(t))
		if err != nil {
			t.Fatalf("Open failed: %v", err)
		}

		// Each writer runs a whole key creation and a credential write, so that
		// transactions and single statements interleave.
		const writers = 50
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		ids := make([]string, writers)
		start := make(chan struct{})
		for i := range writers {
			k := newKey(t, "p1", fmt.Sprintf("alias-%d", i))
			ids[i] = k.ID
			wg.Go(func() {
				<-start
				ctx := t.Context()
				if err := s.BeginKeyVersion(ctx, k.ID, 1); err != nil {
					errs <- err
					return
				}
				if err := s.CreateKey(ctx, k, 0); err != nil {
					errs <- err
					return
				}
				if err := s.PutCredential(ctx, newCredential(fmt.Sprintf("AK-%02d", i))); err != nil {
					errs <- err
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)

		for err := range errs {
			t.Errorf("concurrent write failed: %v", err)
			if strings.Contains(err.Error(), "database is locked") {
				t.Errorf("a concurrent write saw SQLITE_BUSY")
			}
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close failed: %v", err)
		}

		// Every acknowledged write is found after the store is reopened.
		reopened := openStore(t, b)
		n, err := reopened.CountKeys(t.Context(), "p1")
		checkErr(t, "CountKeys", err, nil)
		if n != writers {
			t.Errorf("CountKeys after reopen = %d, want %d", n, writers)
		}
		for i, id := range ids {
			k := mustGetKey(t, reopened, "p1", id)
			if k.Alias != fmt.Sprintf("alias-%d", i) || k.CurrentVersion != 1 {
				t.Errorf("key %s after reopen: alias %q version %d", id, k.Alias, k.CurrentVersion)
			}
			if got := versionStates(t, reopened, id); !equalStrings(got, []string{"1:active"}) {
				t.Errorf("versions of %s after reopen = %v, want [1:active]", id, got)
			}
		}
		creds, err := reopened.ListCredentials(t.Context())
		checkErr(t, "ListCredentials", err, nil)
		if len(creds) != writers {
			t.Errorf("ListCredentials after reopen has %d entries, want %d", len(creds), writers)
		}
	})
}

func TestOpenUnreachablePostgres(t *testing.T) {
	t.Parallel()

	// Nothing listens on port 1 of the loopback address, so the connection is refused.
	_, err := store.Open(t.Context(),
		"postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5", nil)
	checkErr(t, "Open(port 1)", err, store.ErrUnavailable)
}

// TestOpenSilentPostgres opens a store whose server accepts TCP connections and never
// responds. Without a connect_timeout in the URL, the default bound must end the attempt
// with ErrUnavailable instead of letting it wait for as long as the server stays silent.
// The hang check gives up after a minute, far above that bound.
func TestOpenSilentPostgres(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var silent []net.Conn // accepted, never responded to
		defer func() {
			for _, c := range silent {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			silent = append(silent, c)
		}
	}()

	opened := make(chan error, 1)
	go func() {
		_, err := store.Open(t.Context(),
			"postgres://postgres@"+ln.Addr().String()+"/test?sslmode=disable", nil)
		opened <- err
	}()
	select {
	case err := <-opened:
		checkErr(t, "Open(silent server)", err, store.ErrUnavailable)
	case <-time.After(time.Minute):
		t.Fatal("Open of a server that never responds still waits after a minute")
	}
}

func TestReadOnlyPostgresWrites(t *testing.T) {
	t.Parallel()
	b := storetest.Backend{Name: storetest.Postgres, URL: storetest.PostgresURL(t)}
	writable := openStore(t, b)
	k := createKey(t, writable, newKey(t, "p1", ""))

	// default_transaction_read_only makes the server reject writes with SQLSTATE 25006,
	// as a standby or a demoted primary does.
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatalf("parse URL: %v", err)
	}
	q := u.Query()
	q.Set("default_transaction_read_only", "on")
	u.RawQuery = q.Encode()
	readOnly := openStore(t, storetest.Backend{Name: b.Name, URL: u.String()})

	checkReadOnlyWrites(t, readOnly, k)
}

func TestReadOnlySQLiteWrites(t *testing.T) {
	t.Parallel()
	b := storetest.Backend{Name: storetest.SQLite, URL: storetest.SQLiteURL(t)}
	writable, err := store.Open(t.Context(), b.URL, testLogger(t))
	if err != nil {
		t.Fatalf("Open failed: %v", err)
	}
	k := createKey(t, writable, newKey(t, "p1", ""))
	if err := writable.Close(); err != nil {
		t.Fatalf("Close failed: %v", err)
	}

	// Tests may run as root, which ignores file modes, so the file is also opened with
	// mode=ro. Without root, the mode bits alone make SQLite open it read-only.
	if err := os.Chmod(b.URL, 0o444); err != nil {
		t.Fatalf("chmod: %v", err)
	}
	readOnly := openStore(t, storetest.Backend{Name: b.Name, URL: "file:" + b.URL + "?mode=ro"})

	checkReadOnlyWrites(t, readOnly, k)
}

// checkReadOnlyWrites checks that s reads k and that every kind of write fails with
// ErrUnavailable.
func checkReadOnlyWrites(t *testing.T, s store.Store, k store.Key) {
	t.Helper()
	ctx := t.Context()

	if _, err := s.GetKey(ctx, k.ProjectID, k.ID); err != nil {
		t.Fatalf("GetKey on a read-only database failed: %v", err)
	}

	update := k
	update.Description = "changed"
	writes := map[string]func() error{
		"CreateKey": func() error { return s.CreateKey(ctx, newKey(t, "p1", ""), 0) },
		"UpdateKey": func() error { _, err := s.UpdateKey(ctx, update); return err },
		"BeginKeyVersion": func() error {
			return s.BeginKeyVersion(ctx, k.ID, 2)
		},
		"MarkVersionDestroyed": func() error {
			return s.MarkVersionDestroyed(ctx, k.ID, 1)
		},
		"PutCredential": func() error { return s.PutCredential(ctx, newCredential("AK-RO")) },
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			checkErr(t, name, write(), store.ErrUnavailable)
		})
	}
}

func TestOpenSQLiteURLForms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A directory name with characters that a file: URI must percent-encode.
	odd := filepath.Join(dir, "odd #1 50%")
	if err := os.Mkdir(odd, 0o755); err != nil {
		t.Fatalf("mkdir: %v", err)
	}

	tests := []struct {
		name string
		url  string
		file string // the database file the URL must create; empty for in-memory
	}{
		{name: "plain path", url: filepath.Join(dir, "a.db"), file: filepath.Join(dir, "a.db")},
		{name: "sqlite prefix", url: "sqlite:" + filepath.Join(dir, "b.db"),
			file: filepath.Join(dir, "b.db")},
		{name: "sqlite scheme", url: "sqlite://" + filepath.Join(dir, "c.db"),
			file: filepath.Join(dir, "c.db")},
		{name: "file prefix", url: "file:" + filepath.Join(dir, "d.db"),
			file: filepath.Join(dir, "d.db")},
		{name: "path needing escapes", url: filepath.Join(odd, "e.db"),
			file: filepath.Join(odd, "e.db")},
		{name: "file URL with localhost", url: "file://localhost" + filepath.Join(dir, "f.db"),
			file: filepath.Join(dir, "f.db")},
		{name: "file URL without host", url: "file://" + filepath.Join(dir, "g.db"),
			file: filepath.Join(dir, "g.db")},
		{name: "in memory", url: ":memory:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, storetest.Backend{Name: storetest.SQLite, URL: tc.url})
			createKey(t, s, newKey(t, "p1", "a"))
			if tc.file == "" {
				return
			}
			if _, err := os.Stat(tc.file); err != nil {
				t.Errorf("database file: %v", err)
			}
			if _, err := os.Stat(tc.file + "-kmsd.lock"); err != nil {
				t.Errorf("lock file beside the database file: %v", err)
			}
		})
	}

	for _, invalid := range []string{"sqlite:", "file://db.example/" + filepath.Join(dir, "h.db"),
		"file://localhost"} {
		_, err := store.Open(t.Context(), invalid, nil)
		if err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Open(%q) error = %v, want an invalid URL error", invalid, err)
		}
	}
}

func TestOpenPostgresMaxConns(t *testing.T) {
	tests := []struct {
		name  string
		query string
	}{
		{"max_conns alone", "&max_conns=3"},
		// The server rejects a connection whose options name "+statement_timeout", which
		// is what a space encoded as %20 became when the query was encoded again.
		{"max_conns keeps options", "&max_conns=3&options=-c%20statement_timeout%3D60000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.Open(t.Context(), storetest.PostgresURL(t)+tt.query, nil)
			if err != nil {
				t.Fatalf("Open with %s: %v", tt.query, err)
			}
			defer s.Close()
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		})
	}
}

func TestOpenRejectsKeywordValueString(t *testing.T) {
	// Not parallel: t.Chdir changes the working directory of the process, where a
	// keyword/value string taken for a relative SQLite path would be created.
	dir := t.TempDir()
	t.Chdir(dir)

	for _, dsn := range []string{
		"host=127.0.0.1 user=kms password=KVSECRET dbname=kms",
		"  password = 'KVSECRET' host=db",
	} {
		_, err := store.Open(t.Context(), dsn, nil)
		if err == nil || !strings.Contains(err.Error(), "keyword/value connection string") {
			t.Errorf("Open(keyword/value string) error = %v, want one naming the form", err)
		}
		if err != nil && strings.Contains(err.Error(), "KVSECRET") {
			t.Errorf("Open error contains the password: %v", err)
		}
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("Open created %q in the working directory", e.Name())
	}
}

func TestOpenSQLiteURLErrorOmitsURL(t *testing.T) {
	t.Parallel()

	// A mistyped scheme makes this PostgreSQL URL a SQLite path with bad parameters.
	_, err := store.Open(t.Context(),
		"postgress://kms:URLSECRET@db/kms?password=URLSECRET&x=%zz", nil)
	if err == nil {
		t.Fatal("Open accepted an invalid SQLite URL")
	}
	if strings.Contains(err.Error(), "URLSECRET") {
		t.Errorf("Open error contains the password: %v", err)
	}
}

func TestOpenRejectsMistypedPostgresURL(t *testing.T) {
	for _, databaseURL := range []string{
		"postgres:/postgres:SECRET9@127.0.0.1:5432/db",
		"postgresql:postgres:SECRET9@127.0.0.1/db",
		"POSTGRES://postgres:SECRET9@127.0.0.1/db",
	} {
		_, err := store.Open(t.Context(), databaseURL, nil)
		if err == nil {
			t.Errorf("Open(%q) succeeded", databaseURL)
			continue
		}
		if strings.Contains(err.Error(), "SECRET9") {
			t.Errorf("Open error %q contains the password", err)
		}
	}
}

func TestOpenRejectsURLOfOtherScheme(t *testing.T) {
	// Not parallel: t.Chdir changes the working directory of the process, where a URL
	// taken for a relative SQLite path would be created.
	dir := t.TempDir()
	t.Chdir(dir)

	tests := []struct {
		name        string
		databaseURL string
		wantError   string
	}{
		{"short scheme, one slash", "pg:/kms:PWSECRET@127.0.0.1/db", "unsupported scheme"},
		{"short scheme", "pg://kms:PWSECRET@127.0.0.1/db", "unsupported scheme"},
		{"MySQL", "mysql://kms:PWSECRET@127.0.0.1/db", "unsupported scheme"},
		{"unencoded @ in a PostgreSQL password", "postgres://kms:Se@PWSECRET@127.0.0.1:1/db",
			"more than one"},
		{"misspelled scheme", "postgress://kms:PWSECRET@127.0.0.1/db", "unsupported scheme"},
		{"JDBC", "jdbc:postgresql://127.0.0.1/db?password=PWSECRET", "unsupported scheme"},
		{"encoded colon", "postgresql%3A//kms:PWSECRET@127.0.0.1/db", "unsupported scheme"},
		{"encoded colon and slashes", "postgres%3A%2F%2Fkms:PWSECRET@127.0.0.1/db",
			"unsupported scheme"},
		{"encoded twice", "postgres%253A%252F%252Fkms%253APWSECRET%2540127.0.0.1/db",
			"unsupported scheme"},
		{"after the sqlite prefix", "sqlite:pg://kms:PWSECRET@127.0.0.1/db",
			"unsupported scheme"},
		{"userinfo without scheme", "kms:PWSECRET@127.0.0.1/db", "user:password@"},
		{"userinfo after //", "//kms:PWSECRET@127.0.0.1/db", "user:password@"},
		{"userinfo after the sqlite scheme", "sqlite://kms:PWSECRET@127.0.0.1/db",
			"user:password@"},
		{"Go MySQL DSN", "kms:PWSECRET@tcp(127.0.0.1:3306)/db", "user:password@"},
		{"password with a slash", "kms:PW/SECRET@127.0.0.1/db", "user:password@"},
		{"encoded userinfo", "kms%3APWSECRET%40127.0.0.1/db", "user:password@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))

			s, err := store.Open(t.Context(), tt.databaseURL, log)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tt.databaseURL)
			}
			if !strings.Contains(err.Error(), tt.wantError) {
				t.Errorf("Open error %q, want one containing %q", err, tt.wantError)
			}
			for _, secret := range []string{"PWSECRET", "PW/SECRET", "127.0.0.1"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Open error %q contains %q of the URL", err, secret)
				}
				if strings.Contains(logs.String(), secret) {
					t.Errorf("Open logged %q of the URL: %s", secret, logs.String())
				}
			}
		})
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("Open created %q in the working directory", e.Name())
	}
}

func TestOpenSQLitePathsWithColon(t *testing.T) {
	// Not parallel: t.Chdir changes the working directory of the process, where the
	// relative paths are created.
	dir := t.TempDir()
	t.Chdir(dir)

	tests := []struct {
		name        string
		databaseURL string
		file        string // the database file the URL must create, relative to dir
	}{
		{"relative path", "./data/kms.db", "data/kms.db"},
		{"colon in the file name", "kms:backup.db", "kms:backup.db"},
		{"colon in a directory name", "./a:b/kms.db", "a:b/kms.db"},
		{"URL-like path after ./", "./pg:/kms.db", "pg:/kms.db"},
		{"file prefix with parameters", "file:kms.db?_busy_timeout=5000", "kms.db"},
		{"sqlite prefix", "sqlite:kms2.db", "kms2.db"},
		{"at sign without colon", "./backup@2026/kms.db", "backup@2026/kms.db"},
		{"percent sign", "./50%/kms.db", "50%/kms.db"},
		{"absolute path", filepath.Join(dir, "abs", "kms.db"), "abs/kms.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, storetest.Backend{Name: storetest.SQLite, URL: tt.databaseURL})
			createKey(t, s, newKey(t, "p1", "a"))
			if _, err := os.Stat(filepath.Join(dir, tt.file)); err != nil {
				t.Errorf("database file: %v", err)
			}
		})
	}
}

func TestDatabaseURLChecks(t *testing.T) {
	tests := []struct {
		databaseURL     string
		wantUnsupported bool
		wantUserinfo    bool
	}{
		{"postgres://kms:pw@db/kms", false, false},
		{"postgresql://kms:pw@db/kms?sslmode=disable", false, false},
		{"kms-data/kms.db", false, false},
		{"/var/lib/kms/kms.db", false, false},
		{"file:kms.db?_busy_timeout=5000", false, false},
		{"file:///var/lib/kms/kms.db", false, false},
		{"sqlite:///var/lib/kms/kms.db", false, false},
		{":memory:", false, false},
		{"file::memory:?cache=shared", false, false},
		{"C:/kms/kms.db", false, false},
		{"kms:backup.db", false, false},
		{"./pg:/kms.db", false, false},
		{"kms.db?_auth_user=admin&_auth_pass=a:b@c", false, false},
		{"pg:/kms@db/kms", true, true},
		{"mysql://db/kms", true, false},
		{"Postgres%3A%2F%2Fdb/kms", true, false},
		{"File:/var/lib/kms/kms.db", true, false},
		{"pg://kms:pw@db/kms", true, true},
		{"kms:pw@db/kms", false, true},
		{"kms%3Apw%40db/kms", false, true},
		{"./backup:1@db.db", false, true},
	}
	for _, tt := range tests {
		if got := store.IsUnsupportedURL(tt.databaseURL); got != tt.wantUnsupported {
			t.Errorf("IsUnsupportedURL(%q) = %v, want %v", tt.databaseURL, got,
				tt.wantUnsupported)
		}
		if got := store.HasUserinfo(tt.databaseURL); got != tt.wantUserinfo {
			t.Errorf("HasUserinfo(%q) = %v, want %v", tt.databaseURL, got, tt.wantUserinfo)
		}
	}
}

func TestOpenPostgresParseErrorOmitsURL(t *testing.T) {
	tests := []struct {
		name        string
		databaseURL string
	}{
		{"bad escape after options", "postgres://kms@127.0.0.1:1/db?options=-c%20app.key%3DS3CRET%zz"},
		{"space in options", "postgres://kms@127.0.0.1:1/db?options=-c app.key=S3CRET&x=%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := store.Open(t.Context(), tt.databaseURL,
				slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an invalid URL error")
			}
			if !strings.Contains(err.Error(), "invalid database URL") {
				t.Errorf("error %q, want an invalid database URL error", err)
			}
			if strings.Contains(err.Error()+logs.String(), "S3CRET") {
				t.Errorf("error %q or log %q contains the options value", err, logs.String())
			}
		})
	}
}

func TestPostgresConnectErrorHidesOptionValues(t *testing.T) {
	tests := []struct {
		name    string
		options string
		secret  string
	}{
		{"-c and a space", "-c statement_timeout=HUNTER2secret", "HUNTER2secret"},
		{"-c joined", "-clock_timeout=S3CRETvalue", "S3CRETvalue"},
		{"double dash", "--idle_session_timeout=pa55word", "pa55word"},
		{"escaped space", `-c statement_timeout=two\ words`, "two words"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(storetest.PostgresURL(t))
			if err != nil {
				t.Fatalf("parse URL: %v", err)
			}
			q := u.Query()
			q.Set("options", tt.options)
			// pgx reads "+" as a plus sign, not as a space.
			u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")

			var logs bytes.Buffer
			s, err := store.Open(t.Context(), u.String(),
				slog.New(slog.NewTextHandler(&logs, nil)))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want the server to reject the option value")
			}
			// The server's message still names the parameter, which is not secret.
			if !strings.Contains(err.Error(), "invalid value for parameter") {
				t.Errorf("error %q, want the server's reason", err)
			}
			if strings.Contains(err.Error()+logs.String(), tt.secret) {
				t.Errorf("error %q or log %q contains the option value", err, logs.String())
			}
		})
	}
}

func TestOpenPostgresRejectedConnection(t *testing.T) {
	base, err := url.Parse(storetest.PostgresURL(t))
	if err != nil {
		t.Fatalf("parse URL: %v", err)
	}
	tests := []struct {
		name   string
		change func(u *url.URL)
	}{
		// SQLSTATE 3D000, which the server sends while the connection starts.
		{"missing database", func(u *url.URL) { u.Path = "/kms_no_such_database" }},
		// SQLSTATE 28000.
		{"missing role", func(u *url.URL) { u.User = url.User("kms_no_such_role") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := *base
			tt.change(&u)

			_, err := store.Open(t.Context(), u.String(), nil)
			checkErr(t, "Open", err, store.ErrUnavailable)
		})
	}
}

// TestCloseTwice checks that a second Close of a store returns nil instead of failing or
// panicking.
func TestCloseTwice(t *testing.T) {
	s, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
