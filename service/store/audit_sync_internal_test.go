package store

import (
	"path/filepath"
	"testing"
	"time"
)

// TestAuditCommitRestoresSynchronous checks that the relaxed audit commit on SQLite
// leaves the writer connection at synchronous=FULL for the metadata writes after it.
func TestAuditCommitRestoresSynchronous(t *testing.T) {
	for _, fsync := range []bool{false, true} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "kms.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.SetAuditFsync(fsync)

		now := time.Now().UTC().Truncate(time.Millisecond)
		if err := s.CreateAuditChain(t.Context(), AuditChain{ID: "c", StartedAt: now}); err != nil {
			t.Fatal(err)
		}
		rec := AuditRecord{ChainID: "c", Seq: 1, Time: now, Operation: "describe-key",
			PrevHash: []byte{}, Hash: []byte{1}}
		if err := s.AppendAudit(t.Context(), []AuditRecord{rec}, nil); err != nil {
			t.Fatalf("fsync %v: AppendAudit: %v", fsync, err)
		}

		var level int
		if err := s.write.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&level); err != nil {
			t.Fatal(err)
		}
		if level != 2 {
			t.Errorf("fsync %v: writer synchronous = %d after an audit commit, want 2 (FULL)", fsync, level)
		}
	}
}
