package auth

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// signatureVector is a request with the Authorization header a signer must produce.
type signatureVector struct {
	name   string
	ak, sk string
	date   string
	method string
	url    string
	// headers are present when the request is signed.
	headers map[string]string
	// transportHeaders are added by net/http after signing, so only the server request
	// carries them.
	transportHeaders map[string]string
	body             string
	authorization    string
}

// referenceVectors: the first two use the inputs of signer_test.go in
// github.com/huaweicloud/huaweicloud-sdk-go-v3 v0.1.215 (core/auth/signer); the third is a
// KMS-shaped request computed with the same signer.
var referenceVectors = []signatureVector{
	{
		name:    "sdk get with underscore header",
		ak:      "AccessKey",
		sk:      "SecretKey",
		date:    "20060102T150405Z",
		method:  http.MethodGet,
		url:     "https://example.huaweicloud.com/path?limit=1",
		headers: map[string]string{"TEST_UNDERSCORE": "TEST_VALUE"},
		authorization: "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, " +
			"Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624",
	},
	{
		name:   "sdk post with json body",
		ak:     "AccessKey",
		sk:     "SecretKey",
		date:   "20060102T150405Z",
		method: http.MethodPost,
		url:    "https://example.huaweicloud.com/path?key=value",
		headers: map[string]string{
			"TEST_UNDERSCORE": "TEST_VALUE",
			"Content-Type":    "application/json",
		},
		body: "{\"Name\":\"test\",\"Id\":1}\n",
		authorization: "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, " +
			"Signature=cecc2af119b18ab70b4d094c0750f3b42c02f254903179a0fc2cc72fc9db4f59",
	},
	{
		name:   "kms create-key",
		ak:     "AK123",
		sk:     "SK456",
		date:   "20240101T000000Z",
		method: http.MethodPost,
		url:    "https://kms.example.com/v1.0/pid123/kms/create-key",
		headers: map[string]string{
			"User-Agent":   "huaweicloud-usdk-go/3.0",
			"X-Project-Id": "pid123",
		},
		body: "{\"key_alias\":\"test\"}\n",
		authorization: "SDK-HMAC-SHA256 Access=AK123, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=ebfbd647b99ae6d24164a861a37d6c2f7bca11a7660b4f173bc46e2efdfb8f7d",
	},
}

// sdkUserAgent is the User-Agent that the SDK sent when the captured vectors were made.
const sdkUserAgent = "huaweicloud-usdk-go/3.0; os/Debian_GNU/Linux#12_(bookworm)#amd64 " +
	"go/go1.26.8; app/3ee8116e-65ad-4ecc-aa99-91fe0662f495"

