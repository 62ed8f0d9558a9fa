package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testAK = "HPUAXK2VQ5ZJ8WCNMD3E"
	testSK = "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB"
)

var testNow = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// verifierFixture is a Verifier over real Credentials holding (testAK, testSK).
type verifierFixture struct {
	verifier *Verifier
	creds    *Credentials
	clock    *fakeClock
}

func newVerifierFixture(t *testing.T, cfg VerifierConfig) verifierFixture {
	t.Helper()

	clock := newFakeClock(testNow)
	creds, _ := newTestCredentials(t, clock)
	importCredential(t, creds, testAK, testSK)

	cfg.Clock = clock.Now
	cfg.Logger = slog.New(slog.DiscardHandler)
	return verifierFixture{verifier: NewVerifier(creds, cfg), creds: creds, clock: clock}
}

// signedRequest signs a request as a client at signedAt and returns it as the server
// receives it: same method, raw request target, headers and body.
func signedRequest(t *testing.T, method, target, body string, signedAt time.Time) *http.Request {
	t.Helper()

	client := clientRequest(t, method, "http://kms.example.com"+target, map[string]string{
		"User-Agent":   "huaweicloud-usdk-go/3.0",
		"X-Project-Id": "pid",
		"Content-Type": "application/json",
	}, body)
	Sign(client, []byte(body), testAK, testSK, signedAt)
	return toServer(client, target, body)
}

// toServer copies a signed client request into a server request for target.
func toServer(client *http.Request, target, body string) *http.Request {
	server := httptest.NewRequest(client.Method, target, strings.NewReader(body))
	server.Host = "kms.example.com"
	for name, values := range client.Header {
		server.Header[http.CanonicalHeaderKey(name)] = values
	}
	return server
}

func (f verifierFixture) verify(req *http.Request, body string) (Principal, error) {
	return f.verifier.Verify(context.Background(), req, []byte(body))
}

func TestVerifyDateWindow(t *testing.T) {
	tests := []struct {
		name    string
		date    string
		wantErr error
	}{
		{name: "signed now", date: testNow.Format(DateFormat)},
		{name: "14 minutes behind", date: testNow.Add(-14 * time.Minute).Format(DateFormat)},
		{name: "14 minutes ahead", date: testNow.Add(14 * time.Minute).Format(DateFormat)},
		{
			name:    "16 minutes behind",
			date:    testNow.Add(-16 * time.Minute).Format(DateFormat),
			wantErr: ErrDateExpired,
		},
		{
			name:    "16 minutes ahead",
			date:    testNow.Add(16 * time.Minute).Format(DateFormat),
			wantErr: ErrDateExpired,
		},
		{name: "RFC 3339 form", date: "2021-12-17T06:43:03Z", wantErr: ErrInvalidDate},
		{name: "missing", date: "", wantErr: ErrMissingDate},
	}
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 100})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/create-key",
				map[string]string{"X-Project-Id": "pid"}, "{}\n")
			client.Header.Set(HeaderDate, tt.date)
			signWithHeaders(client, []byte("{}\n"), testAK, testSK, []string{"x-project-id", "x-sdk-date"})
			req := toServer(client, "/v1.0/pid/kms/create-key", "{}\n")
			if tt.date == "" {
				req.Header.Del(HeaderDate)
			}

			_, err := f.verify(req, "{}\n")
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify error = %v, expected %v", err, tt.wantErr)
			}
			if tt.date != "" && errors.Is(err, ErrMissingDate) {
				t.Errorf("Verify error = %v matches ErrMissingDate for a date that was sent", err)
			}
		})
	}
}

func TestVerifyConfiguredWindow(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{Window: time.Minute})

	req := signedRequest(t, http.MethodGet, "/v1.0/pid/kms/user-quotas", "", testNow.Add(-2*time.Minute))
	if _, err := f.verify(req, ""); !errors.Is(err, ErrDateExpired) {
		t.Errorf("Verify error = %v, expected %v", err, ErrDateExpired)
	}
}

func TestVerifyDeleteTagWithEncodedColon(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	target := "/v1.0/pid/kms/0d0466b0-e727-4d9c-b35d-f84bb474a37f/tags/env%3Aprod"

	req := signedRequest(t, http.MethodDelete, target, "", testNow)
	if req.RequestURI != target {
		t.Fatalf("RequestURI = %q, expected %q", req.RequestURI, target)
	}

	principal, err := f.verify(req, "")
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if principal.AccessKey != testAK {
		t.Errorf("principal access key = %q, expected %q", principal.AccessKey, testAK)
	}
}

