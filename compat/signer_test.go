package compat

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/signer"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/request"
)

// fixedVector is a KMS request signed by the SDK's signer (core/auth/signer.Signer,
// github.com/huaweicloud/huaweicloud-sdk-go-v3 v0.1.215) at a fixed date, so that its
// Authorization header never changes. service/auth can use it as a test vector.
type fixedVector struct {
	name    string
	ak, sk  string
	date    string
	method  string
	url     string // endpoint and path; the host is not signed
	headers map[string]string
	body    string
	want    string // Authorization header
}

var fixedVectors = []fixedVector{
	{
		name:   "list-keys with a json body",
		ak:     "COMPATAK0123456789",
		sk:     "compat-secret-key-0123456789abcdef",
		date:   "20260101T000000Z",
		method: http.MethodPost,
		url:    "http://127.0.0.1:8080/v1.0/0a1b2c3d4e5f60718293a4b5c6d7e8f9/kms/list-keys",
		headers: map[string]string{
			"Content-Type": "application/json;charset=UTF-8",
			"User-Agent":   "huaweicloud-usdk-go/3.0",
			"X-Project-Id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		},
		body: "{\"limit\":\"10\"}\n",
		want: "SDK-HMAC-SHA256 Access=COMPATAK0123456789, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=2273efeb613ab84e582cd096d391fd5082b0ad431cdc4593ad493000e8d08a86",
	},
	{
		// The "sdk create-datakey" vector that the service/auth tests captured on the
		// wire, signed again here by the SDK's signer.
		name:   "create-datakey captured by service/auth",
		ak:     "HPUAXK2VQ5ZJ8WCNMD3E",
		sk:     "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB",
		date:   "20261204T161214Z",
		method: http.MethodPost,
		url:    "http://127.0.0.1:37685/v1.0/0a1b2c3d4e5f60718293a4b5c6d7e8f9/kms/create-datakey",
		headers: map[string]string{
			"Content-Type": "application/json;charset=UTF-8",
			"User-Agent": "huaweicloud-usdk-go/3.0; os/Debian_GNU/Linux#12_(bookworm)#amd64 " +
				"go/go1.26.8; app/3ee8116e-65ad-4ecc-aa99-91fe0662f495",
			"X-Project-Id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		},
		body: "{\"key_id\":\"0d0466b0-e727-4d9c-b35d-f84bb474a37f\",\"datakey_length\":\"512\"}\n",
		want: "SDK-HMAC-SHA256 Access=HPUAXK2VQ5ZJ8WCNMD3E, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=d955013dcea35a5237504c49638bd45fa5a458b7bbbafa544022fdc27b2af8d1",
	},
}

func TestSDKSignerFixedVectors(t *testing.T) {
	for _, v := range fixedVectors {
		t.Run(v.name, func(t *testing.T) {
			scheme, rest, _ := strings.Cut(v.url, "://")
			host, path, _ := strings.Cut(rest, "/")
			builder := request.NewHttpRequestBuilder().
				WithMethod(v.method).
				WithEndpoint(scheme+"://"+host).
				WithPath("/"+path).
				AddHeaderParam("X-Sdk-Date", v.date).
				WithBody("body", v.body)
			for k, val := range v.headers {
				builder.AddHeaderParam(k, val)
			}

			headers, err := signer.Signer{}.Sign(builder.Build(), v.ak, v.sk)
			if err != nil {
				t.Fatalf("signing: %v", err)
			}
			if got := headers["Authorization"]; got != v.want {
				t.Errorf("Authorization =\n%s\nwant\n%s", got, v.want)
			}
		})
	}
}

// TestSDKSignedRequestVerified sends requests signed by the SDK's signer (not by the
// typed client) to kmsd, unchanged and changed after signing.
func TestSDKSignedRequestVerified(t *testing.T) {
	cred := createCredential(t, "compat-signer", "read-only")
	listKeys := "/v1.0/" + cred.projectID + "/kms/list-keys"

	tests := []struct {
		name   string
		date   time.Time
		change func(*http.Request)
		status int
	}{
		{"signed now", time.Now(), nil, http.StatusOK},
		{"date 14 minutes behind", time.Now().Add(-14 * time.Minute), nil, http.StatusOK},
		{"date 16 minutes behind", time.Now().Add(-16 * time.Minute), nil, http.StatusUnauthorized},
		{"date 16 minutes ahead", time.Now().Add(16 * time.Minute), nil, http.StatusUnauthorized},
		{"unsigned header added after signing", time.Now(), func(r *http.Request) {
			r.Header.Set("X-Compat-Extra", "unsigned")
		}, http.StatusOK},
		{"body changed after signing", time.Now(), func(r *http.Request) {
			r.Body = http.NoBody
			r.ContentLength = 0
		}, http.StatusUnauthorized},
		{"signed header changed after signing", time.Now(), func(r *http.Request) {
			r.Header.Set("User-Agent", "changed")
		}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := rawRequest{
				method: http.MethodPost, path: listKeys, body: "{\"limit\":\"1\"}\n", date: tt.date,
			}.sign(cred)
			if err != nil {
				t.Fatal(err)
			}
			if tt.change != nil {
				tt.change(req)
			}

			res := send(t, req)
			if res.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", res.status, tt.status, res.body)
			}
			if tt.status == http.StatusUnauthorized && !strings.Contains(res.body, `"APIGW.0301"`) {
				t.Errorf("body = %s, want error_code APIGW.0301", res.body)
			}
		})
	}
}
