package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

var fileTestTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fileRecords returns n records of chain seq first to first+n-1.
func fileRecords(chainID string, first uint64, n int) []AuditRecord {
	records := make([]AuditRecord, n)
	for i := range records {
		seq := first + uint64(i)
		records[i] = AuditRecord{
			ChainID: chainID, Seq: seq, Time: fileTestTime.Add(time.Duration(seq) * time.Millisecond),
			RequestID: fmt.Sprintf("request-%d", seq), AccessKey: "AK0000000000000000001",
			ProjectID: "project-1", SourceIP: "127.0.0.1", Operation: "decrypt-datakey",
			KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f", KeyVersion: 1, Status: 200,
			PrevHash: bytes.Repeat([]byte{byte(seq - 1)}, 32),
			Hash:     bytes.Repeat([]byte{byte(seq)}, 32),
		}
	}
	return records
}

func openFileStore(t *testing.T, path string) *SQLStore {
	t.Helper()
	s, err := Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestChainFileLinesMatchEncodingJSON(t *testing.T) {
	strs := []struct {
		name  string
		value string
	}{
		{"plain", "decrypt-datakey"},
		{"quote and backslash", `a"b\c`},
		{"control characters", "a\nb\rc\td\x00e\x1f"},
		{"HTML characters", "<script>&</script>"},
		{"non-ASCII", "ключ 鍵 🔑"},
		{"line separators", "a\u2028b\u2029c"},
		{"invalid UTF-8", "a\xffb\xc3"},
	}
	for _, tc := range strs {
		t.Run(tc.name, func(t *testing.T) {
			r := fileRecords("chain", 7, 1)[0]
			r.RequestID, r.Sequence, r.SourceIP = tc.value, tc.value, tc.value
			got := appendRecordLine(nil, r)

			want, err := json.Marshal(fileLine{
				Type: fileLineRecord, ChainID: r.ChainID, Seq: r.Seq,
				Time: r.Time.Format(fileTimeLayout), RequestID: r.RequestID,
				AccessKey: r.AccessKey, ProjectID: r.ProjectID, SourceIP: r.SourceIP,
				Operation: r.Operation, KeyID: r.KeyID, KeyVersion: r.KeyVersion,
				Status: r.Status, Sequence: r.Sequence,
				PrevHash: fmt.Sprintf("%x", r.PrevHash), Hash: fmt.Sprintf("%x", r.Hash),
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want)+"\n" {
				t.Errorf("line:\n got  %s\n want %s", got, want)
			}
		})
	}
}

func TestChainFileLineHead(t *testing.T) {
	chain := appendChainLine(nil, AuditChain{ID: "c-1", StartedAt: fileTestTime, Host: "h"})
	record := appendRecordLine(nil, fileRecords("c-1", 42, 1)[0])
	checkpoint := appendCheckpointLine(nil, AuditCheckpoint{ChainID: "c-1", Seq: 9,
		RecordHash: []byte{1}, Signature: []byte{2}})
	tests := []struct {
		name    string
		line    []byte
		typ     string
		seq     uint64
		decoded bool // lineHead reads it without decoding
	}{
		{"chain", chain, fileLineChain, 0, true},
		{"record", record, fileLineRecord, 42, true},
		{"checkpoint", checkpoint, fileLineCheckpoint, 9, true},
		{"fields in another order", []byte(`{"seq":3,"type":"record"}`), "", 0, false},
		{"not JSON", []byte(`garbage`), "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ, seq, ok := lineHead(bytes.TrimSuffix(tc.line, []byte("\n")))
			if ok != tc.decoded || typ != tc.typ || seq != tc.seq {
				t.Errorf("lineHead = %q, %d, %v; want %q, %d, %v", typ, seq, ok, tc.typ, tc.seq,
					tc.decoded)
			}
		})
	}
}

// TestChainFilePagesReadFileOnce checks that reading a chain page by page returns what
// one read returns, and that a page can start anywhere.
func TestChainFilePagesReadFileOnce(t *testing.T) {
	s := openFileStore(t, filepath.Join(t.TempDir(), "kms.db"))
	ctx := t.Context()
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	for first := uint64(1); first <= 100; first += 10 {
		cp := AuditCheckpoint{ChainID: "c", Seq: first + 9, RecordHash: []byte{1},
			Signature: []byte{2}}
		err := s.AppendAudit(ctx, fileRecords("c", first, 10), []AuditCheckpoint{cp})
		if err != nil {
			t.Fatal(err)
		}
	}

	all, err := s.ListAuditRecords(ctx, "c", 0, 1000)
	if err != nil || len(all) != 100 {
		t.Fatalf("ListAuditRecords = %d records, %v; want 100", len(all), err)
	}
	var paged []AuditRecord
	for after := uint64(0); ; {
		page, err := s.ListAuditRecords(ctx, "c", after, 7)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if len(page) < 7 {
			break
		}
		after = page[len(page)-1].Seq
	}
	if !reflect.DeepEqual(paged, all) {
		t.Errorf("pages of 7 returned %d records that differ from one read", len(paged))
	}

	page, err := s.ListAuditRecords(ctx, "c", 55, 3)
	if err != nil || len(page) != 3 || page[0].Seq != 56 {
		t.Errorf("page after 55 = %+v, %v; want records 56 to 58", page, err)
	}
	checkpoints, err := s.ListAuditCheckpoints(ctx, "c", 30, 2)
	if err != nil || len(checkpoints) != 2 || checkpoints[0].Seq != 40 {
		t.Errorf("checkpoints after 30 = %+v, %v; want 40 and 50", checkpoints, err)
	}
}

// TestChainFilePartialLastLine checks that a line cut short by a crash is not read, and
// that the next writer cuts it off before it appends.
func TestChainFilePartialLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, fileRecords("c", 1, 3), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	file := filepath.Join(path+"-audit", "c.jsonl")
	partial := appendRecordLine(nil, fileRecords("c", 4, 1)[0])
	appendBytes(t, file, partial[:len(partial)/2])

	s = openFileStore(t, path)
	last, err := s.LastAuditRecord(ctx, "c")
	if err != nil || last.Seq != 3 {
		t.Fatalf("LastAuditRecord = %d, %v; want 3", last.Seq, err)
	}
	if err := s.AppendAudit(ctx, fileRecords("c", 4, 2), nil); err != nil {
		t.Fatalf("AppendAudit after a partial line: %v", err)
	}
	records, err := s.ListAuditRecords(ctx, "c", 0, 100)
	if err != nil || len(records) != 5 || records[4].Seq != 5 {
		t.Fatalf("ListAuditRecords = %d records, %v; want 1 to 5", len(records), err)
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("\n")); n != 6 {
		t.Errorf("chain file has %d lines, want 6 (header and five records)", n)
	}
}

