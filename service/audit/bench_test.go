package audit_test

import (
	"path/filepath"
	"testing"

	"github.com/hsmkms/kms/service/audit"
)

// BenchmarkRecord is one call's audit record on the embedded default's store (a SQLite
// file whose chains are chain files), from Record to the committed write, on one
// goroutine (the lone caller, who commits its own record) and on 64.
func BenchmarkRecord(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := "lone caller"
		if parallel {
			name = "64 goroutines"
		}
		b.Run(name, func(b *testing.B) {
			st := openSQLite(b, filepath.Join(b.TempDir(), "kms.db"))
			trail, err := audit.Open(b.Context(), st, openToken(b), audit.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer trail.Close()
			r := audit.Record{RequestID: "0f8a2c9e-5b7d-4e1a-9c3b-2d6f8e0a1b4c",
				AccessKey: "AKBENCH0000000000000", UserID: "user-1",
				ProjectID: "0123456789abcdef0123456789abcdef", SourceIP: "127.0.0.1",
				Operation: "decrypt-datakey", KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
				KeyVersion: 1, Status: 200}

			b.ReportAllocs()
			b.ResetTimer()
			if !parallel {
				for b.Loop() {
					if err := trail.Record(b.Context(), r); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(32) // 32 goroutines per CPU, 64 on the 2-core machines
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := trail.Record(b.Context(), r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