// canonicalWithoutTrailingSlash signs req as a client that forgets the trailing "/" of
// the canonical URI.
func canonicalWithoutTrailingSlash(t *testing.T, req *http.Request, body string) string {
	t.Helper()

	signed := []string{"x-project-id", "x-sdk-date"}
	canonical, err := canonicalRequest(requestParts{
		method:      req.Method,
		escapedPath: req.URL.EscapedPath(),
		rawQuery:    req.URL.RawQuery,
		header:      req.Header,
		payloadHash: hashPayload([]byte(body)),
	}, signed)
	if err != nil {
		t.Fatalf("canonical request: %v", err)
	}

	if !strings.Contains(canonical, "/create-key/\n") {
		t.Fatalf("canonical request has no trailing slash to remove:\n%s", canonical)
	}
	canonical = strings.Replace(canonical, "/create-key/\n", "/create-key\n", 1)
	signature := computeSignature([]byte(testSK), req.Header.Get(HeaderDate), canonical)
	return FormatAuthorization(testAK, signed, hex.EncodeToString(signature))
}

func TestVerifyRejectsMissingTrailingSlash(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	body := "{}\n"
	client := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/create-key",
		map[string]string{"X-Project-Id": "pid"}, body)
	client.Header.Set(HeaderDate, testNow.Format(DateFormat))
	client.Header.Set("Authorization", canonicalWithoutTrailingSlash(t, client, body))

	_, err := f.verify(toServer(client, "/v1.0/pid/kms/create-key", body), body)
	if !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Verify error = %v, expected %v", err, ErrSignatureMismatch)
	}
}

func TestVerifyHostAndDateOnly(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	body := "{\"key_id\":\"0d0466b0-e727-4d9c-b35d-f84bb474a37f\"}\n"
	client := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/describe-key",
		nil, body)
	client.Header.Set(HeaderDate, testNow.Format(DateFormat))
	signWithHeaders(client, []byte(body), testAK, testSK, []string{"host", "x-sdk-date"})

	req := toServer(client, "/v1.0/pid/kms/describe-key", body)
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Project-Id", "pid")

	if _, err := f.verify(req, body); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	req.Host = "other.example.com"
	if _, err := f.verify(req, body); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Verify with another Host: error = %v, expected %v", err, ErrSignatureMismatch)
	}
}

