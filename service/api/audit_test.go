package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// chainRecords returns every record of the running trail's chain.
func chainRecords(t *testing.T, e *testEnv) []store.AuditRecord {
	t.Helper()
	records, err := e.store.ListAuditRecords(t.Context(), e.trail.ChainID(), 0, 10000)
	if err != nil {
		t.Fatalf("ListAuditRecords: %v", err)
	}
	return records
}

func TestAuditRecordsAllowedAndDeniedCalls(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "audited")
	e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID,
		"datakey_length": "256", "sequence": "919c82d4-8046-4722-9094-35c3c6524cff"})

	reader := e.newCredential(t, auth.RoleReadOnly)
	denied := reader.post(t, "create-key", map[string]any{"key_alias": "not-allowed"})
	if denied.Status != http.StatusForbidden {
		t.Fatalf("read-only create-key: status %d, want 403", denied.Status)
	}

	forged := e.admin
	forged.sk = strings.Repeat("0", 40)
	if r := forged.post(t, "describe-key", map[string]any{"key_id": keyID}); r.Status != 401 {
		t.Fatalf("wrong secret key: status %d, want 401", r.Status)
	}

	otherProject := e.admin
	otherProject.projectID = strings.Repeat("f", 32)
	if r := otherProject.post(t, "list-keys", map[string]any{}); r.Status != 403 {
		t.Fatalf("foreign project: status %d, want 403", r.Status)
	}

	type call struct {
		operation string
		status    int
		errorCode string
	}
	want := []call{
		{"create-key", 200, ""},
		{"create-datakey", 200, ""},
		{"create-credential", 200, ""}, // from newCredential
		{"create-key", 403, "KMS.0307"},
		{"describe-key", 401, "APIGW.0301"},
		{"list-keys", 403, "KMS.0305"},
	}
	records := chainRecords(t, e)
	var got []call
	for _, r := range records {
		got = append(got, call{r.Operation, r.Status, r.ErrorCode})
	}
	if len(got) != len(want) {
		t.Fatalf("trail holds %d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d = %+v, want %+v", i+1, got[i], want[i])
		}
	}

	failed := records[4]
	if failed.AccessKey != e.admin.ak || failed.ProjectID != projectP1 {
		t.Errorf("record of the failed signature names %q in %q, want the access key and "+
			"project as sent, %s in %s", failed.AccessKey, failed.ProjectID, e.admin.ak,
			projectP1)
	}
	if failed.UserID != "" {
		t.Errorf("record of the failed signature names user %q, want none", failed.UserID)
	}

	datakey := records[1]
	if datakey.KeyID != keyID || datakey.KeyVersion != 1 {
		t.Errorf("create-datakey record names key %s version %d, want %s version 1",
			datakey.KeyID, datakey.KeyVersion, keyID)
	}
	if datakey.Sequence != "919c82d4-8046-4722-9094-35c3c6524cff" {
		t.Errorf("create-datakey record sequence = %q", datakey.Sequence)
	}
	if datakey.AccessKey != e.admin.ak || datakey.ProjectID != projectP1 {
		t.Errorf("create-datakey record names %s in %s", datakey.AccessKey, datakey.ProjectID)
	}
	if datakey.SourceIP == "" || datakey.RequestID == "" {
		t.Errorf("create-datakey record lacks source address or request id: %+v", datakey)
	}
}

// newCredential creates a credential of role in projectP1 through the API.
func (e *testEnv) newCredential(t *testing.T, role string) client {
	t.Helper()
	r := e.admin.do(t, http.MethodPost, "/v1.0/"+projectP1+"/kms-admin/credentials",
		map[string]any{"role": role})
	if r.Status != http.StatusOK {
		t.Fatalf("create %s credential: status %d, body %s", role, r.Status, r.Raw)
	}
	return e.client(r.str("access_key"), r.str("secret_key"), projectP1)
}

// failingAuditStore fails AppendAudit with cause while fail is set, as a database that
// rejects writes would. A nil cause is store.ErrUnavailable.
type failingAuditStore struct {
	store.AuditStore
	cause error
	fail  atomic.Bool
}

