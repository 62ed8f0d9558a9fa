package auth

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"
)

// staticSource is a CredentialSource with one credential, so the benchmark measures the
// signature check alone. It keeps one signing key, as the cache entry of Credentials does.
type staticSource struct {
	principal Principal
	key       *signingKey
}

func (s staticSource) Lookup(context.Context, string) (Principal, []byte, error) {
	return s.principal, s.key.secret, nil
}

func (s staticSource) lookupSigningKey(context.Context, string) (Principal, *signingKey, error) {
	return s.principal, s.key, nil
}

func BenchmarkVerify(b *testing.B) {
	const ak, sk = "BENCHACCESSKEY000001", "bench-secret-key-0123456789abcdefghijklmn"
	body := []byte(`{"key_id":"0d0466b0-e727-4d9c-b35d-f84bb474a37f","cipher_text":"01AB","datakey_cipher_length":"64"}`)
	req, err := http.NewRequest(http.MethodPost,
		"http://127.0.0.1:8080/v1.0/0123456789abcdef0123456789abcdef/kms/decrypt-datakey", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Project-Id", "0123456789abcdef0123456789abcdef")
	req.Header.Set("User-Agent", "huaweicloud-usdk-go/3.0")
	Sign(req, body, ak, sk, time.Now())
	req.RequestURI = req.URL.RequestURI()

	v := NewVerifier(staticSource{Principal{AccessKey: ak}, newSigningKey([]byte(sk))}, VerifierConfig{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), req, body); err != nil {
			b.Fatal(err)
		}
	}
}
