package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/store/storetest"
)

// TestKmsdImmutableChainFile makes the chain file of a running kmsd immutable (chattr
// +i). Calls must fail with 503 and /readyz must report the audit trail, while the log
// reports that the file cannot be written and no cut. Once the flag is cleared, calls
// succeed again. kmsd then stops while the file is immutable again, and verify must find
// the chain whole and signed.
func TestKmsdImmutableChainFile(t *testing.T) {
	k := startDataKeyKmsd(t, "immutable")
	p, dataDir := k.kmsdProcess, k.dataDir
	call := func() (int, string) {
		t.Helper()
		res, err := http.DefaultClient.Do(signedRequest(t, p, "create-datakey", k.body, k.ak,
			k.sk, k.projectID))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		text, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, string(text)
	}
	if status, text := call(); status != http.StatusOK {
		t.Fatalf("create-datakey = %d %s, want 200", status, text)
	}

	files, err := filepath.Glob(filepath.Join(dataDir, "kms.db-audit", "*.jsonl"))
	if err != nil || len(files) != 1 {
		t.Fatalf("chain files = %v, %v; want one", files, err)
	}
	storetest.SetImmutable(t, files[0])
	if status, text := call(); status != http.StatusServiceUnavailable ||
		!strings.Contains(text, "KMS.0102") {
		t.Errorf("create-datakey while the chain file is immutable = %d %s, want 503 KMS.0102",
			status, text)
	}
	if status, text := p.get("/readyz"); status != http.StatusServiceUnavailable ||
		!strings.Contains(text, "audit trail unavailable") {
		t.Errorf("/readyz while the chain file is immutable = %d %s, want 503 and the "+
			"audit trail", status, text)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "audit chain file cannot be written") {
		t.Errorf("the log does not report the immutable file as not writable:\n%s", logs)
	}
	if strings.Contains(logs, "cut short") {
		t.Errorf("the log reports a cut of a file that was not cut:\n%s", logs)
	}

	storetest.ClearImmutable(t, files[0])
	if status, text := call(); status != http.StatusOK {
		t.Errorf("create-datakey once the chain file is writable again = %d %s, want 200",
			status, text)
	}
	if status, text := p.get("/readyz"); status != http.StatusOK {
		t.Errorf("/readyz once the chain file is writable again = %d %s, want 200", status,
			text)
	}

	storetest.SetImmutable(t, files[0])
	if status, text := call(); status != http.StatusServiceUnavailable {
		t.Errorf("create-datakey after the file was made immutable again = %d %s, want 503",
			status, text)
	}
	p.stop(t)
	chains, err := filepath.Glob(filepath.Join(dataDir, "kms.db-audit", "*.jsonl"))
	if err != nil || len(chains) != 1 {
		t.Errorf("chain files after the stop = %v, %v; want the one chain", chains, err)
	}
	verifyAuditTrail(t, p, dataDir, k.keyPath) // with --require-signed-tail
}