func (f *failingAuditStore) AppendAudit(
	ctx context.Context,
	records []store.AuditRecord,
	checkpoints []store.AuditCheckpoint,
) error {
	if f.fail.Load() {
		if f.cause != nil {
			return f.cause
		}
		return errors.Join(store.ErrUnavailable, errors.New("injected write failure"))
	}
	return f.AuditStore.AppendAudit(ctx, records, checkpoints)
}

// TestAuditWriteFailureReleasesNothing fails the audit record of create-datakey: the
// call must get 503 without the data key, and the message must name the store when the
// store is unavailable, as /readyz does.
func TestAuditWriteFailureReleasesNothing(t *testing.T) {
	tests := []struct {
		name    string
		cause   error
		wantMsg string
	}{
		{"store unavailable", nil, errAuditStoreUnavailable.Message},
		{"other failure", errors.New("injected chain file failure"), errAuditUnavailable.Message},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			failing := &failingAuditStore{cause: tt.cause}
			e.auditStore = func(s store.AuditStore) store.AuditStore {
				failing.AuditStore = s
				return failing
			}
			e.restart()
			keyID := e.admin.createKey(t, "fails")

			failing.fail.Store(true)
			r := e.admin.post(t, "create-datakey", map[string]any{"key_id": keyID})
			if r.Status != http.StatusServiceUnavailable {
				t.Fatalf("create-datakey with a failing trail: status %d, want 503", r.Status)
			}
			if r.code() != service.CodeUnavailable {
				t.Errorf("error code = %q, want %s", r.code(), service.CodeUnavailable)
			}
			if !strings.Contains(string(r.Raw), tt.wantMsg) {
				t.Errorf("503 body %s, want the message %q", r.Raw, tt.wantMsg)
			}
			for _, field := range []string{"plain_text", "cipher_text", "data_key"} {
				if strings.Contains(string(r.Raw), field) {
					t.Errorf("503 answer contains %s: %s", field, r.Raw)
				}
			}

			failing.fail.Store(false)
			e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})

			records := chainRecords(t, e)
			if n := len(records); n != 2 {
				t.Errorf("trail holds %d records, want 2 (the failed call is not stored)", n)
			}
		})
	}
}

func TestAuditRecordSurvivesRestart(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "durable")
	chainID := e.trail.ChainID()

	e.restart()
	records, err := e.store.ListAuditRecords(t.Context(), chainID, 0, 10)
	if err != nil {
		t.Fatalf("ListAuditRecords: %v", err)
	}
	if len(records) != 1 || records[0].KeyID != keyID {
		t.Fatalf("after restart the first chain holds %+v, want the create-key record", records)
	}
	if e.trail.ChainID() == chainID {
		t.Error("the restart continued the old chain, want a new one")
	}
}

