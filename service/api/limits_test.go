package api

import (
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/service"
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

// TestListKeysSpecFilter checks list-keys' key_spec filter: AES_256 and ALL list the key,
// another spec of Huawei's list lists nothing, and a value outside that list is 400
// KMS.0308, as an invalid key_state is.
func TestListKeysSpecFilter(t *testing.T) {
	e := newTestEnv(t)
	e.admin.createKey(t, "spec-filter")

	tests := []struct {
		spec     string
		wantKeys int
		wantCode string
	}{
		{spec: "", wantKeys: 1},
		{spec: "AES_256", wantKeys: 1},
		{spec: "ALL", wantKeys: 1},
		{spec: "SM4", wantKeys: 0},
		{spec: "EC_P384", wantKeys: 0},
		{spec: "FOO", wantCode: service.CodeInvalidParameter},
		{spec: "aes_256", wantCode: service.CodeInvalidParameter},
	}
	for _, tt := range tests {
		t.Run("key_spec "+tt.spec, func(t *testing.T) {
			r := e.admin.post(t, "list-keys", map[string]any{"key_spec": tt.spec})
			if tt.wantCode != "" {
				checkError(t, "list-keys", r, http.StatusBadRequest, tt.wantCode)
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("status %d: %s", r.Status, r.Raw)
			}
			if keys, _ := r.Body["keys"].([]any); len(keys) != tt.wantKeys {
				t.Errorf("keys = %v, want %d", r.Body["keys"], tt.wantKeys)
			}
		})
	}
}