func TestChainFileDamagedLine(t *testing.T) {
	cases := []struct {
		name string
		line string // written after record 2 of a chain of three records
	}{
		{"undecodable record", "{\"type\":\"record\",x}"},
		{"unknown type with a record head", `{"type":"junk","chain_id":"c","seq":9,"x":1}`},
		{"unknown type", `{"type":"junk"}`},
		{"chain line after the first", `{"type":"chain","chain_id":"c"}`},
		{"chain head with garbage", `{"type":"chain" arbitrary text`},
		{"plain text", "garbage"},
		{"seq not where kmsd writes it", `{"type":"record","seq":3,"chain_id":"c"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			path := writeClosedChain(t)
			file := filepath.Join(path+"-audit", "c.jsonl")
			appendBytes(t, file, []byte(tc.line+"\n"))

			s := openFileStore(t, path)
			_, recordsErr := s.ListAuditRecords(ctx, "c", 0, 10)
			_, checkpointsErr := s.ListAuditCheckpoints(ctx, "c", 0, 10)
			for what, err := range map[string]error{"ListAuditRecords": recordsErr,
				"ListAuditCheckpoints": checkpointsErr} {
				var damaged *ChainFileError
				if !errors.As(err, &damaged) {
					t.Errorf("%s = %v, want a *ChainFileError", what, err)
					continue
				}
				if damaged.ChainID != "c" || damaged.Line != 4 {
					t.Errorf("%s reports chain %q line %d, want chain c line 4", what,
						damaged.ChainID, damaged.Line)
				}
				if !errors.Is(err, ErrChainFileDamaged) {
					t.Errorf("%s = %v, want it to match ErrChainFileDamaged", what, err)
				}
			}
		})
	}
}

func TestChainFileDamagedHeaderListed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	s := openFileStore(t, path)
	ctx := t.Context()
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "good", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	dir := path + "-audit"
	bad := []byte(`{"type":"chain","chain_id":"bad","started_at":"yesterday"}` + "\n")
	if err := os.WriteFile(filepath.Join(dir, "bad.jsonl"), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stray.jsonl"), []byte("text\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	chains, err := s.ListAuditChains(ctx)
	if err != nil {
		t.Fatalf("ListAuditChains with damaged chain files: %v", err)
	}
	ids := map[string]bool{}
	for _, c := range chains {
		ids[c.ID] = true
	}
	for _, id := range []string{"good", "bad", "stray"} {
		if !ids[id] {
			t.Errorf("ListAuditChains = %v, want chain %s listed", chains, id)
		}
	}

	for _, id := range []string{"bad", "stray"} {
		_, err := s.ListAuditRecords(ctx, id, 0, 10)
		var damaged *ChainFileError
		if !errors.As(err, &damaged) || damaged.Line != 1 {
			t.Errorf("ListAuditRecords of chain %s = %v, want a *ChainFileError on line 1",
				id, err)
		}
	}
	if _, err := s.ListAuditRecords(ctx, "good", 0, 10); err != nil {
		t.Errorf("ListAuditRecords of the intact chain: %v", err)
	}
}

func TestChainFileOneWriterProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	first := openFileStore(t, path)
	ctx := t.Context()
	if err := first.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}

	// A second store on the same file plays a second process, because flock locks are
	// held per open file description. It shares the first store's lock of the SQLite
	// file, which would otherwise stop it before the chain file's lock can.
	second, err := OpenLocked(ctx, path, first.ownLock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	err = second.AppendAudit(ctx, fileRecords("c", 1, 1), nil)
	if !errors.Is(err, ErrConflict) {
		t.Errorf("AppendAudit to a chain another store writes = %v, want ErrConflict", err)
	}
	err = second.CreateAuditChain(ctx, AuditChain{ID: "c"})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("CreateAuditChain of an existing chain file = %v, want ErrConflict", err)
	}
	if err := first.AppendAudit(ctx, fileRecords("c", 1, 1), nil); err != nil {
		t.Errorf("AppendAudit by the writer: %v", err)
	}
}

// TestChainFilesAndTableMerge checks that chains in the audit_records table, which older
// versions of the store wrote, are listed and read beside chain files.
func TestChainFilesAndTableMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	s := openFileStore(t, path)
	ctx := t.Context()

	_, err := s.write.ExecContext(ctx, "INSERT INTO audit_chains (chain_id, started_at, host) "+
		"VALUES ('table-chain', ?, 'old')", fileTestTime.Add(time.Minute).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, fileRecords("table-chain", 1, 2), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []AuditChain{
		{ID: "file-early", StartedAt: fileTestTime, Host: "new"},
		{ID: "file-late", StartedAt: fileTestTime.Add(time.Hour), Host: "new"},
	} {
		if err := s.CreateAuditChain(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendAudit(ctx, fileRecords("file-late", 1, 3), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(path+"-audit", "table-chain.jsonl")); err == nil {
		t.Error("records of a table chain went to a chain file")
	}

	chains, err := s.ListAuditChains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range chains {
		ids = append(ids, c.ID)
	}
	if got := strings.Join(ids, " "); got != "file-early table-chain file-late" {
		t.Errorf("ListAuditChains = %s, want file-early table-chain file-late", got)
	}

	err = s.CreateAuditChain(ctx, AuditChain{ID: "table-chain"})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("CreateAuditChain of a table chain's id = %v, want ErrConflict", err)
	}
	for id, want := range map[string]uint64{"table-chain": 2, "file-late": 3} {
		last, err := s.LastAuditRecord(ctx, id)
		if err != nil || last.Seq != want {
			t.Errorf("LastAuditRecord(%s) = %d, %v; want %d", id, last.Seq, err, want)
		}
	}
}

func TestChainFilesReadOnlyStore(t *testing.T) {
	_, path := openChain(t) // the writer stays open while the read-only store reads
	ctx := t.Context()

	ro := openFileStore(t, path+"?mode=ro")
	records, err := ro.ListAuditRecords(ctx, "c", 0, 10)
	if err != nil || len(records) != 2 {
		t.Errorf("read-only ListAuditRecords = %d records, %v; want 2", len(records), err)
	}
	if err := ro.CreateAuditChain(ctx, AuditChain{ID: "d"}); err == nil {
		t.Error("a read-only store created a chain file")
	}
}

// TestChainFileShortWriteCutOff runs itself in a child process whose file size limit
// (RLIMIT_FSIZE) makes the kernel refuse to allocate the next mapped region, or write only
// part of a batch with write(2): faults of a full disk that a test cannot otherwise
// produce without mounting a file system. The batch must fail as a whole and leave no
// part of a line behind for the next batch.
func TestChainFileShortWriteCutOff(t *testing.T) {
	if dir := os.Getenv("KMS_TEST_SHORT_WRITE_DIR"); dir != "" {
		shortWriteChild(t, dir)
		return
	}

	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChainFileShortWriteCutOff$", "-test.v")
	cmd.Env = append(os.Environ(), "KMS_TEST_SHORT_WRITE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child process failed: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestChainFileShortWriteCutOff")) {
		t.Fatalf("child process did not run the test:\n%s", out)
	}
}

func shortWriteChild(t *testing.T, dir string) {
	tests := []struct {
		name     string
		noMap    bool // append with write(2), as on a file system without fallocate
		fileSize func(w *chainWriter) int64
	}{
		// The region mapped for the batch cannot be allocated.
		{"mapped", false, func(w *chainWriter) int64 { return w.mapOff + int64(len(w.m)) }},
		// The kernel writes only part of the batch.
		{"write(2)", true, func(w *chainWriter) int64 { return w.size }},
	}
	defer func(size int64) { auditFileMapSize = size }(auditFileMapSize)
	auditFileMapSize = 4096 // the batch below needs the next region

	nearlyFullChild(t, dir)

	for _, tc := range tests {
		path := filepath.Join(dir, tc.name, "kms.db")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		s, err := Open(ctx, path, nil) // closed below, before the reopen
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
			t.Fatal(err)
		}
		w, err := s.files.writer("c")
		if err != nil {
			t.Fatal(err)
		}
		if tc.noMap {
			if _, err := w.finish(); err != nil {
				t.Fatal(err)
			}
			w.noMap = true
		}
		if err := s.AppendAudit(ctx, fileRecords("c", 1, 2), nil); err != nil {
			t.Fatal(err)
		}
		before := tc.fileSize(w)

		var limit syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
			t.Fatal(err)
		}
		saved := limit
		limit.Cur = uint64(w.size) + 100
		if !tc.noMap {
			limit.Cur = uint64(before)
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
			t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
		}
		err = s.AppendAudit(ctx, fileRecords("c", 3, 20), nil)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &saved); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s: AppendAudit past the file size limit = %v, want ErrUnavailable",
				tc.name, err)
		}
		records, err := s.ListAuditRecords(ctx, "c", 0, 100)
		if err != nil || len(records) != 2 {
			t.Fatalf("%s: after the failed batch, ListAuditRecords = %d records, %v; want 2",
				tc.name, len(records), err)
		}

		if err := s.AppendAudit(ctx, fileRecords("c", 3, 20), nil); err != nil {
			t.Fatalf("%s: AppendAudit of the same batch again: %v", tc.name, err)
		}
		records, err = s.ListAuditRecords(ctx, "c", 0, 100)
		if err != nil || len(records) != 22 {
			t.Fatalf("%s: ListAuditRecords = %d records, %v; want 22", tc.name, len(records),
				err)
		}

		// Reopened, the file holds its lines and nothing after them.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(path+"-audit", "c.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() != w.size {
			t.Errorf("%s: closed chain file is %d bytes, want its %d bytes of lines",
				tc.name, info.Size(), w.size)
		}
		s = openFileStore(t, path)
		records, err = s.ListAuditRecords(ctx, "c", 0, 100)
		if err != nil || len(records) != 22 {
			t.Fatalf("%s: reopened, ListAuditRecords = %d records, %v; want 22", tc.name,
				len(records), err)
		}
	}
}

// nearlyFullChild checks that a writer that cannot allocate a whole region of
// auditFileMapSize bytes, because of the file size limit here as on a nearly full disk,
// allocates what a batch needs and goes on appending.
func nearlyFullChild(t *testing.T, dir string) {
	defer func(size int64) { auditFileMapSize = size }(auditFileMapSize)
	auditFileMapSize = 1 << 20

	ctx := t.Context()
	s := openFileStore(t, filepath.Join(dir, "nearly-full", "kms.db"))
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	w, err := s.files.writer("c")
	if err != nil {
		t.Fatal(err)
	}

	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	saved := limit
	limit.Cur = uint64(auditFileMapSize + 64<<10)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &saved); err != nil {
			t.Fatal(err)
		}
	}()

	// Past the first region, each next region of 1 MiB would cross the limit.
	seq := uint64(1)
	for w.written() < auditFileMapSize+16<<10 {
		if err := s.AppendAudit(ctx, fileRecords("c", seq, 10), nil); err != nil {
			t.Fatalf("nearly full: AppendAudit of records %d to %d: %v", seq, seq+9, err)
		}
		seq += 10
	}
}

// openChain opens a new store, closed when t ends, with chain c holding records 1 and 2
// in its chain file. It returns the store and the database path.
func openChain(t *testing.T) (*SQLStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	s := openFileStore(t, path)
	if err := s.CreateAuditChain(t.Context(), AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(t.Context(), fileRecords("c", 1, 2), nil); err != nil {
		t.Fatal(err)
	}
	return s, path
}

// writeClosedChain writes chain c with records 1 and 2 to the chain file of a new store
// and closes the store, so that no writer cuts off what the test appends to the file. It
// returns the database path.
func writeClosedChain(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	err = s.CreateAuditChain(t.Context(), AuditChain{ID: "c", StartedAt: fileTestTime})
	if err == nil {
		err = s.AppendAudit(t.Context(), fileRecords("c", 1, 2), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestChainFileZeroBytes checks how readers treat the zero bytes that a writer leaves
// after its lines in the region it allocated ahead of them, and what a read-write store
// cuts off at open. Zero bytes after the last line, or after a partial line, end the
// chain. Zero bytes with data after them are damage to a reader. At open, a file that
// does not end with a newline loses everything after its last complete line. That is a
// killed writer's zero bytes and the line or batch it was copying, whose bytes a copy
// into the mapping may have stored in any order.
func TestChainFileZeroBytes(t *testing.T) {
	tests := []struct {
		name     string
		tail     []byte // written after the two records of a closed chain file
		damaged  bool   // to a read-only store, which cuts nothing
		wantLine int
		cut      int // bytes of tail that a read-write store cuts off
	}{
		{"zero bytes after the last line", make([]byte, 9000), false, 0, 9000},
		{"a partial line, then zero bytes", append([]byte(`{"type":"rec`), make([]byte, 100)...),
			false, 0, 112},
		{"zero bytes, then a partial line", append(make([]byte, 6), []byte(`":"record","c`)...),
			true, 4, 19},
		{"a batch cut short", []byte("{\"type\":\x00\x00\x00\"x\"}\n{\"type\":\"y\"}"),
			true, 4, 28},
		{"zero bytes, then a line", append(make([]byte, 100), []byte("{\"type\":\"x\"}\n")...),
			true, 4, 0},
		{"a line with zero bytes in it", []byte("{\"type\":\"record\",\x00\x00\"seq\":3}\n"),
			true, 4, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			path := writeClosedChain(t)
			file := filepath.Join(path+"-audit", "c.jsonl")
			before, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			appendBytes(t, file, tc.tail)

			// Read-only, so that the store does not trim the zero bytes first.
			ro := openFileStore(t, path+"?mode=ro")
			records, err := ro.ListAuditRecords(ctx, "c", 0, 10)
			var damaged *ChainFileError
			switch {
			case tc.damaged && !errors.As(err, &damaged):
				t.Fatalf("ListAuditRecords = %v, want a *ChainFileError", err)
			case tc.damaged && damaged.Line != tc.wantLine:
				t.Errorf("damage reported at line %d, want %d", damaged.Line, tc.wantLine)
			case !tc.damaged && (err != nil || len(records) != 2):
				t.Errorf("ListAuditRecords = %d records, %v; want 2", len(records), err)
			}

			// A read-write store cuts the unwritten end off, and a writer that opens the
			// file goes on after the last complete line.
			s := openFileStore(t, path)
			after, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if want := before.Size() + int64(len(tc.tail)-tc.cut); after.Size() != want {
				t.Errorf("the store opened the file of %d bytes and left %d, want %d",
					before.Size()+int64(len(tc.tail)), after.Size(), want)
			}
			if tc.cut < len(tc.tail) {
				return // damage before the end stays for verification to report
			}
			if err := s.AppendAudit(ctx, fileRecords("c", 3, 1), nil); err != nil {
				t.Fatalf("AppendAudit after the unwritten end: %v", err)
			}
			if records, err = s.ListAuditRecords(ctx, "c", 0, 10); err != nil || len(records) != 3 {
				t.Errorf("ListAuditRecords after an append = %d records, %v; want 3",
					len(records), err)
			}
		})
	}
}

