// Package storetest gives tests a fresh, empty database on each store backend: a SQLite
// file in a temporary directory and a schema of its own on a PostgreSQL server. Pass the
// URL to store.Open.
//
// PostgreSQL is taken from the environment variable KMS_TEST_POSTGRES_URL, or
// DefaultPostgresURL when it is unset. When that server is not reachable, the PostgreSQL
// backend is skipped with the reason, or fails the test when the environment variable CI
// is set.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// DefaultPostgresURL is the test server used when KMS_TEST_POSTGRES_URL is unset.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Backend names.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// postgresSetupTimeout bounds connecting to the test server and creating or dropping a
// schema, so that an unreachable server fails fast instead of at the test timeout.
const postgresSetupTimeout = 10 * time.Second

// Backend is one fresh database.
type Backend struct {
	Name string // SQLite or Postgres
	URL  string // for store.Open; empty when Skip is set
	// Skip is why the backend cannot be used, for t.Skip. Empty when URL is set.
	Skip string
}

// Backends returns a fresh database on every backend. A PostgreSQL server that is not
// reachable gives a Backend with Skip set, or fails t when CI is set. The databases are
// removed when t ends.
func Backends(t testing.TB) []Backend {
	t.Helper()

	backends := []Backend{{Name: SQLite, URL: SQLiteURL(t)}}

	pg := Backend{Name: Postgres}
	pg.URL, pg.Skip = postgresURL(t)
	return append(backends, pg)
}

// Run runs fn as one subtest per backend, named after the backend, each with a fresh
// database. The PostgreSQL subtest is skipped, or fails when CI is set, when the server
// is not reachable.
func Run(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()

	t.Run(SQLite, func(t *testing.T) {
		fn(t, Backend{Name: SQLite, URL: SQLiteURL(t)})
	})
	t.Run(Postgres, func(t *testing.T) {
		fn(t, Backend{Name: Postgres, URL: PostgresURL(t)})
	})
}

// SQLiteURL returns the path of a SQLite file, not yet created, in a temporary directory
// that is removed when t ends.
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "kms.db")
}

// PostgresURL returns the URL of a new, empty schema, dropped with everything in it when
// t ends. It skips t, or fails it when CI is set, when the server is not reachable.
func PostgresURL(t testing.TB) string {
	t.Helper()

	u, skip := postgresURL(t)
	if skip != "" {
		t.Skip(skip)
	}
	return u
}

// postgresURL creates the schema and returns its URL, or the reason it could not.
func postgresURL(t testing.TB) (schemaURL, skip string) {
	t.Helper()

	base := os.Getenv("KMS_TEST_POSTGRES_URL")
	if base == "" {
		base = DefaultPostgresURL
	}
	parsed, err := url.Parse(base)
	if err != nil {
		t.Fatalf("KMS_TEST_POSTGRES_URL is not a valid URL: %v", err)
	}

	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open PostgreSQL at %s: %v", parsed.Redacted(), err)
	}
	defer db.Close()

	ctx, cancel := context.WithTimeout(context.Background(), postgresSetupTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		reason := fmt.Sprintf("PostgreSQL at %s is not reachable: %v", parsed.Redacted(), err)
		if os.Getenv("CI") != "" {
			t.Fatalf("%s (CI is set, so the PostgreSQL backend is required)", reason)
		}
		return "", reason + " (set CI to make this a failure)"
	}

	schema := "s_" + randomHex(t, 8)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() { dropSchema(t, base, schema) })

	query := parsed.Query()
	query.Set("search_path", schema)
	parsed.RawQuery = query.Encode()
	return parsed.String(), ""
}

func dropSchema(t testing.TB, base, schema string) {
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer db.Close()

	ctx, cancel := context.WithTimeout(context.Background(), postgresSetupTimeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}