// sdkCapturedVectors are requests sent by the official SDK, captured on the wire by an
// httptest server: github.com/huaweicloud/huaweicloud-sdk-go-v3 v0.1.215, the KMS v2
// client (services/kms/v2 KmsClient.DeleteTag and KmsClient.CreateDatakey) with
// basic.Credentials, which signs with core/auth/signer.Signer.Sign. The DELETE path went
// out with a raw ":" and was signed as "%3A".
var sdkCapturedVectors = []signatureVector{
	{
		name:   "sdk delete-tag with colon in key",
		ak:     "HPUAXK2VQ5ZJ8WCNMD3E",
		sk:     "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB",
		date:   "20261204T161214Z",
		method: http.MethodDelete,
		url: "http://127.0.0.1:37685/v1.0/0a1b2c3d4e5f60718293a4b5c6d7e8f9/kms/" +
			"0d0466b0-e727-4d9c-b35d-f84bb474a37f/tags/env:prod",
		headers: map[string]string{
			"User-Agent":   sdkUserAgent,
			"Content-Type": "application/json",
			"X-Project-Id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		},
		transportHeaders: map[string]string{"Accept-Encoding": "gzip"},
		authorization: "SDK-HMAC-SHA256 Access=HPUAXK2VQ5ZJ8WCNMD3E, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=b52f395eff1a670bad10988c4b71d30034bd3afb57f8d937816f6f48f9390c2a",
	},
	{
		name:   "sdk create-datakey",
		ak:     "HPUAXK2VQ5ZJ8WCNMD3E",
		sk:     "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB",
		date:   "20261204T161214Z",
		method: http.MethodPost,
		url:    "http://127.0.0.1:37685/v1.0/0a1b2c3d4e5f60718293a4b5c6d7e8f9/kms/create-datakey",
		headers: map[string]string{
			"User-Agent":   sdkUserAgent,
			"Content-Type": "application/json;charset=UTF-8",
			"X-Project-Id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		},
		transportHeaders: map[string]string{
			"Accept-Encoding": "gzip",
			"Content-Length":  "73",
		},
		body: "{\"key_id\":\"0d0466b0-e727-4d9c-b35d-f84bb474a37f\",\"datakey_length\":\"512\"}\n",
		authorization: "SDK-HMAC-SHA256 Access=HPUAXK2VQ5ZJ8WCNMD3E, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=d955013dcea35a5237504c49638bd45fa5a458b7bbbafa544022fdc27b2af8d1",
	},
	{
		name:   "sdk list-aliases with query",
		ak:     "HPUAXK2VQ5ZJ8WCNMD3E",
		sk:     "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB",
		date:   "20261204T161214Z",
		method: http.MethodGet,
		url: "http://127.0.0.1:37685/v1.0/0a1b2c3d4e5f60718293a4b5c6d7e8f9/kms/aliases" +
			"?key_id=0d0466b0-e727-4d9c-b35d-f84bb474a37f&limit=10",
		headers: map[string]string{
			"User-Agent":   sdkUserAgent,
			"Content-Type": "application/json",
			"X-Project-Id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
		},
		transportHeaders: map[string]string{"Accept-Encoding": "gzip"},
		authorization: "SDK-HMAC-SHA256 Access=HPUAXK2VQ5ZJ8WCNMD3E, " +
			"SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
			"Signature=95be5e6d306c8d9c0ec0371af90ae1bc1c4ecac3bda9a669e7624f2809cea63c",
	},
}

func mustParseDate(t *testing.T, date string) time.Time {
	t.Helper()

	parsed, err := time.Parse(DateFormat, date)
	if err != nil {
		t.Fatalf("parse date %q: %v", date, err)
	}
	return parsed
}

// clientRequest builds the request a client would sign. Headers are set without
// canonicalizing their names, as the SDK keeps them.
func clientRequest(t *testing.T, method, url string, headers map[string]string, body string) *http.Request {
	t.Helper()

	req, err := http.NewRequest(method, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for name, value := range headers {
		req.Header[name] = []string{value}
	}
	return req
}

// serverRequest builds the request as a server receives it, with RequestURI and Host set
// from url.
func serverRequest(method, url string, headers map[string]string, body string) *http.Request {
	req := httptest.NewRequest(method, url, bytes.NewReader([]byte(body)))
	for name, value := range headers {
		req.Header.Set(name, value)
	}
	return req
}

func TestSignReferenceVectors(t *testing.T) {
	for _, vector := range append(referenceVectors, sdkCapturedVectors...) {
		t.Run(vector.name, func(t *testing.T) {
			req := clientRequest(t, vector.method, vector.url, vector.headers, vector.body)
			Sign(req, []byte(vector.body), vector.ak, vector.sk, mustParseDate(t, vector.date))

			if got := req.Header.Get(HeaderDate); got != vector.date {
				t.Errorf("X-Sdk-Date = %q, expected %q", got, vector.date)
			}
			if got := req.Header.Get("Authorization"); got != vector.authorization {
				t.Errorf("Authorization =\n%s\nexpected\n%s", got, vector.authorization)
			}
		})
	}
}

func TestVerifyReferenceVectors(t *testing.T) {
	for _, vector := range append(referenceVectors, sdkCapturedVectors...) {
		t.Run(vector.name, func(t *testing.T) {
			clock := newFakeClock(mustParseDate(t, vector.date))
			creds, _ := newTestCredentials(t, clock)
			created := storeCredential(t, creds, vector.ak, vector.sk)
			verifier := NewVerifier(creds, VerifierConfig{Clock: clock.Now})

			req := serverRequest(vector.method, vector.url, vector.headers, vector.body)
			for name, value := range vector.transportHeaders {
				req.Header.Set(name, value)
			}
			req.Header.Set(HeaderDate, vector.date)
			req.Header.Set("Authorization", vector.authorization)

			principal, err := verifier.Verify(context.Background(), req, []byte(vector.body))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if principal != created.Principal {
				t.Errorf("principal = %+v, expected %+v", principal, created.Principal)
			}
		})
	}
}

func TestCanonicalURI(t *testing.T) {
	tests := []struct {
		name string
		path string
		want string
	}{
		{name: "empty path", path: "", want: "/"},
		{name: "root", path: "/", want: "/"},
		{name: "trailing slash added", path: "/v1.0/pid/kms/create-key", want: "/v1.0/pid/kms/create-key/"},
		{name: "trailing slash kept", path: "/v1.0/pid/", want: "/v1.0/pid/"},
		{name: "raw colon encoded", path: "/tags/env:prod", want: "/tags/env%3Aprod/"},
		{name: "encoded colon kept", path: "/tags/env%3Aprod", want: "/tags/env%3Aprod/"},
		{name: "lower-case hex made upper", path: "/tags/env%3aprod", want: "/tags/env%3Aprod/"},
		{name: "encoded slash stays in segment", path: "/a%2Fb", want: "/a%2Fb/"},
		{name: "unreserved left alone", path: "/A-z_0.9~", want: "/A-z_0.9~/"},
		{name: "space and plus encoded", path: "/a%20b+c", want: "/a%20b%2Bc/"},
		{name: "utf-8 encoded per byte", path: "/%C3%A9", want: "/%C3%A9/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := canonicalURI(tt.path)
			if err != nil {
				t.Fatalf("canonicalURI(%q): %v", tt.path, err)
			}
			if got != tt.want {
				t.Errorf("canonicalURI(%q) = %q, expected %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestCanonicalURIInvalidEscape(t *testing.T) {
	if _, err := canonicalURI("/a%zz"); err == nil {
		t.Error("canonicalURI(\"/a%zz\") returned no error")
	}
}

func TestCanonicalQuery(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{name: "empty", query: "", want: ""},
		{name: "keys sorted", query: "limit=10&key_id=abc", want: "key_id=abc&limit=10"},
		{name: "repeated key values sorted", query: "a=2&a=1&a=3", want: "a=1&a=2&a=3"},
		{name: "key without value", query: "flag", want: "flag="},
		{name: "plus decoded as space", query: "q=a+b", want: "q=a%20b"},
		{name: "reserved characters encoded", query: "m=a%3Ab%2Fc", want: "m=a%3Ab%2Fc"},
		{name: "trailing newline of old sdk enums kept", query: "s=x%22%0A", want: "s=x%22%0A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := canonicalQuery(tt.query)
			if err != nil {
				t.Fatalf("canonicalQuery(%q): %v", tt.query, err)
			}
			if got != tt.want {
				t.Errorf("canonicalQuery(%q) = %q, expected %q", tt.query, got, tt.want)
			}
		})
	}
}

func TestDefaultSignedHeaders(t *testing.T) {
	header := http.Header{}
	header.Set("X-Sdk-Date", "20240101T000000Z")
	header.Set("Content-Type", "application/json")
	header.Set("Content-Type-Extra", "x")
	header.Set("X-Project-Id", "pid")
	header["TEST_UNDERSCORE"] = []string{"v"}
	header["user-agent"] = []string{"a"}

	got := defaultSignedHeaders(header)
	want := []string{"user-agent", "x-project-id", "x-sdk-date"}
	if len(got) != len(want) {
		t.Fatalf("defaultSignedHeaders = %v, expected %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("defaultSignedHeaders[%d] = %q, expected %q", i, got[i], want[i])
		}
	}
}