// TestChainFileCutUnderTheWriter cuts a chain file short while its writer has it mapped.
// A store past the end of the file raises SIGBUS, which must fail the append instead of
// ending the process. A store within the file's last page does not fault, so flush finds
// the cut by the file's length. Either way, every later append fails with
// ErrChainFileCut and leaves the file as the cut left it.
func TestChainFileCutUnderTheWriter(t *testing.T) {
	tests := []struct {
		name  string
		cut   func(size int64) int64 // the length the file is cut to
		flush bool                   // flush before the append, as the writer does every 250 ms
	}{
		{"to nothing", func(int64) int64 { return 0 }, false},
		{"by a few bytes", func(size int64) int64 { return size - 10 }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openChain(t)
			ctx := t.Context()
			file := filepath.Join(path+"-audit", "c.jsonl")
			w := s.files.openWriter("c")

			length := tc.cut(w.written())
			if err := os.Truncate(file, length); err != nil {
				t.Fatal(err)
			}
			if tc.flush {
				if err := s.files.flushAll(); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				err := s.AppendAudit(ctx, fileRecords("c", 3, 1), nil)
				if !errors.Is(err, ErrChainFileCut) {
					t.Fatalf("append %d to a file cut short = %v, want ErrChainFileCut", i+1, err)
				}
			}
			info, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size() != length {
				t.Errorf("the cut file is %d bytes, want the %d the cut left", info.Size(),
					length)
			}
		})
	}
}