func TestVerifyRejectsTamperedRequest(t *testing.T) {
	const body = "{\"key_id\":\"0d0466b0-e727-4d9c-b35d-f84bb474a37f\",\"datakey_length\":\"512\"}\n"
	tests := []struct {
		name    string
		tamper  func(req *http.Request) (string, *http.Request)
		wantErr error
	}{
		{
			name: "signed header changed",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.Header.Set("X-Project-Id", "other")
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "signed header removed",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.Header.Del("User-Agent")
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "body changed by one byte",
			tamper: func(req *http.Request) (string, *http.Request) {
				return strings.Replace(body, "512", "513", 1), req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "body without trailing newline",
			tamper: func(req *http.Request) (string, *http.Request) {
				return strings.TrimSuffix(body, "\n"), req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "method changed",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.Method = http.MethodPut
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "query added",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.URL.RawQuery = "limit=1"
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "path changed",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.RequestURI = "/v1.0/pid/kms/create-datakey-without-plaintext"
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
		{
			name: "signed headers without x-sdk-date",
			tamper: func(req *http.Request) (string, *http.Request) {
				auth := req.Header.Get("Authorization")
				auth = strings.Replace(auth, ";x-sdk-date", "", 1)
				req.Header.Set("Authorization", auth)
				return body, req
			},
			wantErr: ErrMalformedHeader,
		},
		{
			name: "authorization missing",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.Header.Del("Authorization")
				return body, req
			},
			wantErr: ErrMalformedHeader,
		},
		{
			name: "unknown access key",
			tamper: func(req *http.Request) (string, *http.Request) {
				auth := strings.Replace(req.Header.Get("Authorization"), testAK, "NOSUCHKEY", 1)
				req.Header.Set("Authorization", auth)
				return body, req
			},
			wantErr: ErrUnknownAccessKey,
		},
		{
			name: "unsigned payload with json body",
			tamper: func(req *http.Request) (string, *http.Request) {
				req.Header.Set(HeaderContentSHA256, UnsignedPayload)
				return body, req
			},
			wantErr: ErrSignatureMismatch,
		},
	}
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 100})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := signedRequest(t, http.MethodPost, "/v1.0/pid/kms/create-datakey", body, testNow)
			if _, err := f.verify(req, body); err != nil {
				t.Fatalf("Verify before tampering: %v", err)
			}

			tamperedBody, tampered := tt.tamper(req)
			_, err := f.verify(tampered, tamperedBody)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify error = %v, expected %v", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyContentSHA256Header(t *testing.T) {
	const body = "{\"plain_text\":\"hello\"}\n"
	tests := []struct {
		name        string
		contentType string
		declared    string
		wantErr     error
	}{
		{name: "hash of body", contentType: "application/json", declared: hashPayload([]byte(body))},
		{
			name:        "upper-case hash of body",
			contentType: "application/json",
			declared:    strings.ToUpper(hashPayload([]byte(body))),
		},
		{
			name:        "hash of another body",
			contentType: "application/json",
			declared:    hashPayload([]byte("{}")),
			wantErr:     ErrSignatureMismatch,
		},
		{
			name:        "unsigned octet stream with a body",
			contentType: "application/octet-stream",
			declared:    UnsignedPayload,
			wantErr:     ErrSignatureMismatch,
		},
		{
			name:        "unsigned json",
			contentType: "application/json;charset=UTF-8",
			declared:    UnsignedPayload,
			wantErr:     ErrSignatureMismatch,
		},
		{
			name:        "unsigned bson",
			contentType: "application/bson",
			declared:    UnsignedPayload,
			wantErr:     ErrSignatureMismatch,
		},
		{name: "unsigned without content type", declared: UnsignedPayload, wantErr: ErrSignatureMismatch},
	}
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 100})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{HeaderContentSHA256: tt.declared}
			if tt.contentType != "" {
				headers["Content-Type"] = tt.contentType
			}
			client := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/encrypt-data",
				headers, body)
			Sign(client, []byte(body), testAK, testSK, testNow)

			_, err := f.verify(toServer(client, "/v1.0/pid/kms/encrypt-data", body), body)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Verify error = %v, expected %v", err, tt.wantErr)
			}
		})
	}
}

// TestVerifyUnsignedPayload checks that UNSIGNED-PAYLOAD passes for an empty body only:
// a body that the signature does not cover could be swapped in transit.
func TestVerifyUnsignedPayload(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 100})
	headers := map[string]string{"Content-Type": "application/octet-stream",
		HeaderContentSHA256: UnsignedPayload}

	empty := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/upload",
		headers, "")
	Sign(empty, nil, testAK, testSK, testNow)
	if _, err := f.verify(toServer(empty, "/v1.0/pid/kms/upload", ""), ""); err != nil {
		t.Errorf("Verify of an unsigned empty body: %v", err)
	}

	swapped := clientRequest(t, http.MethodPost, "http://kms.example.com/v1.0/pid/kms/upload",
		headers, "first")
	Sign(swapped, []byte("first"), testAK, testSK, testNow)
	_, err := f.verify(toServer(swapped, "/v1.0/pid/kms/upload", "second"), "second")
	if !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("Verify of an unsigned body swapped in transit: %v, expected %v", err,
			ErrSignatureMismatch)
	}
}

func TestVerifyResignedRequest(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	client := clientRequest(t, http.MethodGet, "http://kms.example.com/v1.0/pid/kms/user-quotas",
		map[string]string{"X-Project-Id": "pid"}, "")
	Sign(client, nil, testAK, "wrong-secret", testNow)
	Sign(client, nil, testAK, testSK, testNow)

	if got := client.Header.Get("Authorization"); strings.Contains(got, "authorization") {
		t.Errorf("Authorization %q signs the earlier Authorization header", got)
	}
	if _, err := f.verify(toServer(client, "/v1.0/pid/kms/user-quotas", ""), ""); err != nil {
		t.Errorf("Verify of a re-signed request: %v", err)
	}
}

