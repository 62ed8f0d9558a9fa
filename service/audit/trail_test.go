package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// openToken opens a fresh SoftHSM2 token, closed when t ends.
func openToken(t testing.TB) *hsm.Module {
	t.Helper()
	setup := softhsmtest.NewTestToken(t)
	pin, err := setup.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := hsm.Open(t.Context(), hsm.Config{
		ModulePath: setup.ModulePath, TokenLabel: setup.TokenLabel, PIN: pin,
	}, nil)
	if err != nil {
		t.Fatalf("open token: %v", err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

// openSQLite opens a store on a new SQLite file, closed when t ends.
func openSQLite(t testing.TB, path string) *store.SQLStore {
	t.Helper()
	st, err := store.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func verify(t *testing.T, st audit.Source, trail *audit.Trail) audit.Report {
	t.Helper()
	key, err := trail.PublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	report, err := audit.VerifySource(t.Context(), st, key)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return report
}

func TestTrailGroupCommitsConcurrentCallers(t *testing.T) {
	tests := []struct {
		name      string
		batchSize int
		want      []int
	}{
		{"one batch of 64", 64, []int{64}},
		{"four batches of 16", 16, []int{16, 16, 16, 16}},
	}
	tok := openToken(t)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))
			sizes := &audit.SizeLog{}
			// A MaxDelay far longer than the test makes batches close only when full.
			trail, err := audit.Open(t.Context(), st, tok, audit.Config{
				BatchSize: tc.batchSize, MaxDelay: time.Hour, Observer: sizes,
			})
			if err != nil {
				t.Fatal(err)
			}

			var wg sync.WaitGroup
			errs := make([]error, 64)
			for i := range 64 {
				wg.Go(func() {
					errs[i] = trail.Record(context.Background(), audit.Record{
						RequestID: fmt.Sprintf("request-%d", i), Operation: "encrypt-datakey",
						Status: 200,
					})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("caller %d: Record failed: %v", i, err)
				}
			}
			if err := trail.Close(); err != nil {
				t.Fatal(err)
			}

			if got := sizes.String(); got != fmt.Sprint(tc.want) {
				t.Errorf("batch sizes = %s, want %v", got, tc.want)
			}
			report := verify(t, st, trail)
			if len(report.Chains) != 1 || report.Chains[0].Records != 64 {
				t.Errorf("report = %+v, want one chain of 64 records", report)
			}
			if report.UnsignedRecords() != 0 {
				t.Errorf("%d records unsigned after Close", report.UnsignedRecords())
			}
		})
	}
}

