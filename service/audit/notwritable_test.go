package audit_test

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

// openTrailOnFile opens a trail on a new SQLite store, with chain files, that logs to logs,
// and records n records. It returns the trail, the store and the path of the chain file.
func openTrailOnFile(t *testing.T, logs *lockedBuffer, n int) (*audit.Trail, *store.SQLStore,
	string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	st := openSQLite(t, path)
	trail, err := audit.Open(t.Context(), st, openToken(t), audit.Config{
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	for i := range n {
		if err := trail.Record(t.Context(), audit.Record{RequestID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	return trail, st, filepath.Join(path+"-audit", trail.ChainID()+".jsonl")
}

// recordWhileNotWritable records one record, which must fail because the chain file
// cannot be written, and checks that the trail reports the failure and keeps its chain.
func recordWhileNotWritable(t *testing.T, trail *audit.Trail, chainID string) {
	t.Helper()
	err := trail.Record(t.Context(), audit.Record{RequestID: "while not writable"})
	if !errors.Is(err, store.ErrChainFileNotWritable) {
		t.Fatalf("Record to an immutable chain file = %v, want ErrChainFileNotWritable", err)
	}
	if trail.Healthy() == nil {
		t.Error("Healthy reports no failure while the chain file cannot be written")
	}
	if trail.ChainID() != chainID {
		t.Errorf("the trail moved to chain %s, want it to keep chain %s", trail.ChainID(),
			chainID)
	}
}

// TestTrailChainFileNotWritable makes the chain file of a running trail immutable. Records
// must fail without a new chain, and the log must report that the file cannot be
// written, not that it was cut, with the records written and signed. The trail must sign the end
// of the chain in the database. Once the flag is cleared, the trail goes on in the same
// chain, which verifies.
func TestTrailChainFileNotWritable(t *testing.T) {
	var logs lockedBuffer
	trail, st, file := openTrailOnFile(t, &logs, 3)
	chainID := trail.ChainID()

	storetest.SetImmutable(t, file)
	for range 2 {
		recordWhileNotWritable(t, trail, chainID)
	}
	text := logs.String()
	for _, want := range []string{"audit chain file cannot be written", "chain_id=" + chainID,
		"written_through=3", "signed_through=3", "failed_records=1"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log does not contain %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "audit chain file cannot be written;"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, text)
	}
	if strings.Contains(text, "cut short") {
		t.Errorf("the log reports a cut of a file that was not cut:\n%s", text)
	}
	checkpoints, err := st.ListAuditCheckpoints(t.Context(), chainID, 0, 10)
	if err != nil || checkpointSeqs(checkpoints) != "[3]" {
		t.Errorf("checkpoints while the file cannot be written = %s, %v; want [3]",
			checkpointSeqs(checkpoints), err)
	}

	storetest.ClearImmutable(t, file)
	if err := trail.Record(t.Context(), audit.Record{RequestID: "after"}); err != nil {
		t.Fatalf("Record once the chain file is writable again: %v", err)
	}
	if trail.ChainID() != chainID {
		t.Errorf("the trail moved to chain %s after the flag was cleared", trail.ChainID())
	}
	if err := trail.Healthy(); err != nil {
		t.Errorf("Healthy after a successful write: %v", err)
	}
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}

	records, err := st.ListAuditRecords(t.Context(), chainID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range records {
		ids = append(ids, r.RequestID)
	}
	if got := strings.Join(ids, " "); got != "0 1 2 after" {
		t.Errorf("records of the chain = %s, want 0 1 2 after", got)
	}
	report := verify(t, st, trail)
	if len(report.Chains) != 1 || report.Chains[0].Records != 4 ||
		report.Chains[0].Checkpoints != 2 || report.Chains[0].UnsignedTail != 0 {
		t.Errorf("report = %+v, want one chain of 4 records, signed at 3 and 4", report)
	}
}

// TestTrailCloseWhileFileNotWritable closes a trail whose chain file is immutable.
// The chain must end signed, through the checkpoint in the database, in the store and in
// an export.
func TestTrailCloseWhileFileNotWritable(t *testing.T) {
	var logs lockedBuffer
	trail, st, file := openTrailOnFile(t, &logs, 3)
	chainID := trail.ChainID()

	storetest.SetImmutable(t, file)
	recordWhileNotWritable(t, trail, chainID)
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "records=3 signed_through=3") {
		t.Errorf("the log does not report the chain stopped at record 3, signed:\n%s",
			logs.String())
	}

	report := verify(t, st, trail)
	if len(report.Chains) != 1 || report.Chains[0].Records != 3 ||
		report.Chains[0].UnsignedTail != 0 {
		t.Errorf("report = %+v, want one chain of 3 signed records", report)
	}
	exported, err := verifyExport(t, st, trail)
	if err != nil || len(exported.Chains) != 1 || exported.Chains[0].UnsignedTail != 0 {
		t.Errorf("verify the export = %+v, %v; want one chain without unsigned records",
			exported, err)
	}
}

// TestTrailUnsignedEndReported makes the chain file and the SQLite
// WAL immutable, so that the end of the chain can be signed nowhere. The log and
// verification must both report the records after the last checkpoint as unsigned.
func TestTrailUnsignedEndReported(t *testing.T) {
	var logs lockedBuffer
	trail, st, file := openTrailOnFile(t, &logs, 3)
	chainID := trail.ChainID()
	wal := filepath.Join(filepath.Dir(filepath.Dir(file)), "kms.db-wal")

	storetest.SetImmutable(t, wal)
	storetest.SetImmutable(t, file)
	recordWhileNotWritable(t, trail, chainID)
	if err := trail.Close(); err != nil {
		t.Fatal(err)
	}
	text := logs.String()
	for _, want := range []string{"written_through=3 signed_through=0",
		"final audit checkpoint write failed", "records=3 signed_through=0"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log does not contain %q:\n%s", want, text)
		}
	}

	report := verify(t, st, trail)
	if len(report.Chains) != 1 || report.Chains[0].Records != 3 ||
		report.Chains[0].UnsignedTail != 3 {
		t.Errorf("report = %+v, want one chain of 3 records, all unsigned", report)
	}
}
