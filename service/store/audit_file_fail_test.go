package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hsmkms/kms/service/store/storetest"
)

// openChainClosedByTest is openChain with a logger, for tests that close the store
// themselves: a second Close of a store panics.
func openChainClosedByTest(t *testing.T, log *slog.Logger) (*SQLStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(t.Context(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	err = s.CreateAuditChain(t.Context(), AuditChain{ID: "c", StartedAt: fileTestTime})
	if err == nil {
		err = s.AppendAudit(t.Context(), fileRecords("c", 1, 2), nil)
	}
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s, path
}

// TestChainFileImmutableUnderTheWriter makes a chain file immutable (chattr +i) while its
// writer has it open. Every append must fail with ErrChainFileNotWritable, not
// ErrChainFileCut, and leave the file's lines as they were. Once the flag is cleared,
// appends go on in the same file.
func TestChainFileImmutableUnderTheWriter(t *testing.T) {
	tests := []struct {
		name  string
		unmap bool // the next append maps a new region of the file
		noMap bool // append with write(2), as on a file system without fallocate
	}{
		{"store to the mapped region", false, false},
		{"mapping a new region", true, false},
		{"write(2)", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openChainClosedByTest(t, nil)
			ctx := t.Context()
			file := filepath.Join(path+"-audit", "c.jsonl")
			w := s.files.openWriter("c")
			if tc.unmap {
				if _, err := w.finish(); err != nil {
					t.Fatal(err)
				}
			}
			w.noMap = tc.noMap

			storetest.SetImmutable(t, file)
			for i := range 2 {
				err := s.AppendAudit(ctx, fileRecords("c", 3, 2), nil)
				if !errors.Is(err, ErrChainFileNotWritable) {
					t.Fatalf("append %d to an immutable file = %v, want ErrChainFileNotWritable",
						i+1, err)
				}
				if errors.Is(err, ErrChainFileCut) {
					t.Errorf("append %d to an immutable file reports a cut: %v", i+1, err)
				}
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("append %d to an immutable file = %v, want ErrUnavailable too",
						i+1, err)
				}
				if !strings.Contains(err.Error(), "the file is immutable") {
					t.Errorf("append %d: the error does not name the cause: %v", i+1, err)
				}
			}

			ro := openFileStore(t, path+"?mode=ro")
			for name, st := range map[string]*SQLStore{"writer": s, "read-only store": ro} {
				records, err := st.ListAuditRecords(ctx, "c", 0, 10)
				if err != nil || len(records) != 2 {
					t.Errorf("%s: ListAuditRecords of the immutable file = %d records, %v; "+
						"want the 2 written before", name, len(records), err)
				}
			}

			storetest.ClearImmutable(t, file)
			if err := s.AppendAudit(ctx, fileRecords("c", 3, 2), nil); err != nil {
				t.Fatalf("AppendAudit once the file is writable again: %v", err)
			}
			for name, st := range map[string]*SQLStore{"writer": s, "read-only store": ro} {
				records, err := st.ListAuditRecords(ctx, "c", 0, 10)
				if err != nil || len(records) != 4 {
					t.Errorf("%s: ListAuditRecords after the flag was cleared = %d records, "+
						"%v; want 4", name, len(records), err)
				}
			}

			size := w.written()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size() != size {
				t.Errorf("closed chain file is %d bytes, want its %d bytes of lines",
					info.Size(), size)
			}
		})
	}
}

