package audit_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// chainRecords returns n correctly chained records of chain id. Record replaced, when not
// 0, has another source address, and it and every later record are hashed again, as
// someone rewriting the chain would do.
func chainRecords(id string, n int, replaced uint64) []store.AuditRecord {
	records := make([]store.AuditRecord, n)
	var prev []byte
	for i := range records {
		r := store.AuditRecord{ChainID: id, Seq: uint64(i + 1),
			Time:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Second),
			RequestID: "req", Operation: "decrypt-datakey", Status: 200, SourceIP: "127.0.0.1",
			PrevHash: prev}
		if r.Seq == replaced {
			r.SourceIP = "10.9.9.9"
		}
		r.Hash = audit.RecordHash(r)
		records[i], prev = r, r.Hash
	}
	return records
}

// signCheckpoint returns the checkpoint of record r signed with key.
func signCheckpoint(t *testing.T, key *ecdsa.PrivateKey, r store.AuditRecord) store.AuditCheckpoint {
	t.Helper()
	sig, err := ecdsa.SignASN1(rand.Reader, key, audit.CheckpointDigest(r.ChainID, r.Seq, r.Hash))
	if err != nil {
		t.Fatal(err)
	}
	return store.AuditCheckpoint{ChainID: r.ChainID, Seq: r.Seq, RecordHash: r.Hash, Signature: sig}
}

func TestVerifierCheckpointOrder(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const id = "chain-1"
	original := chainRecords(id, 5, 0)
	cp3, cp5 := signCheckpoint(t, key, original[2]), signCheckpoint(t, key, original[4])
	rewritten := chainRecords(id, 5, 3)

	// fileOrder puts each checkpoint right after the record it signs, as chain files do;
	// exportOrder puts the checkpoints first, as Walk and exports do.
	fileOrder := func(records []store.AuditRecord) []audit.Line {
		lines := []audit.Line{audit.ChainLine(store.AuditChain{ID: id})}
		for _, r := range records {
			lines = append(lines, audit.RecordLine(r))
			switch r.Seq {
			case 3:
				lines = append(lines, audit.CheckpointLine(cp3))
			case 5:
				lines = append(lines, audit.CheckpointLine(cp5))
			}
		}
		return lines
	}
	exportOrder := func(records []store.AuditRecord) []audit.Line {
		lines := []audit.Line{audit.ChainLine(store.AuditChain{ID: id}),
			audit.CheckpointLine(cp3), audit.CheckpointLine(cp5)}
		for _, r := range records {
			lines = append(lines, audit.RecordLine(r))
		}
		return lines
	}
	lateCheckpoint := []audit.Line{audit.ChainLine(store.AuditChain{ID: id})}
	for _, r := range original[:4] {
		lateCheckpoint = append(lateCheckpoint, audit.RecordLine(r))
	}
	lateCheckpoint = append(lateCheckpoint, audit.CheckpointLine(cp3))

	cases := []struct {
		name  string
		lines []audit.Line
		what  string // "" when the lines verify
		seq   uint64
	}{
		{name: "file order", lines: fileOrder(original)},
		{name: "export order", lines: exportOrder(original)},
		{name: "replaced record in file order", lines: fileOrder(rewritten),
			what: "record", seq: 3},
		{name: "replaced record in export order", lines: exportOrder(rewritten),
			what: "record", seq: 3},
		{name: "checkpoint after later records", lines: lateCheckpoint,
			what: "checkpoint", seq: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := audit.NewVerifier(&key.PublicKey)
			var err error
			for _, l := range tc.lines {
				if err = v.Add(l); err != nil {
					break
				}
			}
			var report audit.Report
			if err == nil {
				report, err = v.Finish()
			}

			if tc.what == "" {
				if err != nil {
					t.Fatalf("verify failed: %v", err)
				}
				if got := report.Chains[0].LastSigned; got != 5 {
					t.Errorf("last signed record = %d, want 5", got)
				}
				return
			}
			var failure *audit.Failure
			if !errors.As(err, &failure) {
				t.Fatalf("verify returned %v, want a *audit.Failure", err)
			}
			if failure.What != tc.what || failure.Seq != tc.seq {
				t.Errorf("failure on %s %d (%v), want %s %d", failure.What, failure.Seq,
					failure, tc.what, tc.seq)
			}
		})
	}
}

// TestDamagedChainFileLeavesOthersReadable checks that one damaged chain file fails
// verification and export of that chain only: the other chain is still verified and
// exported whole.
func TestDamagedChainFileLeavesOthersReadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.db")
	st := openSQLite(t, path)
	tok := openToken(t)

	var chainIDs []string
	var key *ecdsa.PublicKey
	for range 2 {
		trail, err := audit.Open(t.Context(), st, tok, audit.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if key, err = trail.PublicKey(t.Context()); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			err := trail.Record(t.Context(), audit.Record{RequestID: "r",
				Operation: "gen-random", Status: 200})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := trail.Close(); err != nil {
			t.Fatal(err)
		}
		chainIDs = append(chainIDs, trail.ChainID())
	}
	damagedID, intactID := chainIDs[0], chainIDs[1]
	file := filepath.Join(path+"-audit", damagedID+".jsonl")
	// The first record line is overwritten in place: the store still has the file open
	// for appending, and its reads end where its own writes end.
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage"), int64(bytes.IndexByte(data, '\n')+1)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	report, err := audit.VerifySource(t.Context(), st, key)
	var failure *audit.Failure
	if !errors.As(err, &failure) || failure.ChainID != damagedID ||
		failure.What != "chain file line" {
		t.Errorf("VerifySource error = %v, want a chain file line failure of %s", err,
			damagedID)
	}
	if len(report.Chains) != 1 || report.Chains[0].ChainID != intactID ||
		report.Chains[0].Records != 3 {
		t.Errorf("report = %+v, want the intact chain %s with 3 records", report.Chains,
			intactID)
	}

	var export bytes.Buffer
	err = audit.Export(t.Context(), st, &export)
	if !errors.As(err, &failure) || failure.ChainID != damagedID {
		t.Errorf("Export error = %v, want a failure of %s", err, damagedID)
	}
	if _, err := audit.VerifyExport(bytes.NewReader(intactLines(t, export.Bytes(), intactID)),
		key); err != nil {
		t.Errorf("the exported lines of the intact chain do not verify: %v", err)
	}

	// The whole export has a damaged line in place of the damaged chain's rest, so it
	// cannot pass for a complete trail.
	_, err = audit.VerifyExport(bytes.NewReader(export.Bytes()), key)
	if !errors.As(err, &failure) || failure.ChainID != damagedID ||
		failure.What != "chain file line" || failure.Seq == 0 {
		t.Errorf("VerifyExport of the whole export = %v, want the damaged chain's failure", err)
	}
}

// intactLines returns the lines of export that belong to chain id.
func intactLines(t *testing.T, export []byte, id string) []byte {
	t.Helper()
	var out []byte
	for _, line := range bytes.SplitAfter(export, []byte("\n")) {
		if bytes.Contains(line, []byte(`"chain_id":"`+id+`"`)) {
			out = append(out, line...)
		}
	}
	if len(out) == 0 {
		t.Fatalf("the export has no line of chain %s", id)
	}
	return out
}
