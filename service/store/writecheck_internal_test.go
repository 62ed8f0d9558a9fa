package store

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store/storetest"
)

// openCheckedStore opens the store at databaseURL and closes it when t ends.
func openCheckedStore(t *testing.T, databaseURL string) *SQLStore {
	t.Helper()
	s, err := Open(t.Context(), databaseURL, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("Open failed: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openWrittenStore opens the store at databaseURL, checks that CheckWrite succeeds on it,
// and closes it when t ends.
func openWrittenStore(t *testing.T, databaseURL string) *SQLStore {
	t.Helper()
	s := openCheckedStore(t, databaseURL)
	if err := checkWriteNow(t, s); err != nil {
		t.Fatalf("CheckWrite on a new store failed: %v", err)
	}
	return s
}

// waitWriteCheckIdle waits until no write of CheckWrite runs.
func waitWriteCheckIdle(t *testing.T, s *SQLStore) {
	t.Helper()
	s.writeCheck.mu.Lock()
	running := s.writeCheck.running
	s.writeCheck.mu.Unlock()
	if running == nil {
		return
	}
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		t.Fatal("the write of CheckWrite did not end within 30 s")
	}
}

// checkWriteNow runs CheckWrite with no earlier result to reuse, waits for its write to
// end, and returns the result that the write recorded. Unlike CheckWrite itself, it
// returns no earlier result when the write takes longer than writeCheckWait.
func checkWriteNow(t *testing.T, s *SQLStore) error {
	t.Helper()
	waitWriteCheckIdle(t, s)
	s.writeCheck.mu.Lock()
	s.writeCheck.checkedAt = time.Time{}
	s.writeCheck.mu.Unlock()

	_ = s.CheckWrite(t.Context())
	waitWriteCheckIdle(t, s)

	s.writeCheck.mu.Lock()
	defer s.writeCheck.mu.Unlock()
	return s.writeCheck.err
}

// writeCheckValue returns the value of the write-check row.
func writeCheckValue(t *testing.T, s *SQLStore) string {
	t.Helper()
	var value string
	err := s.write.QueryRowContext(t.Context(), s.d.rebind("SELECT value FROM settings WHERE name = ?"),
		writeCheckSetting).Scan(&value)
	if err != nil {
		t.Fatalf("read the write-check row: %v", err)
	}
	return value
}

func TestCheckWriteCommits(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openWrittenStore(t, b.URL)
		first := writeCheckValue(t, s)

		if err := checkWriteNow(t, s); err != nil {
			t.Fatalf("second CheckWrite failed: %v", err)
		}
		if second := writeCheckValue(t, s); second == first {
			t.Errorf("the write-check row kept the value %q, expected a new value on each write", first)
		}
	})
}

func TestCheckWriteReadOnlyDatabase(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		openCheckedStore(t, b.URL) // creates the schema

		// SQLite opens the file read-only with mode=ro. PostgreSQL rejects writes with
		// SQLSTATE 25006 under default_transaction_read_only, as a hot standby does.
		u, err := url.Parse(b.URL)
		if err != nil {
			t.Fatalf("parse URL: %v", err)
		}
		q := u.Query()
		readOnlyURL := "file:" + b.URL + "?mode=ro"
		if b.Name == storetest.Postgres {
			q.Set("default_transaction_read_only", "on")
			u.RawQuery = q.Encode()
			readOnlyURL = u.String()
		}
		s := openCheckedStore(t, readOnlyURL)

		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping on a read-only database failed: %v", err)
		}
		if err := checkWriteNow(t, s); !errors.Is(err, ErrUnavailable) {
			t.Errorf("CheckWrite on a read-only database: error %v, expected %v", err, ErrUnavailable)
		}
	})
}

func TestCheckWriteImmutableWAL(t *testing.T) {
	t.Parallel()
	path := storetest.SQLiteURL(t)
	s := openWrittenStore(t, path)

	storetest.SetImmutable(t, path+"-wal")
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with an immutable -wal file failed: %v", err)
	}
	if err := checkWriteNow(t, s); !errors.Is(err, ErrUnavailable) {
		t.Errorf("CheckWrite with an immutable -wal file: error %v, expected %v", err, ErrUnavailable)
	}

	storetest.ClearImmutable(t, path+"-wal")
	if err := checkWriteNow(t, s); err != nil {
		t.Errorf("CheckWrite after the -wal file became writable again failed: %v", err)
	}
}