// tamperCase edits the lines of a copy of the chain file and names the first failure
// that verify must report.
type tamperCase struct {
	name string
	edit func(t *testing.T, lines []audit.Line) []audit.Line
	what string
	seq  uint64
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	requireSQLite(t)
	e := newTestEnv(t)
	e.auditConfig = audit.Config{CheckpointRecords: 4}
	e.restart()

	// Ten calls, one at a time, so checkpoints sign records 4 and 8, and Close signs 10.
	keyID := e.admin.createKey(t, "tamper")
	for range 9 {
		e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	}
	chainID := e.trail.ChainID()
	key, err := e.trail.PublicKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.stop()

	remove := func(typ string, seqs ...uint64) func(*testing.T, []audit.Line) []audit.Line {
		return func(t *testing.T, lines []audit.Line) []audit.Line {
			for _, seq := range seqs {
				i := findLine(t, lines, typ, seq)
				lines = append(lines[:i], lines[i+1:]...)
			}
			return lines
		}
	}
	cases := []tamperCase{
		{name: "untouched"},
		{name: "edited field", what: "record", seq: 3,
			edit: func(t *testing.T, lines []audit.Line) []audit.Line {
				lines[findLine(t, lines, audit.LineRecord, 3)].SourceIP = "10.0.0.1"
				return lines
			}},
		{name: "deleted record", what: "record", seq: 6, edit: remove(audit.LineRecord, 5)},
		{name: "swapped records", what: "record", seq: 2,
			edit: func(t *testing.T, lines []audit.Line) []audit.Line {
				i, j := findLine(t, lines, audit.LineRecord, 2), findLine(t, lines, audit.LineRecord, 3)
				lines[i], lines[j] = lines[j], lines[i]
				lines[i].Seq, lines[j].Seq = 2, 3
				return lines
			}},
		{name: "inserted record", what: "record", seq: 7, edit: insertForgedRecord},
		{name: "edited checkpoint", what: "checkpoint", seq: 4,
			edit: func(t *testing.T, lines []audit.Line) []audit.Line {
				third := lines[findLine(t, lines, audit.LineRecord, 3)]
				lines[findLine(t, lines, audit.LineCheckpoint, 4)].RecordHash = third.Hash
				return lines
			}},
		{name: "removed record in unsigned tail", what: "record", seq: 10,
			edit: func(t *testing.T, lines []audit.Line) []audit.Line {
				lines = remove(audit.LineCheckpoint, 10)(t, lines)
				return remove(audit.LineRecord, 9)(t, lines)
			}},
		// The chain file reader finds the checkpoint line without its record line
		// before it, so the failure names that line of the file.
		{name: "removed last signed record", what: "chain file line", seq: 13,
			edit: remove(audit.LineRecord, 10)},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := copyDatabase(t, e.dbPath)
			if tc.edit != nil {
				editChainFile(t, path, chainID, tc.edit)
			}

			report, err := verifyDatabase(t, path, key)
			if tc.what == "" {
				if err != nil {
					t.Fatalf("verify failed on an untouched trail: %v", err)
				}
				if len(report.Chains) != 2 || report.Chains[1].Records != 10 {
					t.Errorf("report = %+v, want the first chain and one of 10 records",
						report.Chains)
				}
				if report.UnsignedRecords() != 0 {
					t.Errorf("untouched trail has %d unsigned records", report.UnsignedRecords())
				}
				return
			}

			var failure *audit.Failure
			if !errors.As(err, &failure) {
				t.Fatalf("verify error = %v, want an *audit.Failure", err)
			}
			if failure.ChainID != chainID || failure.What != tc.what || failure.Seq != tc.seq {
				t.Errorf("first failure is %s %d of chain %s (%s), want %s %d of %s",
					failure.What, failure.Seq, failure.ChainID, failure.Reason, tc.what, tc.seq,
					chainID)
			}
		})
	}

	// A line that kmsd never writes is reported with its line number, whatever it
	// contains. Line 4 of the chain file is the one after record 2.
	damagedCases := []struct {
		name string
		line string
	}{
		{"unknown type with a record head", `{"type":"junk","chain_id":"` + chainID + `","seq":3}`},
		{"chain head with garbage", `{"type":"chain" arbitrary text`},
		{"chain line after the first", `{"type":"chain","chain_id":"` + chainID + `"}`},
		{"plain text", "garbage"},
	}
	for _, tc := range damagedCases {
		t.Run("inserted line: "+tc.name, func(t *testing.T) {
			path := copyDatabase(t, e.dbPath)
			file := filepath.Join(path+"-audit", chainID+".jsonl")
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitAfter(string(data), "\n")
			edited := strings.Join(lines[:3], "") + tc.line + "\n" + strings.Join(lines[3:], "")
			if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
				t.Fatal(err)
			}

			_, err = verifyDatabase(t, path, key)
			var failure *audit.Failure
			if !errors.As(err, &failure) {
				t.Fatalf("verify error = %v, want an *audit.Failure", err)
			}
			if failure.ChainID != chainID || failure.What != "chain file line" ||
				failure.Seq != 4 {
				t.Errorf("first failure is %s %d of chain %s (%s), want chain file line 4 of %s",
					failure.What, failure.Seq, failure.ChainID, failure.Reason, chainID)
			}
		})
	}

	t.Run("stray file in the chain directory", func(t *testing.T) {
		path := copyDatabase(t, e.dbPath)
		stray := filepath.Join(path+"-audit", "stray.jsonl")
		if err := os.WriteFile(stray, []byte("text\n"), 0o600); err != nil {
			t.Fatal(err)
		}

		_, err := verifyDatabase(t, path, key)
		var failure *audit.Failure
		if !errors.As(err, &failure) {
			t.Fatalf("verify error = %v, want an *audit.Failure", err)
		}
		if failure.ChainID != "stray" || failure.What != "chain file line" || failure.Seq != 1 {
			t.Errorf("first failure is %s %d of chain %s, want chain file line 1 of stray",
				failure.What, failure.Seq, failure.ChainID)
		}
	})

	// Removing the last record together with the checkpoint that signs it leaves a valid
	// shorter chain: verify cannot detect it, and the report shows no unsigned tail.
	t.Run("truncated at a checkpoint is not detectable", func(t *testing.T) {
		path := copyDatabase(t, e.dbPath)
		editChainFile(t, path, chainID, func(t *testing.T, lines []audit.Line) []audit.Line {
			lines = remove(audit.LineCheckpoint, 10)(t, lines)
			return remove(audit.LineRecord, 10)(t, lines)
		})

		report, err := verifyDatabase(t, path, key)
		if err != nil {
			t.Fatalf("verify failed: %v", err)
		}
		if n := report.UnsignedRecords(); n != 1 {
			t.Errorf("unsigned records = %d, want 1 (record 9 after checkpoint 8)", n)
		}
	})
}