func TestVerifyDisabledAccessKey(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	if err := f.creds.Disable(context.Background(), testAK); err != nil {
		t.Fatalf("Disable: %v", err)
	}

	req := signedRequest(t, http.MethodGet, "/v1.0/pid/kms/user-quotas", "", testNow)
	_, err := f.verify(req, "")
	if !errors.Is(err, ErrDisabledAccessKey) {
		t.Errorf("Verify error = %v, expected %v", err, ErrDisabledAccessKey)
	}
	if got := Message(err); got != messageUnknownAK {
		t.Errorf("Message = %q, expected %q", got, messageUnknownAK)
	}
}

// badSignatureRequest returns a request signed with the wrong secret key.
func badSignatureRequest(t *testing.T) *http.Request {
	t.Helper()

	client := clientRequest(t, http.MethodGet, "http://kms.example.com/v1.0/pid/kms/user-quotas",
		map[string]string{"X-Project-Id": "pid"}, "")
	Sign(client, nil, testAK, "wrong-secret", testNow)
	return toServer(client, "/v1.0/pid/kms/user-quotas", "")
}

func TestVerifyLockout(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 3, LockDuration: 2 * time.Minute})
	good := func() *http.Request {
		return signedRequest(t, http.MethodGet, "/v1.0/pid/kms/user-quotas", "", f.clock.Now())
	}

	for i := 1; i <= 3; i++ {
		_, err := f.verify(badSignatureRequest(t), "")
		if !errors.Is(err, ErrSignatureMismatch) {
			t.Fatalf("failure %d: error = %v, expected %v", i, err, ErrSignatureMismatch)
		}
	}

	_, err := f.verify(good(), "")
	if !IsLocked(err) {
		t.Fatalf("Verify after 3 failures: error = %v, expected a lock", err)
	}
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("Verify after 3 failures: error %T is not a *LockedError", err)
	}
	if want := testNow.Add(2 * time.Minute); !locked.Until.Equal(want) {
		t.Errorf("locked until %v, expected %v", locked.Until, want)
	}
	if got := Message(err); got != messageLocked {
		t.Errorf("Message = %q, expected %q", got, messageLocked)
	}

	f.clock.Advance(2*time.Minute - time.Second)
	if _, err := f.verify(good(), ""); !IsLocked(err) {
		t.Errorf("Verify 1 s before the lock ends: error = %v, expected a lock", err)
	}

	f.clock.Advance(time.Second)
	if _, err := f.verify(good(), ""); err != nil {
		t.Errorf("Verify when the lock ends: %v", err)
	}
}

func TestVerifySuccessResetsFailures(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 3})
	good := signedRequest(t, http.MethodGet, "/v1.0/pid/kms/user-quotas", "", testNow)

	for round := 0; round < 3; round++ {
		for i := 0; i < 2; i++ {
			if _, err := f.verify(badSignatureRequest(t), ""); !errors.Is(err, ErrSignatureMismatch) {
				t.Fatalf("round %d failure %d: error = %v", round, i, err)
			}
		}
		if _, err := f.verify(good, ""); err != nil {
			t.Fatalf("round %d: Verify after 2 failures: %v", round, err)
		}
	}
}

func TestVerifyUnknownAccessKeyNotTracked(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{MaxFailures: 1})
	client := clientRequest(t, http.MethodGet, "http://kms.example.com/v1.0/pid/kms/user-quotas", nil, "")
	Sign(client, nil, "UNKNOWNKEY", "secret", testNow)

	for i := 0; i < 3; i++ {
		_, err := f.verify(toServer(client, "/v1.0/pid/kms/user-quotas", ""), "")
		if !errors.Is(err, ErrUnknownAccessKey) {
			t.Fatalf("attempt %d: error = %v, expected %v", i, err, ErrUnknownAccessKey)
		}
	}
	if n := f.verifier.lockout.tracked(); n != 0 {
		t.Errorf("tracked access keys = %d, expected 0", n)
	}
}