// TestTrailInlineCommitsConcurrentCallers checks the inline commits of a chain file
// under concurrent callers: every record is in the chain once, in an unbroken run of
// seqs that verifies, and the checkpoints signed along the way cover all of it.
func TestTrailInlineCommitsConcurrentCallers(t *testing.T) {
	const callers, perCaller = 32, 100
	tok := openToken(t)
	st := openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))
	trail, err := audit.Open(t.Context(), st, tok, audit.Config{CheckpointRecords: 50})
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range perCaller {
				r := audit.Record{RequestID: fmt.Sprintf("%d-%d", c, i), Status: 200}
				if err := trail.Record(context.Background(), r); err != nil {
					t.Errorf("Record(%s): %v", r.RequestID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}

	records, err := st.ListAuditRecords(t.Context(), trail.ChainID(), 0, 2*callers*perCaller)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, r := range records {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i+1, r.Seq)
		}
		if seen[r.RequestID] {
			t.Errorf("request %s recorded twice", r.RequestID)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != callers*perCaller {
		t.Errorf("%d distinct records, want %d", len(seen), callers*perCaller)
	}

	report := verify(t, st, trail)
	if len(report.Chains) != 1 || report.Chains[0].Records != callers*perCaller {
		t.Errorf("report = %+v, want one chain of %d records", report, callers*perCaller)
	}
	if report.UnsignedRecords() != 0 {
		t.Errorf("%d records unsigned after Close", report.UnsignedRecords())
	}
}

// TestTrailNewChainAfterCut cuts the chain file of a running trail short. The next
// Record must succeed in a new chain that verifies, and the trail must log the cut: a
// chain cut at a line end reads as a shorter chain, which verification cannot tell from
// one that ended there.
func TestTrailNewChainAfterCut(t *testing.T) {
	tok := openToken(t)
	path := filepath.Join(t.TempDir(), "kms.db")
	st := openSQLite(t, path)
	var logs lockedBuffer
	trail, err := audit.Open(t.Context(), st, tok, audit.Config{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := trail.Record(t.Context(), audit.Record{RequestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	cutID := trail.ChainID()
	if err := os.Truncate(filepath.Join(path+"-audit", cutID+".jsonl"), 0); err != nil {
		t.Fatal(err)
	}

	if err := trail.Record(t.Context(), audit.Record{RequestID: "after the cut"}); err != nil {
		t.Fatalf("Record after the cut: %v", err)
	}
	newID := trail.ChainID()
	if newID == cutID {
		t.Fatalf("the trail still writes chain %s after it was cut", cutID)
	}
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "chain_id="+cutID) ||
		!strings.Contains(logs.String(), "cut short") {
		t.Errorf("the log does not report the cut of chain %s:\n%s", cutID, logs.String())
	}

	records, err := st.ListAuditRecords(t.Context(), newID, 0, 10)
	if err != nil || len(records) != 1 || records[0].RequestID != "after the cut" {
		t.Errorf("records of the new chain = %+v, %v; want the record after the cut",
			records, err)
	}
	report := verify(t, st, trail)
	for _, c := range report.Chains {
		if c.ChainID == newID && (c.Records != 1 || c.UnsignedTail != 0) {
			t.Errorf("new chain in the report = %+v, want 1 signed record", c)
		}
	}
}

func TestTrailCheckpointsEveryNRecords(t *testing.T) {
	tok := openToken(t)
	st := openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))
	trail, err := audit.Open(t.Context(), st, tok, audit.Config{CheckpointRecords: 10})
	if err != nil {
		t.Fatal(err)
	}

	for i := range 25 {
		if err := trail.Record(t.Context(), audit.Record{RequestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	checkpoints, err := st.ListAuditCheckpoints(t.Context(), trail.ChainID(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkpointSeqs(checkpoints); got != "[10 20]" {
		t.Errorf("checkpoints before Close sign records %s, want [10 20]", got)
	}

	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	checkpoints, err = st.ListAuditCheckpoints(t.Context(), trail.ChainID(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkpointSeqs(checkpoints); got != "[10 20 25]" {
		t.Errorf("checkpoints after Close sign records %s, want [10 20 25]", got)
	}
	verify(t, st, trail)

	if err := trail.Record(t.Context(), audit.Record{}); err != audit.ErrClosed {
		t.Errorf("Record after Close = %v, want ErrClosed", err)
	}
}

func TestTrailCheckpointsAfterInterval(t *testing.T) {
	tok := openToken(t)
	st := openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))
	trail, err := audit.Open(t.Context(), st, tok, audit.Config{
		CheckpointInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()

	if err := trail.Record(t.Context(), audit.Record{RequestID: "only"}); err != nil {
		t.Fatal(err)
	}

	// Wait for the event, not for a time: the bound only keeps a broken trail from
	// hanging the test.
	deadline := time.Now().Add(30 * time.Second)
	for {
		checkpoints, err := st.ListAuditCheckpoints(t.Context(), trail.ChainID(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(checkpoints) == 1 && checkpoints[0].Seq == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of record 1 was written; checkpoints: %v",
				checkpointSeqs(checkpoints))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTrailAcknowledgedRecordIsDurable(t *testing.T) {
	tok := openToken(t)
	path := filepath.Join(t.TempDir(), "kms.db")
	trail, err := audit.Open(t.Context(), openSQLite(t, path), tok, audit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()

	if err := trail.Record(t.Context(), audit.Record{RequestID: "acknowledged"}); err != nil {
		t.Fatal(err)
	}

	// A second process that opens the file reads the record while the trail still runs. It
	// opens the file read-only, as kmsctl does, because the trail's store holds the
	// file's writer lock.
	other := openSQLite(t, "file:"+path+"?mode=ro")
	last, err := other.LastAuditRecord(t.Context(), trail.ChainID())
	if err != nil {
		t.Fatalf("acknowledged record not in the database: %v", err)
	}
	if last.RequestID != "acknowledged" {
		t.Errorf("last record is %q, want acknowledged", last.RequestID)
	}
}

func checkpointSeqs(checkpoints []store.AuditCheckpoint) string {
	seqs := make([]uint64, len(checkpoints))
	for i, c := range checkpoints {
		seqs[i] = c.Seq
	}
	return fmt.Sprint(seqs)
}

// TestTrailInvalidUTF8Verifies checks that a request field with invalid UTF-8 or NUL is
// stored so that the trail still verifies, through the store and through an export.
func TestTrailInvalidUTF8Verifies(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))
	trail, err := audit.Open(t.Context(), st, openToken(t), audit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = trail.Record(t.Context(), audit.Record{RequestID: "r", Operation: "create-datakey",
		Status: 400, Sequence: "seq-\xff\xfe-end", SourceIP: "10.0.0.1\xc3",
		KeyID: "key-\x00-id"})
	if err != nil {
		t.Fatal(err)
	}
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}

	records, err := st.ListAuditRecords(t.Context(), trail.ChainID(), 0, 10)
	if err != nil || len(records) != 1 {
		t.Fatalf("ListAuditRecords = %d records, %v; want 1", len(records), err)
	}
	if got, want := records[0].Sequence, "seq-\ufffd\ufffd-end"; got != want {
		t.Errorf("stored sequence = %q, want %q", got, want)
	}
	if got, want := records[0].KeyID, "key-\ufffd-id"; got != want {
		t.Errorf("stored key id = %q, want %q: PostgreSQL cannot store NUL", got, want)
	}
	verify(t, st, trail)
	if _, err := verifyExport(t, st, trail); err != nil {
		t.Errorf("verify the export: %v", err)
	}
}

// verifyExport exports st and verifies the export with the public key of trail.
func verifyExport(t *testing.T, st audit.Source, trail *audit.Trail) (audit.Report, error) {
	t.Helper()
	var export bytes.Buffer
	if err := audit.Export(t.Context(), st, &export); err != nil {
		t.Fatal(err)
	}
	key, err := trail.PublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return audit.VerifyExport(&export, key)
}
