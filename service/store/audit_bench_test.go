package store

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAppendAuditOne measures one audit write of one record on SQLite, the cost a
// lone client pays per call. It writes to a chain file (a chain made by
// CreateAuditChain) and to the audit_records table, where chains of older versions of
// the store stay.
func BenchmarkAppendAuditOne(b *testing.B) {
	for _, where := range []string{"file", "table"} {
		for _, fsync := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/fsync=%v", where, fsync), func(b *testing.B) {
				benchmarkAppendAuditOne(b, where == "file", fsync)
			})
		}
	}
}

func benchmarkAppendAuditOne(b *testing.B, inFile, fsync bool) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "kms.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.SetAuditFsync(fsync)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if inFile {
		if err := s.CreateAuditChain(b.Context(), AuditChain{ID: "c", StartedAt: now}); err != nil {
			b.Fatal(err)
		}
	}

	seq := uint64(0)
	for b.Loop() {
		seq++
		rec := AuditRecord{ChainID: "c", Seq: seq, Time: now,
			RequestID: "0123456789abcdef0123456789abcdef", AccessKey: "ABCDEFGHIJKLMNOPQRST",
			UserID: "u", ProjectID: "p", SourceIP: "127.0.0.1", Operation: "decrypt-datakey",
			KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f", KeyVersion: 1, Status: 200,
			PrevHash: make([]byte, 32), Hash: make([]byte, 32)}
		if err := s.AppendAudit(b.Context(), []AuditRecord{rec}, nil); err != nil {
			b.Fatal(err)
		}
	}
}