// findLine returns the index of the line of type typ and seq.
func findLine(t *testing.T, lines []audit.Line, typ string, seq uint64) int {
	t.Helper()
	for i, l := range lines {
		if l.Type == typ && l.Seq == seq {
			return i
		}
	}
	t.Fatalf("the chain file has no %s %d", typ, seq)
	return -1
}

// insertForgedRecord moves records 6 to 10 up by one and puts a correctly hashed record 6
// after record 5.
func insertForgedRecord(t *testing.T, lines []audit.Line) []audit.Line {
	t.Helper()
	fifth := findLine(t, lines, audit.LineRecord, 5)
	prev, err := lines[fifth].Record()
	if err != nil {
		t.Fatal(err)
	}
	for i := range lines {
		if lines[i].Type == audit.LineRecord && lines[i].Seq > 5 {
			lines[i].Seq++
		}
	}

	forged := store.AuditRecord{ChainID: prev.ChainID, Seq: 6,
		Time: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), RequestID: "forged",
		Operation: "list-keys", Status: 200, PrevHash: prev.Hash}
	forged.Hash = audit.RecordHash(forged)
	return append(lines[:fifth+1], append([]audit.Line{audit.RecordLine(forged)},
		lines[fifth+1:]...)...)
}

// editChainFile rewrites the file of chain chainID beside the SQLite file at dbPath with
// the lines that edit returns.
func editChainFile(t *testing.T, dbPath, chainID string,
	edit func(*testing.T, []audit.Line) []audit.Line) {
	t.Helper()
	path := filepath.Join(dbPath+"-audit", chainID+".jsonl")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []audit.Line
	err = audit.ReadExport(f, func(l audit.Line) error {
		lines = append(lines, l)
		return nil
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	var out []byte
	for _, l := range edit(t, lines) {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(append(out, b...), '\n')
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyDatabase copies the SQLite file at path, which no connection holds open, and its
// directory of chain files into a temporary directory.
func copyDatabase(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(copyPath+"-audit", os.DirFS(path+"-audit")); err != nil {
		t.Fatal(err)
	}
	return copyPath
}

func openSQLite(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func verifyDatabase(t *testing.T, path string, key *ecdsa.PublicKey) (audit.Report, error) {
	t.Helper()
	st, err := store.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return audit.VerifySource(t.Context(), st, key)
}

// TestAuditExportDamagedChainFile checks that the audit routes respond to a damaged chain
// file with the non-retryable 500 KMS.0101 naming the chain and line, not with 503.
func TestAuditExportDamagedChainFile(t *testing.T) {
	requireSQLite(t)
	e := newTestEnv(t)
	e.admin.mustPost(t, "gen-random", map[string]any{"random_data_length": "256"})
	chainID := e.trail.ChainID()
	overwriteLine(t, filepath.Join(e.dbPath+"-audit", chainID+".jsonl"), 2, "garbage")
	e.trailDamaged = true

	project := e.admin.projectID
	path := "/v1.0/" + project + "/kms-admin/audit/records?chain_id=" + chainID
	r := e.admin.do(t, http.MethodGet, path, nil)
	if r.Status != http.StatusInternalServerError || r.code() != "KMS.0101" {
		t.Fatalf("audit records of a damaged chain = %d %s, want 500 KMS.0101: %s", r.Status,
			r.code(), r.Raw)
	}
	if !strings.Contains(string(r.Raw), chainID) {
		t.Errorf("the error names no chain: %s", r.Raw)
	}
}

// appendLine appends line and a newline to the file at path.
// overwriteLine writes text over the start of line n of the file at path, in place: kmsd
// reads its own chain file only up to the end of what it wrote.
func overwriteLine(t *testing.T, path string, n int, text string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offset := 0
	for range n - 1 {
		offset += bytes.IndexByte(data[offset:], '\n') + 1
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(text), int64(offset)); err != nil {
		t.Fatal(err)
	}
}

func TestRecordedKeyID(t *testing.T) {
	valid := "alias/" + strings.Repeat("key-", 63) + "kms" // 261 bytes, the longest valid
	dataKey := strings.Repeat("75430714E8D1A2B3", 4)       // 64 hex digits
	tests := []struct {
		name string
		id   string
		want string
	}{
		{"empty", "", ""},
		{"key id", "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "0d0466b0-e727-4d9c-b35d-f84bb474a37f"},
		{"longest alias kept whole", valid, valid},
		{"one byte over is cut", valid + "x", valid + "...(262 bytes)"},
		// "é" is two bytes that straddle the cut, so the cut drops both.
		{"cut at a rune boundary", strings.Repeat("a-", 130) + "é" + "zz",
			strings.Repeat("a-", 130) + "...(264 bytes)"},
		{"alias with a run of 31 kept", "alias/" + strings.Repeat("a", 25),
			"alias/" + strings.Repeat("a", 25)},
		{"data key redacted", dataKey, redactedKeyID},
		{"data key as alias redacted", "alias/" + dataKey, redactedKeyID},
		{"base64 ciphertext redacted", "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0+/==", redactedKeyID},
		{"secret key inside an alias redacted", "alias/app:" + strings.Repeat("q7Kd2LmX", 5),
			redactedKeyID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := recordedKeyID(tt.id); got != tt.want {
				t.Errorf("recordedKeyID(%d bytes) = %q, want %q", len(tt.id), got, tt.want)
			}
		})
	}
}

func TestAuditRecordCutsLongKeyID(t *testing.T) {
	e := newTestEnv(t)
	long := strings.Repeat("x-", 5000)

	r := e.admin.post(t, "create-datakey", map[string]any{"key_id": long})
	if r.Status != http.StatusBadRequest {
		t.Fatalf("create-datakey with a 10,000-byte key_id: status %d, want 400", r.Status)
	}

	records := chainRecords(t, e)
	if len(records) != 1 {
		t.Fatalf("trail contains %d records, want 1", len(records))
	}
	want := strings.Repeat("x-", maxRecordedKeyIDLength/2) + "x...(10000 bytes)"
	if got := records[0].KeyID; got != want {
		t.Errorf("recorded key_id has %d bytes, want %d: %.40q", len(got), len(want), got)
	}
}

func TestAuditRecordNamesKeyOfFailedCall(t *testing.T) {
	e := newTestEnv(t)
	const unknown = "11111111-2222-4333-8444-555555555555"

	tests := []struct {
		operation string
		body      map[string]any
	}{
		{"describe-key", map[string]any{"key_id": unknown}},
		{"create-grant", map[string]any{"key_id": unknown, "grantee_principal": "user-1",
			"operations": []string{"decrypt-datakey"}}},
		{"revoke-grant", map[string]any{"key_id": unknown, "grant_id": strings.Repeat("a", 64)}},
		{"list-grants", map[string]any{"key_id": unknown}},
		{"create-datakey", map[string]any{"key_id": unknown}},
	}
	for _, tt := range tests {
		if r := e.admin.post(t, tt.operation, tt.body); r.Status != http.StatusBadRequest {
			t.Fatalf("%s of an unknown key: status %d, want 400: %s", tt.operation, r.Status, r.Raw)
		}
	}

	records := chainRecords(t, e)
	if len(records) != len(tests) {
		t.Fatalf("trail contains %d records, want %d", len(records), len(tests))
	}
	for i, tt := range tests {
		if got := records[i].KeyID; got != unknown {
			t.Errorf("%s record: key_id %q, want %q", tt.operation, got, unknown)
		}
	}
}

// TestAuditTrailOperatorOnly checks that an admin of another project than the operator's
// cannot read the trail, which holds the calls of every project, but can fetch the public
// key that verifies it.
func TestAuditTrailOperatorOnly(t *testing.T) {
	e := newTestEnv(t)
	e.admin.mustPost(t, "gen-random", map[string]any{"random_data_length": "256"})
	p2Admin := newP2Admin(t, e)
	chainID := e.trail.ChainID()

	base := "/v1.0/" + projectP2 + "/kms-admin/audit/"
	forbidden := []string{
		"chains",
		"records?chain_id=" + chainID,
		"checkpoints?chain_id=" + chainID,
	}
	for _, route := range forbidden {
		t.Run(route, func(t *testing.T) {
			r := p2Admin.do(t, http.MethodGet, base+route, nil)
			checkError(t, route, r, http.StatusForbidden, "KMS.0307")
			if strings.Contains(string(r.Raw), e.admin.ak) {
				t.Errorf("the refusal names the operator's access key: %s", r.Raw)
			}
		})
	}

	r := p2Admin.do(t, http.MethodGet, base+"public-key", nil)
	checkOK(t, "public key", r)

	operator := e.admin.do(t, http.MethodGet,
		"/v1.0/"+e.admin.projectID+"/kms-admin/audit/records?chain_id="+chainID, nil)
	checkOK(t, "operator reads the records", operator)
}

// TestAuditRecordRedactsDataKeyAsKeyID sends a data key that kmsd issued as the key_id of
// later calls, a client mistake. Their audit records must not hold it.
func TestAuditRecordRedactsDataKeyAsKeyID(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "issuer")
	issued := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	plain := issued.str("plain_text")

	for _, tc := range []struct{ op, keyID string }{
		{"encrypt-data", plain},
		{"describe-key", "alias/" + plain},
	} {
		r := e.admin.post(t, tc.op, map[string]any{"key_id": tc.keyID, "plain_text": "hello"})
		if r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
			t.Errorf("%s with a data key as key_id: status %d, want 400 or 404", tc.op, r.Status)
		}
	}

	for _, rec := range chainRecords(t, e) {
		if strings.Contains(rec.KeyID, plain) {
			t.Errorf("the %s record holds the data key in key_id", rec.Operation)
		}
	}
}

// TestAuditNULInRequest checks that NUL characters from a request, in the URL or in a
// key_id, reach the audit trail as U+FFFD. PostgreSQL cannot store NUL in text, and a
// record it rejects fails its whole batch and makes kmsd not ready.
func TestAuditNULInRequest(t *testing.T) {
	e := newTestEnv(t)

	res, err := http.Post(e.http.URL+"/v1.0/%00/kms/list-keys", "application/json",
		strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned list-keys with NUL as project id: status %d, want 401", res.StatusCode)
	}
	wantCode(t, e.admin.post(t, "describe-key", map[string]any{"key_id": "\x00"}), "KMS.0205")

	ready, err := http.Get(e.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready.Body.Close()
	if ready.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the requests with NUL: status %d, want 200", ready.StatusCode)
	}

	records := chainRecords(t, e)
	if len(records) != 2 {
		t.Fatalf("trail holds %d records, want 2", len(records))
	}
	if got := records[0].ProjectID; got != "\ufffd" {
		t.Errorf("recorded project id = %q, want U+FFFD", got)
	}
	if got := records[1].KeyID; got != "\ufffd" {
		t.Errorf("recorded key id = %q, want U+FFFD", got)
	}
}