// TestChainFileCheckpointInTable appends to an immutable chain file. A
// checkpoint without records must go to the audit_checkpoints table, be read with the
// chain's other checkpoints, and leave the chain listed once. Records must fail.
func TestChainFileCheckpointInTable(t *testing.T) {
	var logs bytes.Buffer
	s, path := openChainClosedByTest(t, slog.New(slog.NewTextHandler(&logs, nil)))
	defer s.Close()
	ctx := t.Context()
	file := filepath.Join(path+"-audit", "c.jsonl")
	signed := AuditCheckpoint{ChainID: "c", Seq: 2, RecordHash: fileRecords("c", 2, 1)[0].Hash,
		Signature: []byte{0x30, 1}}
	later := AuditCheckpoint{ChainID: "c", Seq: 3, RecordHash: fileRecords("c", 3, 1)[0].Hash,
		Signature: []byte{0x30, 2}}

	storetest.SetImmutable(t, file)
	if err := s.AppendAudit(ctx, nil, []AuditCheckpoint{signed}); err != nil {
		t.Fatalf("AppendAudit of a checkpoint to an immutable file: %v", err)
	}
	if !strings.Contains(logs.String(), "stored in the audit_checkpoints table") ||
		!strings.Contains(logs.String(), "seq=2") {
		t.Errorf("the log does not say where checkpoint 2 went:\n%s", logs.String())
	}
	err := s.AppendAudit(ctx, fileRecords("c", 3, 1), []AuditCheckpoint{later})
	if !errors.Is(err, ErrChainFileNotWritable) {
		t.Errorf("AppendAudit of a record and a checkpoint to an immutable file = %v, want "+
			"ErrChainFileNotWritable", err)
	}

	storetest.ClearImmutable(t, file)
	err = s.AppendAudit(ctx, nil, []AuditCheckpoint{signed})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("AppendAudit of checkpoint 2 again, to the file = %v, want ErrConflict", err)
	}
	if err := s.AppendAudit(ctx, fileRecords("c", 3, 1), []AuditCheckpoint{later}); err != nil {
		t.Fatalf("AppendAudit once the file is writable again: %v", err)
	}
	if data, err := os.ReadFile(file); err != nil || bytes.Contains(data, []byte(`"seq":2,"record_hash"`)) {
		t.Errorf("the chain file holds checkpoint 2 (%v):\n%s", err, data)
	}

	ro := openFileStore(t, path+"?mode=ro")
	pages := []struct {
		after uint64
		limit int
		want  string
	}{
		{0, 10, "[2 3]"},
		{0, 1, "[2]"},
		{2, 10, "[3]"},
	}
	for name, st := range map[string]*SQLStore{"writer": s, "read-only store": ro} {
		for _, p := range pages {
			checkpoints, err := st.ListAuditCheckpoints(ctx, "c", p.after, p.limit)
			var seqs []uint64
			for _, c := range checkpoints {
				seqs = append(seqs, c.Seq)
			}
			if err != nil || fmt.Sprint(seqs) != p.want {
				t.Errorf("%s: ListAuditCheckpoints after %d, limit %d = %v, %v; want %s",
					name, p.after, p.limit, seqs, err, p.want)
			}
		}
		chains, err := st.ListAuditChains(ctx)
		if err != nil || len(chains) != 1 || chains[0].ID != "c" || chains[0].StartedAt.IsZero() {
			t.Errorf("%s: ListAuditChains = %+v, %v; want chain c once, from its file", name,
				chains, err)
		}
	}
}

// TestChainFileFailedCopyCleared makes the second page of a writer's mapped region
// read-only (mprotect). A batch that starts on the first page then stores its first lines
// and faults, as on a file system that rejects stores to some pages of a file. No line of
// the failed batch may stay readable, and the next append must write the batch in full.
func TestChainFileFailedCopyCleared(t *testing.T) {
	s, path := openChainClosedByTest(t, nil)
	defer s.Close()
	ctx := t.Context()
	w := s.files.openWriter("c")
	page := os.Getpagesize()
	if w.mapOff != 0 || w.size >= int64(page) || len(w.m) < 2*page {
		t.Fatalf("the region maps %d bytes from %d, and the lines end at %d: the test needs "+
			"them to end on the first of two pages", len(w.m), w.mapOff, w.size)
	}
	batch := fileRecords("c", 3, 2*page/len(appendRecordLine(nil, fileRecords("c", 3, 1)[0])))
	if err := syscall.Mprotect(w.m[page:2*page], syscall.PROT_READ); err != nil {
		t.Fatal(err)
	}

	err := s.AppendAudit(ctx, batch, nil)
	if !errors.Is(err, ErrChainFileNotWritable) || errors.Is(err, ErrChainFileCut) {
		t.Fatalf("AppendAudit across a read-only page = %v, want ErrChainFileNotWritable", err)
	}
	ro := openFileStore(t, path+"?mode=ro")
	if records, err := ro.ListAuditRecords(ctx, "c", 0, 100); err != nil || len(records) != 2 {
		t.Errorf("read-only store: ListAuditRecords after the failed batch = %d records, %v; "+
			"want the 2 written before", len(records), err)
	}

	if err := s.AppendAudit(ctx, batch, nil); err != nil {
		t.Fatalf("AppendAudit of the batch again: %v", err)
	}
	want := 2 + len(batch)
	if records, err := ro.ListAuditRecords(ctx, "c", 0, 100); err != nil || len(records) != want {
		t.Errorf("read-only store: ListAuditRecords = %d records, %v; want %d", len(records),
			err, want)
	}
}
