package store_test

import (
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

// baseTime is the creation time of test fixtures: a fixed instant, so that due-date
// queries do not depend on the clock.
var baseTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// openStore opens the backend's database and closes it when t ends.
func openStore(t *testing.T, b storetest.Backend) *store.SQLStore {
	t.Helper()

	s, err := store.Open(t.Context(), b.URL, testLogger(t))
	if err != nil {
		t.Fatalf("Open(%s) failed: %v", b.Name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close failed: %v", err)
		}
	})
	return s
}

// openStorePair opens two stores on the backend's database, as two replicas sharing it,
// and closes them when t ends. A SQLite file admits one writing process, so the two
// SQLite stores share one lock taken with LockSQLite, as no program outside tests does.
func openStorePair(t *testing.T, b storetest.Backend) []store.Store {
	t.Helper()

	lock, err := store.LockSQLite(b.URL)
	if err != nil {
		t.Fatalf("LockSQLite(%s) failed: %v", b.Name, err)
	}
	t.Cleanup(func() { lock.Release() })

	pair := make([]store.Store, 2)
	for i := range pair {
		s, err := store.OpenLocked(t.Context(), b.URL, lock, testLogger(t))
		if err != nil {
			t.Fatalf("OpenLocked(%s) failed: %v", b.Name, err)
		}
		t.Cleanup(func() { s.Close() })
		pair[i] = s
	}
	return pair
}

// openRaw opens the backend's database without the store, to inspect tables directly.
func openRaw(t *testing.T, b storetest.Backend) *sql.DB {
	t.Helper()

	driver := "sqlite3"
	if b.Name == storetest.Postgres {
		driver = "pgx"
	}
	db, err := sql.Open(driver, b.URL)
	if err != nil {
		t.Fatalf("open %s directly: %v", b.Name, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newID(t *testing.T) string {
	t.Helper()

	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// newKey returns an enabled AES-256 key of project with version 1 current.
func newKey(t *testing.T, project, alias string) store.Key {
	return store.Key{
		ID:             newID(t),
		ProjectID:      project,
		DomainID:       "domain-1",
		Alias:          alias,
		Description:    "test key",
		Spec:           "AES_256",
		Usage:          "ENCRYPT_DECRYPT",
		Origin:         "kms",
		State:          store.KeyStateEnabled,
		CreatedAt:      baseTime,
		CurrentVersion: 1,
		Revision:       1,
	}
}

// createKey begins version k.CurrentVersion and creates k, as the service does.
func createKey(t *testing.T, s store.Store, k store.Key) store.Key {
	t.Helper()

	ctx := t.Context()
	if err := s.BeginKeyVersion(ctx, k.ID, k.CurrentVersion); err != nil {
		t.Fatalf("BeginKeyVersion(%s, %d) failed: %v", k.ID, k.CurrentVersion, err)
	}
	if err := s.CreateKey(ctx, k, 0); err != nil {
		t.Fatalf("CreateKey(%s) failed: %v", k.ID, err)
	}

	got, err := s.GetKey(ctx, k.ProjectID, k.ID)
	if err != nil {
		t.Fatalf("GetKey(%s) after CreateKey failed: %v", k.ID, err)
	}
	return got
}

func mustGetKey(t *testing.T, s store.Store, project, id string) store.Key {
	t.Helper()

	k, err := s.GetKey(t.Context(), project, id)
	if err != nil {
		t.Fatalf("GetKey(%s, %s) failed: %v", project, id, err)
	}
	return k
}

func versionStates(t *testing.T, s store.Store, keyID string) []string {
	t.Helper()

	versions, err := s.ListKeyVersions(t.Context(), keyID)
	if err != nil {
		t.Fatalf("ListKeyVersions(%s) failed: %v", keyID, err)
	}
	var states []string
	for _, v := range versions {
		states = append(states, fmt.Sprintf("%d:%s", v.Version, v.State))
	}
	return states
}

func keyIDs(keys []store.Key) []string {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// checkErr fails t unless err matches want; a nil want expects no error.
func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()

	switch {
	case want == nil && err != nil:
		t.Fatalf("%s failed: %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}