func TestLockoutBoundedMemory(t *testing.T) {
	l := newLockout(2, time.Minute, 3)
	now := testNow

	for _, ak := range []string{"A", "B", "C", "D", "E"} {
		now = now.Add(time.Second)
		l.recordFailure(ak, now)
	}
	if n := l.tracked(); n != 3 {
		t.Errorf("tracked = %d, expected 3", n)
	}

	// Lock C, D and E. A new key then evicts the lock that ends first, C's.
	for _, ak := range []string{"C", "D", "E"} {
		now = now.Add(time.Second)
		l.recordFailure(ak, now)
	}
	now = now.Add(time.Second)
	l.recordFailure("F", now)

	if n := l.tracked(); n != 3 {
		t.Errorf("tracked = %d, expected 3", n)
	}
	if _, locked := l.lockedUntil("C", now); locked {
		t.Error("C is still locked, expected it evicted")
	}
	if _, locked := l.lockedUntil("E", now); !locked {
		t.Error("E is not locked, expected it kept")
	}
}

func TestReceivedPath(t *testing.T) {
	tests := []struct {
		name       string
		requestURI string
		want       string
	}{
		{name: "origin form", requestURI: "/v1.0/pid/kms/tags/env%3Aprod?x=1", want: "/v1.0/pid/kms/tags/env%3Aprod"},
		{name: "absolute form", requestURI: "http://kms.example.com/a%2Fb?x=1", want: "/a%2Fb"},
		{name: "absolute form without path", requestURI: "http://kms.example.com", want: "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.RequestURI = tt.requestURI
			if got := receivedPath(req); got != tt.want {
				t.Errorf("receivedPath(%q) = %q, expected %q", tt.requestURI, got, tt.want)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{err: ErrSignatureMismatch, want: messageSignature},
		{err: ErrMalformedHeader, want: messageSignature},
		{err: ErrUnknownAccessKey, want: messageUnknownAK},
		{err: ErrDisabledAccessKey, want: messageUnknownAK},
		{err: ErrDateExpired, want: messageDate},
		{err: ErrInvalidDate, want: messageInvalidDate},
		{err: ErrMissingDate, want: messageMissingDate},
		{err: fmt.Errorf("verify: %w", ErrMissingDate), want: messageMissingDate},
		{err: &LockedError{AccessKey: "AK", Until: testNow}, want: messageLocked},
		{err: errors.New("database unavailable"), want: messageInternal},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := Message(tt.err); got != tt.want {
				t.Errorf("Message(%v) = %q, expected %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestVerifyErrorsOmitSecrets(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	client := clientRequest(t, http.MethodGet, "http://kms.example.com/v1.0/pid/kms/user-quotas",
		map[string]string{"X-Project-Id": "pid"}, "")
	Sign(client, nil, testAK, testSK, testNow)
	_, expected, _ := strings.Cut(client.Header.Get("Authorization"), "Signature=")

	Sign(client, nil, testAK, "wrong-secret", testNow)
	_, err := f.verify(toServer(client, "/v1.0/pid/kms/user-quotas", ""), "")
	if !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("Verify error = %v, expected %v", err, ErrSignatureMismatch)
	}

	for _, secret := range []string{testSK, expected, expected[:16]} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains %q", err, secret)
		}
	}
}

// TestVerifyErrorsOmitMisplacedSecret writes the signature or the secret key into the
// wrong parameter of the Authorization header. Verify's error, which kmsd logs, and
// RecordedAccessKey, which kmsd logs and records, must not repeat it, but must still
// show access keys.
func TestVerifyErrorsOmitMisplacedSecret(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})
	// 42 characters, which Create now rejects. A store can still hold such a key from an
	// earlier version, and a failure of its calls must still show it.
	const longAK = "imported-access-key_0123456789abcdefghijkl"
	storeCredential(t, f.creds, longAK, testSK)

	req := signedRequest(t, http.MethodPost, "/v1/pid/kms/list-keys", "{}", testNow)
	parsed, err := ParseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	signature := hex.EncodeToString(parsed.Signature)
	signed := parsed.SignedHeaders
	withHeader := func(extra ...string) []string {
		return append(append([]string(nil), signed...), extra...)
	}
	const unknownAK = "UNKNOWNAK0123456789Z"
	wrongSignature := strings.Repeat("0", 64)

	tests := []struct {
		name          string
		access        string
		signedHeaders []string
		signature     string
		wantErr       error
		secret        string // must not occur in the error or the recorded access key
		wantRecorded  string
	}{
		{"signature in Access", signature, signed, signature, ErrUnknownAccessKey,
			signature, RedactedAccessKey},
		{"secret key in Access", testSK, signed, signature, ErrUnknownAccessKey,
			testSK, RedactedAccessKey},
		{"signature added to SignedHeaders", testAK, withHeader(signature), signature,
			ErrSignatureMismatch, signature, testAK},
		{"upper-case signature in SignedHeaders", testAK,
			withHeader(strings.ToUpper(signature)), signature, ErrMalformedHeader,
			strings.ToUpper(signature), testAK},
		{"signature twice in SignedHeaders", testAK, withHeader(signature, signature),
			signature, ErrMalformedHeader, signature, testAK},
		{"unknown access key", unknownAK, signed, signature, ErrUnknownAccessKey, "",
			unknownAK},
		{"wrong signature", testAK, signed, wrongSignature, ErrSignatureMismatch, "", testAK},
		{"long access key, wrong signature", longAK, signed, wrongSignature,
			ErrSignatureMismatch, "", longAK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := signedRequest(t, http.MethodPost, "/v1/pid/kms/list-keys", "{}", testNow)
			req.Header.Set("Authorization",
				FormatAuthorization(tt.access, tt.signedHeaders, tt.signature))

			_, err := f.verify(req, "{}")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q repeats the misplaced value", err)
			}
			if tt.secret == "" && !strings.Contains(err.Error(), tt.access) {
				t.Errorf("error %q does not name the access key %s", err, tt.access)
			}
			if got := RecordedAccessKey(tt.access, err); got != tt.wantRecorded {
				t.Errorf("RecordedAccessKey = %q, want %q", got, tt.wantRecorded)
			}
		})
	}
}

