package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSQLiteConnectionSettings(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatalf("Open failed: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	// PRAGMA values: synchronous 2 is FULL; busy_timeout is in milliseconds.
	tests := []struct {
		name   string
		pool   string
		pragma string
		want   string
	}{
		{name: "writer journal mode", pool: "write", pragma: "journal_mode", want: "wal"},
		{name: "writer synchronous", pool: "write", pragma: "synchronous", want: "2"},
		{name: "writer foreign keys", pool: "write", pragma: "foreign_keys", want: "1"},
		{name: "writer busy timeout", pool: "write", pragma: "busy_timeout", want: "5000"},
		{name: "writer not query only", pool: "write", pragma: "query_only", want: "0"},
		{name: "writer checkpoints a long WAL", pool: "write", pragma: "wal_autocheckpoint", want: "4096"},
		{name: "checkpointer synchronous", pool: "checkpoint", pragma: "synchronous", want: "2"},
		{name: "reader journal mode", pool: "read", pragma: "journal_mode", want: "wal"},
		{name: "reader foreign keys", pool: "read", pragma: "foreign_keys", want: "1"},
		{name: "reader busy timeout", pool: "read", pragma: "busy_timeout", want: "5000"},
		{name: "reader query only", pool: "read", pragma: "query_only", want: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := s.write
			switch tc.pool {
			case "read":
				db = s.read
			case "checkpoint":
				db = s.checkpointDB
			}

			var got string
			if err := db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
			}
			if got != tc.want {
				t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
			}
		})
	}

	if s.write.Stats().MaxOpenConnections != 1 {
		t.Errorf("writer pool allows %d connections, want 1", s.write.Stats().MaxOpenConnections)
	}
}

// TestWALCheckpointedInBackground checks that audit commits reach the database file
// through the checkpointer, long before the WAL is long enough for the writer's own
// automatic checkpoint.
func TestWALCheckpointedInBackground(t *testing.T) {
	s, path, now := openAuditChainStore(t)
	before := fileSize(t, path)
	for seq := uint64(1); seq <= 500; seq++ {
		rec := AuditRecord{ChainID: "c", Seq: seq, Time: now, Operation: "decrypt-datakey",
			RequestID: fmt.Sprintf("%032d", seq), PrevHash: []byte{}, Hash: []byte{1}}
		if err := s.AppendAudit(t.Context(), []AuditRecord{rec}, nil); err != nil {
			t.Fatalf("AppendAudit(%d): %v", seq, err)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for fileSize(t, path) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 10 s after 500 commits: no checkpoint ran", before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// TestWALStaysBoundedUnderSteadyWrites checks that the WAL file stops growing under
// commits without pause, which leave a PASSIVE checkpoint on another connection no moment
// with every frame copied. Only the writer's automatic checkpoint then lets the WAL start
// over.
func TestWALStaysBoundedUnderSteadyWrites(t *testing.T) {
	s, path, now := openAuditChainStore(t)

	// Batches of 20 records for 3 s: far more than walAutoCheckpointFrames frames.
	const batch = 20
	seq := uint64(0)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		records := make([]AuditRecord, batch)
		for i := range records {
			seq++
			records[i] = AuditRecord{ChainID: "c", Seq: seq, Time: now,
				Operation: "decrypt-datakey", RequestID: fmt.Sprintf("%032d", seq),
				PrevHash: make([]byte, 32), Hash: make([]byte, 32)}
		}
		if err := s.AppendAudit(t.Context(), records, nil); err != nil {
			t.Fatalf("AppendAudit up to %d: %v", seq, err)
		}
	}

	// A WAL that starts over stays near walAutoCheckpointFrames pages (16 MiB). The same
	// run with the automatic checkpoint off left a WAL of about 300 MB.
	const limit = 64 << 20
	walBytes := fileSize(t, path+"-wal")
	t.Logf("%d records written, WAL file %d bytes", seq, walBytes)
	if walBytes > limit {
		t.Errorf("WAL file is %d bytes after %d records, want at most %d", walBytes, seq, limit)
	}
}

// openAuditChainStore opens a store on a new SQLite file with an audit chain "c", and
// returns it, the file's path and the chain's start time.
func openAuditChainStore(t *testing.T) (*SQLStore, string, time.Time) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("Open failed: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.CreateAuditChain(t.Context(), AuditChain{ID: "c", StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	return s, path, now
}
