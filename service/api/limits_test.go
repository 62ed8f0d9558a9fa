package api

import (
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/auth"
)

// TestChunkedBodyOverLimit sends a 10 MB chunked body and checks that kmsd responds 413
// with KMS.0203 before the client has sent it all.
func TestChunkedBodyOverLimit(t *testing.T) {
	e := newTestEnv(t)

	const total = 10 << 20
	pr, pw := io.Pipe()
	var written atomic.Int64
	go func() {
		chunk := make([]byte, 32<<10)
		for written.Load() < total {
			n, err := pw.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
		pw.Close()
	}()

	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/v1.0/"+projectP1+"/kms/decrypt-datakey", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked
	res, err := http.DefaultClient.Do(req)
	sentAtAnswer := written.Load()
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()

	raw, _ := io.ReadAll(res.Body)
	r := response{Status: res.StatusCode, Raw: raw}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, raw)
	}
	if r.Status != http.StatusRequestEntityTooLarge || r.code() != "KMS.0203" {
		t.Fatalf("status %d code %q, want 413 KMS.0203", r.Status, r.code())
	}
	if sentAtAnswer >= total {
		t.Fatalf("the answer came only after the whole %d-byte body was sent", total)
	}
}

// TestListKeysEmptyBody checks that a list-keys POST with no body and no Content-Type
// returns the default page, as Huawei's SDK can send it.
func TestListKeysEmptyBody(t *testing.T) {
	e := newTestEnv(t)
	e.admin.createKey(t, "listed")

	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/v1.0/"+projectP1+"/kms/list-keys", nil)
	if err != nil {
		t.Fatal(err)
	}
	auth.Sign(req, nil, e.admin.ak, e.admin.sk, time.Now())
	r := send(t, req)
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	keys, _ := r.Body["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("keys = %v, want the one key", r.Body["keys"])
	}
	if r.Body["truncated"] != "false" {
		t.Errorf("truncated = %v, want \"false\"", r.Body["truncated"])
	}
}
