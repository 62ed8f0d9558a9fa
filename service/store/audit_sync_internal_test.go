package store

import (
	"database/sql/driver"
	"errors"
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

		// A chain that CreateAuditChain did not create is kept in the audit_records table.
		now := time.Now().UTC().Truncate(time.Millisecond)
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

// TestAuditCommitAfterWriterReplaced checks that the relaxed SQLite audit commit prepares
// its statements again on a new writer connection, and that a failed batch leaves no
// open transaction behind.
func TestAuditCommitAfterWriterReplaced(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A chain that CreateAuditChain did not create is kept in the audit_records table.
	now := time.Now().UTC().Truncate(time.Millisecond)
	record := func(seq uint64) AuditRecord {
		return AuditRecord{ChainID: "c", Seq: seq, Time: now, Operation: "describe-key",
			PrevHash: []byte{}, Hash: []byte{byte(seq)}}
	}
	if err := s.AppendAudit(t.Context(), []AuditRecord{record(1)}, nil); err != nil {
		t.Fatalf("AppendAudit(1): %v", err)
	}

	// A duplicate seq fails inside the transaction; the whole batch must roll back.
	err = s.AppendAudit(t.Context(), []AuditRecord{record(2), record(1)}, nil)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("AppendAudit(2, 1) = %v, want ErrConflict", err)
	}

	// The pool discards a connection whose Raw callback reports driver.ErrBadConn.
	conn, err := s.write.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	old := s.auditStmts.conn
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()

	if err := s.AppendAudit(t.Context(), []AuditRecord{record(2)}, nil); err != nil {
		t.Fatalf("AppendAudit(2) on a new writer connection: %v", err)
	}
	if s.auditStmts.conn == old {
		t.Error("audit statements still belong to the discarded writer connection")
	}

	last, err := s.LastAuditRecord(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if last.Seq != 2 {
		t.Errorf("last seq = %d, want 2: the failed batch was not rolled back", last.Seq)
	}
	_, err = s.write.ExecContext(t.Context(),
		"INSERT INTO audit_chains (chain_id, started_at, host) VALUES ('d', 0, '')")
	if err != nil {
		t.Errorf("metadata write after the audit batches: %v", err)
	}
}