// TestCheckWriteBusyKeepsResult holds the SQLite write lock from another connection, as
// another process would, for longer than the store's busy timeout. The write of
// CheckWrite ends with SQLITE_BUSY, which must leave the earlier result in place.
func TestCheckWriteBusyKeepsResult(t *testing.T) {
	t.Parallel()
	path := storetest.SQLiteURL(t)
	s := openWrittenStore(t, path)

	other, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, err := other.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("BEGIN IMMEDIATE on another connection: %v", err)
	}
	defer tx.Rollback()

	if err := checkWriteNow(t, s); err != nil {
		t.Errorf("CheckWrite while another connection holds the write lock: %v, expected the "+
			"earlier result nil", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := checkWriteNow(t, s); err != nil {
		t.Errorf("CheckWrite after the lock was released failed: %v", err)
	}
}

// TestCheckWriteConcurrentCallers calls CheckWrite from many goroutines at once, as
// probes from several load balancers do, and expects every call to succeed.
func TestCheckWriteConcurrentCallers(t *testing.T) {
	t.Parallel()
	s := openCheckedStore(t, storetest.SQLiteURL(t))

	const callers = 50
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { errs[i] = s.CheckWrite(t.Context()) })
	}
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: CheckWrite failed: %v", i, err)
		}
	}
	waitWriteCheckIdle(t, s)
}

func TestCheckWriteReusesRecentResult(t *testing.T) {
	t.Parallel()
	s := openWrittenStore(t, storetest.SQLiteURL(t))
	before := writeCheckValue(t, s)

	// A result recorded in the future stays within writeCheckReuse however slowly the
	// test runs.
	recorded := errors.New("recorded result")
	s.writeCheck.mu.Lock()
	s.writeCheck.err, s.writeCheck.checkedAt = recorded, time.Now().Add(time.Hour)
	s.writeCheck.mu.Unlock()

	if err := s.CheckWrite(t.Context()); !errors.Is(err, recorded) {
		t.Errorf("CheckWrite within the reuse time: error %v, expected the recorded %v", err, recorded)
	}
	if after := writeCheckValue(t, s); after != before {
		t.Errorf("CheckWrite within the reuse time wrote the row: %q, then %q", before, after)
	}
}

// TestDialectIsBusy classifies real errors of both backends: a lock that another
// connection holds is busy, a read-only database is not.
func TestDialectIsBusy(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openWrittenStore(t, b.URL)
		ctx := t.Context()

		holder, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Rollback()
		_, err = holder.ExecContext(ctx, s.d.rebind("UPDATE settings SET value = 'held' WHERE name = ?"),
			writeCheckSetting)
		if err != nil {
			t.Fatal(err)
		}

		busyErr, readOnlyErr := busyAndReadOnlyErrors(t, b)
		if !s.d.isBusy(busyErr) {
			t.Errorf("isBusy(%v) = false, expected true for a lock held by another connection", busyErr)
		}
		if s.d.isBusy(readOnlyErr) {
			t.Errorf("isBusy(%v) = true, expected false for a read-only database", readOnlyErr)
		}
	})
}

// busyAndReadOnlyErrors returns the error of an update that waits for the lock of the
// write-check row no longer than 10 ms, and the error of an update in a read-only
// transaction, each from a connection of its own.
func busyAndReadOnlyErrors(t *testing.T, b storetest.Backend) (busyErr, readOnlyErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	update := "UPDATE settings SET value = 'x' WHERE name = '" + writeCheckSetting + "'"

	if b.Name == storetest.SQLite {
		busyDB, err := sql.Open("sqlite3", "file:"+b.URL+"?_busy_timeout=10")
		if err != nil {
			t.Fatal(err)
		}
		defer busyDB.Close()
		_, busyErr = busyDB.ExecContext(ctx, update)

		readOnlyDB, err := sql.Open("sqlite3", "file:"+b.URL+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer readOnlyDB.Close()
		_, readOnlyErr = readOnlyDB.ExecContext(ctx, update)
		return busyErr, readOnlyErr
	}

	db, err := sql.Open("pgx", b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET lock_timeout = '10ms'"); err != nil {
		t.Fatal(err)
	}
	_, busyErr = conn.ExecContext(ctx, update)
	if _, err := conn.ExecContext(ctx, "SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	_, readOnlyErr = conn.ExecContext(ctx, update)
	return busyErr, readOnlyErr
}