// TestChainFileReadWhileWritten reads a chain through a second, read-only store while
// the first store appends to it, as kmsctl does on a running kmsd's data directory. The
// reader meets the writer's zero bytes at every end of the written lines, and must never
// take them for damage.
func TestChainFileReadWhileWritten(t *testing.T) {
	const reads = 2000
	s, path := openChain(t)
	ro := openFileStore(t, path+"?mode=ro")
	ctx := t.Context()

	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for seq := uint64(3); ; seq++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := s.AppendAudit(ctx, fileRecords("c", seq, 1), nil); err != nil {
				done <- err
				return
			}
			time.Sleep(50 * time.Microsecond) // so that the reader keeps up
		}
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("AppendAudit: %v", err)
		}
	}()

	after := uint64(0)
	for read := range reads {
		records, err := ro.ListAuditRecords(ctx, "c", after, 1<<20)
		if err != nil {
			t.Fatalf("read %d: ListAuditRecords while the writer appends: %v", read, err)
		}
		for _, r := range records {
			if r.Seq != after+1 {
				t.Fatalf("read %d: record %d follows record %d", read, r.Seq, after)
			}
			after = r.Seq
		}
	}
	t.Logf("%d reads saw %d records", reads, after)
}

// TestChainFileDamagedFirstLine checks that a chain file whose first line is damaged
// is still listed with the other chains, and that only its own reads fail.
func TestChainFileDamagedFirstLine(t *testing.T) {
	path := writeClosedChain(t)
	s := openFileStore(t, path)
	ctx := t.Context()
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "d", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(filepath.Join(path+"-audit", "c.jsonl"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0, 0, 0, 0}, 10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	chains, err := s.ListAuditChains(ctx)
	if err != nil {
		t.Fatalf("ListAuditChains with a damaged first line: %v", err)
	}
	var ids []string
	for _, c := range chains {
		ids = append(ids, c.ID)
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[c d]" {
		t.Errorf("ListAuditChains lists %v, want c and d", ids)
	}
	_, err = s.ListAuditRecords(ctx, "c", 0, 10)
	var damaged *ChainFileError
	if !errors.As(err, &damaged) || damaged.Line != 1 {
		t.Errorf("ListAuditRecords of the damaged chain = %v, want damage at line 1", err)
	}
	if _, err := s.ListAuditRecords(ctx, "d", 0, 10); err != nil {
		t.Errorf("ListAuditRecords of the intact chain: %v", err)
	}
}

// TestChainFileAppendedByOthersCut appends to a chain file that a store writes: the
// store does not read those bytes, cuts them off when it closes, and logs that it did.
func TestChainFileAppendedByOthersCut(t *testing.T) {
	var logs bytes.Buffer
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(t.Context(), path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	err = s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime})
	if err == nil {
		err = s.AppendAudit(ctx, fileRecords("c", 1, 2), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(path+"-audit", "c.jsonl")
	appendBytes(t, file, []byte(`{"type":"record","chain_id":"c","seq":3}`+"\n"))

	if records, err := s.ListAuditRecords(ctx, "c", 0, 10); err != nil || len(records) != 2 {
		t.Errorf("ListAuditRecords = %d records, %v; want the 2 the store wrote",
			len(records), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "another program appended") {
		t.Errorf("the log does not report the bytes cut off:\n%s", logs.String())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"seq":3`)) || bytes.IndexByte(data, 0) >= 0 {
		t.Errorf("the closed chain file keeps bytes after its lines:\n%q", data)
	}
}

// TestChainFileNonCanonicalLine changes lines of a chain file in ways that keep every
// hashed field as it was, and checks that the reader reports each change as damage.
func TestChainFileNonCanonicalLine(t *testing.T) {
	records := fileRecords("c", 1, 2)
	records[0].Hash = bytes.Repeat([]byte{0xab}, 32)
	records[1].KeyID = "a<b" // written as a\u003cb, as encoding/json writes it
	chain := string(appendChainLine(nil, AuditChain{ID: "c", StartedAt: fileTestTime}))
	first := strings.TrimSuffix(string(appendRecordLine(nil, records[0])), "\n")
	second := strings.TrimSuffix(string(appendRecordLine(nil, records[1])), "\n")
	checkpoint := strings.TrimSuffix(string(appendCheckpointLine(nil, AuditCheckpoint{
		ChainID: "c", Seq: 2, RecordHash: records[1].Hash, Signature: []byte{0x30}})), "\n")
	withField := func(line, field string) string {
		return strings.TrimSuffix(line, "}") + "," + field + "}"
	}

	tests := []struct {
		name      string
		lines     []string // after the chain line
		wantLine  int      // the damaged line, 0 for none
		inRecords bool     // ListAuditRecords reports it, else ListAuditCheckpoints
	}{
		{"untouched", []string{first, second, checkpoint}, 0, true},
		{"field of a chain line in a record", []string{withField(first, `"host":"vm"`), second,
			checkpoint}, 2, true},
		{"explicit empty field", []string{withField(first, `"grant_id":""`), second,
			checkpoint}, 2, true},
		{"escape removed", []string{first, strings.Replace(second, `\u003c`, "<", 1),
			checkpoint}, 3, true},
		{"space after the object", []string{first + " ", second, checkpoint}, 2, true},
		{"carriage return", []string{first + "\r", second, checkpoint}, 2, true},
		{"upper-case hex", []string{strings.Replace(first, "abab", "ABAB", 1), second,
			checkpoint}, 2, true},
		{"line of another chain", []string{first,
			strings.Replace(second, `"chain_id":"c"`, `"chain_id":"d"`, 1), checkpoint}, 3, true},
		{"checkpoint before its record", []string{first, checkpoint, second}, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeClosedChain(t)
			file := filepath.Join(path+"-audit", "c.jsonl")
			text := chain + strings.Join(tt.lines, "\n") + "\n"
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}

			s := openFileStore(t, path)
			_, recordsErr := s.ListAuditRecords(t.Context(), "c", 0, 10)
			_, checkpointsErr := s.ListAuditCheckpoints(t.Context(), "c", 0, 10)
			err, other := checkpointsErr, recordsErr
			if tt.inRecords {
				err, other = recordsErr, checkpointsErr
			}
			if other != nil {
				t.Errorf("the other listing failed too: %v", other)
			}
			if tt.wantLine == 0 {
				if err != nil {
					t.Errorf("untouched chain file: %v", err)
				}
				return
			}
			var damaged *ChainFileError
			if !errors.As(err, &damaged) {
				t.Fatalf("got %v, want a *ChainFileError", err)
			}
			if damaged.Line != tt.wantLine {
				t.Errorf("damage reported on line %d (%s), want line %d", damaged.Line,
					damaged.Reason, tt.wantLine)
			}
		})
	}
}

// TestChainFileFlushUnmapsWritten checks that a flush unmaps the full pages before the
// end of the lines, so that writing them back needs no TLB flush. Appends after the
// flush, reads and closing the file must work as before.
func TestChainFileFlushUnmapsWritten(t *testing.T) {
	tests := []struct {
		name    string
		records int // appended before the flush, after the first two
		moves   bool
	}{
		{"end in the first page", 1, false},
		{"end several pages in", 60, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s, err := Open(ctx, filepath.Join(t.TempDir(), "kms.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					s.Close()
				}
			}()
			err = s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime})
			if err == nil {
				err = s.AppendAudit(ctx, fileRecords("c", 1, 2+tt.records), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			chainFile := s.files.path("c")

			w := s.files.openWriter("c")
			w.mu.Lock()
			startBefore, endBefore := w.mapOff, w.mapOff+int64(len(w.m))
			w.mu.Unlock()

			if err := w.flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}

			w.mu.Lock()
			page := int64(os.Getpagesize())
			start, end, size := w.mapOff, w.mapOff+int64(len(w.m)), w.size
			w.mu.Unlock()
			wantStart := startBefore
			if tt.moves {
				wantStart = size / page * page
			}
			if start != wantStart || end != endBefore {
				t.Errorf("mapped region after the flush = [%d, %d), want [%d, %d) "+
					"(before: [%d, %d), lines end at %d)",
					start, end, wantStart, endBefore, startBefore, endBefore, size)
			}

			last := uint64(2 + tt.records)
			if err := s.AppendAudit(ctx, fileRecords("c", last+1, 5), nil); err != nil {
				t.Fatalf("AppendAudit after the flush: %v", err)
			}
			records, err := s.ListAuditRecords(ctx, "c", 0, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(records) != int(last)+5 {
				t.Fatalf("read %d records, want %d", len(records), last+5)
			}
			for i, r := range records {
				if r.Seq != uint64(i)+1 {
					t.Fatalf("record %d has seq %d", i+1, r.Seq)
				}
			}

			closed = true
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(chainFile)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.IndexByte(data, 0) >= 0 || !bytes.HasSuffix(data, []byte("\n")) {
				t.Errorf("closed chain file holds zero bytes or lacks its last newline")
			}
		})
	}
}

// TestChainFileFullDiskKeepsFreeSpace checks that a writer on a nearly full ext4 file
// system, whose region allocation fails part way, does not keep the blocks it got. It
// needs root and a loop device, and skips without them.
func TestChainFileFullDiskKeepsFreeSpace(t *testing.T) {
	dir := mountSmallExt4(t, 16<<20)

	// Leave about 2 MiB free, less than the 4 MiB region a new chain file allocates.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bavail) * fs.Bsize
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if err := syscall.Fallocate(int(filler.Fd()), 0, 0, free-2<<20); err != nil {
		t.Fatalf("fill the file system: %v", err)
	}

	ctx := t.Context()
	s := openFileStore(t, filepath.Join(dir, "kms.db"))
	if err := s.CreateAuditChain(ctx, AuditChain{ID: "c", StartedAt: fileTestTime}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, fileRecords("c", 1, 3), nil); err != nil {
		t.Fatalf("AppendAudit on a nearly full file system: %v", err)
	}

	var st syscall.Stat_t
	if err := syscall.Stat(s.files.path("c"), &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > 64<<10 {
		t.Errorf("chain file holds %d bytes of disk after a failed region allocation, "+
			"want at most %d", allocated, 64<<10)
	}
}

// mountSmallExt4 mounts a new ext4 file system of size bytes, in a loop device, on a new
// directory that it returns, and unmounts it when t ends.
func mountSmallExt4(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a file system needs root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 is not installed")
	}

	image := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(image, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}

	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", image, dir).CombinedOutput(); err != nil {
		t.Skipf("mounting a loop device failed: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestCopyLinesStoresInOrder copies a batch of 4,000 bytes into memory whose second page
// faults, as a killed or faulting writer stops in the middle of a copy. The bytes before
// the fault must all be stored, so that an interrupted copy never leaves zero bytes with
// data after them. The destination is not 16-byte aligned, which made runtime.memmove
// store the first 32 bytes after the rest.
func TestCopyLinesStoresInOrder(t *testing.T) {
	page := os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[page:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}

	batch := bytes.Repeat([]byte("0123456789abcdef"), 250)
	batch[len(batch)-1] = '\n'
	const before = 3000 // bytes of the batch that fit before the faulting page
	start := page - before
	if start%16 == 0 {
		t.Fatalf("destination offset %d is 16-byte aligned", start)
	}

	if err := copyLines(mem[start:start+len(batch)], batch); err == nil {
		t.Fatal("copyLines into a page without access returned no error")
	}
	stored := mem[start:page]
	if z := bytes.IndexByte(stored, 0); z >= 0 {
		t.Errorf("byte %d of the batch is zero although the copy faulted only at byte %d",
			z, before)
	}
	if !bytes.Equal(stored, batch[:before]) {
		t.Error("the bytes before the fault differ from the batch")
	}
}
