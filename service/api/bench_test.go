package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/auth"
)

// BenchmarkDecryptDataKeyHandler measures one signed decrypt-datakey request through the
// whole handler chain (signature, metadata, token, audit hook, JSON) without a network.
func BenchmarkDecryptDataKeyHandler(b *testing.B) {
	t := &testing.T{}
	e := newTestEnv(t)
	defer e.stop()
	keyID := e.admin.createKey(b, "bench")
	ctx := map[string]string{"bench": "handler"}
	dk := e.admin.mustPost(b, "create-datakey", map[string]any{"key_id": keyID, "datakey_length": "512",
		"encryption_context": ctx})

	body := encodeBody(b, map[string]any{"key_id": keyID, "cipher_text": dk.str("cipher_text"),
		"datakey_cipher_length": "64", "encryption_context": ctx})
	path := "/v1.0/" + projectP1 + "/kms/decrypt-datakey"
	proto, _ := http.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	proto.Header.Set("Content-Type", "application/json;charset=UTF-8")
	proto.Header.Set("X-Project-Id", projectP1)
	proto.Host = "127.0.0.1"
	auth.Sign(proto, body, e.admin.ak, e.admin.sk, time.Now())
	handler := e.http.Config.Handler

	// 32 goroutines per CPU, so that audit batches are as large as under real load.
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header = proto.Header.Clone()
			req.Host = proto.Host
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body.Bytes())
			}
		}
	})
	// Closing the environment verifies the whole audit trail, which is not request work.
	b.StopTimer()
}