// failingSource is a CredentialSource whose lookups fail as a store that cannot be
// reached does, with the access key in the error as SQLStore.GetCredential puts it.
type failingSource struct{}

func (failingSource) Lookup(_ context.Context, accessKey string) (Principal, []byte, error) {
	return Principal{}, nil, fmt.Errorf("get credential %s: %w", accessKey, errStoreDown)
}

var errStoreDown = errors.New("store unavailable")

func TestVerifyLookupFailureOmitsMisplacedSecret(t *testing.T) {
	clock := newFakeClock(testNow)
	verifier := NewVerifier(failingSource{}, VerifierConfig{Clock: clock.Now})

	tests := []struct {
		name      string
		access    string
		wantShown string // the access key as the error must show it
	}{
		{"signature in Access", testSignature, RedactedAccessKey},
		{"secret key in Access", testSK, RedactedAccessKey},
		{"access key", testAK, testAK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := signedRequest(t, http.MethodPost, "/v1/pid/kms/list-keys", "{}", testNow)
			req.Header.Set("Authorization",
				FormatAuthorization(tt.access, []string{"x-sdk-date"}, testSignature))

			_, err := verifier.Verify(context.Background(), req, []byte("{}"))
			if !errors.Is(err, errStoreDown) {
				t.Fatalf("error %v, want one wrapping %v", err, errStoreDown)
			}
			want := fmt.Sprintf("look up access key %s: get credential %s: %v",
				tt.wantShown, tt.wantShown, errStoreDown)
			if err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
}

func TestInvalidDateErrorOmitsValue(t *testing.T) {
	f := newVerifierFixture(t, VerifierConfig{})

	tests := []struct {
		name     string
		date     string
		wantText string // the part of the error that names the value
	}{
		{"another date format", "2026-12-05T12:00:00Z", `"2026-12-05T12:00:00Z"`},
		{"secret key pasted", testSK, "a value of 40 bytes"},
		{"signature pasted", strings.Repeat("ab", 32), "a value of 64 bytes"},
		{"digits-only secret key pasted", "01234567890123456789012345678901",
			"a value of 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := signedRequest(t, http.MethodPost, "/v1/pid/kms/list-keys", "{}", testNow)
			req.Header.Set(HeaderDate, tt.date)

			_, err := f.verify(req, "{}")
			if !errors.Is(err, ErrInvalidDate) {
				t.Fatalf("error %v, want ErrInvalidDate", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q, want it to contain %s", err, tt.wantText)
			}
			if tt.wantText != strconv.Quote(tt.date) && strings.Contains(err.Error(), tt.date) {
				t.Errorf("error %q repeats the pasted value", err)
			}
		})
	}
}
