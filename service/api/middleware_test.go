package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

func TestVerifyErrorClassifies(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantAuth    bool
		wantCode    string
		wantMessage string
	}{
		{"bad signature", fmt.Errorf("x: %w", auth.ErrSignatureMismatch), true, "", ""},
		{"token away", fmt.Errorf("unseal: %w", hsm.ErrUnavailable), false, service.CodeUnavailable,
			"the key token is unavailable; retry later"},
		{"database away", fmt.Errorf("get: %w", store.ErrUnavailable), false, service.CodeUnavailable,
			"the credential store is unavailable; retry later"},
		{"other failure", errors.New("boom"), false, service.CodeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verifyError(tt.err)
			var af *authFailure
			if isAuth := errors.As(got, &af); isAuth != tt.wantAuth {
				t.Fatalf("authentication failure = %v, want %v", isAuth, tt.wantAuth)
			}
			if tt.wantAuth {
				return
			}
			var se *service.Error
			if !errors.As(got, &se) {
				t.Fatalf("error %v is not a *service.Error", got)
			}
			if se.Code != tt.wantCode {
				t.Errorf("code = %s, want %s", se.Code, tt.wantCode)
			}
			if se.Message != tt.wantMessage {
				t.Errorf("message = %q, want %q", se.Message, tt.wantMessage)
			}
		})
	}
}

func TestAuthFailureLogCapsFlood(t *testing.T) {
	var logs bytes.Buffer
	failures := newAuthFailureLog(slog.New(slog.NewTextHandler(&logs, nil)))
	clock := &manualClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	failures.limiter.now, failures.limiter.afterFunc = clock.Now, clock.AfterFunc

	const signature = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	req := httptest.NewRequest(http.MethodPost, "/v1.0/x/kms/list-keys", strings.NewReader("{}"))
	req.Header.Set("Authorization", "SDK-HMAC-SHA256 Access=FLOODKEY, "+
		"SignedHeaders=x-sdk-date, Signature="+signature)
	c := echo.New().NewContext(req, httptest.NewRecorder())
	st := &requestState{id: "0123456789abcdef0123456789abcdef"}
	reason := fmt.Errorf("%w for access key FLOODKEY", auth.ErrSignatureMismatch)

	const flood = 100 * authFailureLinesPerSecond
	for range flood {
		failures.write(c, st, reason)
	}
	clock.advance(time.Second)

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != authFailureLinesPerSecond+1 {
		t.Fatalf("logged %d lines for %d failures, want %d and a summary:\n%s",
			len(lines), flood, authFailureLinesPerSecond, logs.String())
	}
	for _, line := range lines[:authFailureLinesPerSecond] {
		for _, want := range []string{`msg="authentication failed"`, "access_key=FLOODKEY",
			`reason="signature mismatch for access key FLOODKEY"`, "request_id=" + st.id} {
			if !strings.Contains(line, want) {
				t.Errorf("line has no %s: %s", want, line)
			}
		}
		if strings.Contains(line, signature) {
			t.Errorf("line contains the signature: %s", line)
		}
	}
	summary := lines[authFailureLinesPerSecond]
	wantSuppressed := fmt.Sprintf("suppressed=%d", flood-authFailureLinesPerSecond)
	if !strings.Contains(summary, "level=WARN") || !strings.Contains(summary, wantSuppressed) {
		t.Errorf("summary line = %s, want a warning with %s", summary, wantSuppressed)
	}
}

func TestFailedAccessKey(t *testing.T) {
	const signature = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name          string
		authorization string
		reason        error
		want          string
	}{
		{"parsed header", "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, Signature=" +
			signature, auth.ErrSignatureMismatch, "AK1"},
		{"missing header", "", auth.ErrMalformedHeader, ""},
		{"header that does not parse", "SDK-HMAC-SHA256 Access=AK1, Signature=zz",
			auth.ErrMalformedHeader, ""},
		{"locked access key", "", &auth.LockedError{AccessKey: "LOCKED1"}, "LOCKED1"},
		{"signature in Access", "SDK-HMAC-SHA256 Access=" + signature +
			", SignedHeaders=x-sdk-date, Signature=" + signature, auth.ErrUnknownAccessKey,
			auth.RedactedAccessKey},
		{"unknown access key", "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=x-sdk-date, " +
			"Signature=" + signature, auth.ErrUnknownAccessKey, "AK1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", nil)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			if got := failedAccessKey(req, tt.reason); got != tt.want {
				t.Errorf("failedAccessKey = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestAuthFailureOmitsMisplacedSecret writes a signature or the secret key into the
// wrong parameter of the Authorization header. Neither the log nor the audit trail may
// contain it, but both must still name well-formed access keys.
func TestAuthFailureOmitsMisplacedSecret(t *testing.T) {
	e := newTestEnv(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := New(e.svc, auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log}), log,
		Config{Credentials: e.creds, OperatorProjectID: projectP1, Audit: e.trail})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	// No case needs a signature that matches its request.
	const signature = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	upperSignature := strings.ToUpper(signature)
	const unknownAK = "UNKNOWNAK0123456789Z"
	ak := e.admin.ak

	tests := []struct {
		name          string
		access        string
		signedHeaders string
		misplaced     string // the value that must not be logged or recorded, if any
		wantLogged    string // the access_key of the log line, "" for none
		wantRecorded  string // the access key of the audit record
	}{
		{"signature in Access", signature, "x-sdk-date", signature,
			auth.RedactedAccessKey, auth.RedactedAccessKey},
		{"secret key in Access", e.admin.sk, "x-sdk-date", e.admin.sk,
			auth.RedactedAccessKey, auth.RedactedAccessKey},
		{"signature added to SignedHeaders", ak, "x-sdk-date;" + signature, signature, ak, ak},
		{"upper-case signature in SignedHeaders", ak, "x-sdk-date;" + upperSignature,
			upperSignature, "", ""},
		{"signature as the only signed header", ak, signature, signature, ak, ak},
		{"unknown access key", unknownAK, "x-sdk-date", "", unknownAK, unknownAK},
		{"wrong signature", ak, "x-sdk-date", "", ak, ak},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost,
				hs.URL+"/v1.0/"+projectP1+"/kms/list-keys", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			auth.Sign(req, []byte("{}"), e.admin.ak, e.admin.sk, time.Now())
			req.Header.Set("Authorization", auth.FormatAuthorization(tt.access,
				strings.Split(tt.signedHeaders, ";"), signature))

			logged := len(logs.String())
			r := send(t, req)
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.Status, r.Raw)
			}
			output := logs.String()[logged:]
			if !strings.Contains(output, `msg="authentication failed"`) {
				t.Fatalf("no authentication failure logged:\n%s", output)
			}

			records := chainRecords(t, e)
			if len(records) != i+1 {
				t.Fatalf("trail contains %d records, want %d", len(records), i+1)
			}
			record := records[i]
			if record.AccessKey != tt.wantRecorded {
				t.Errorf("recorded access key %q, want %q", record.AccessKey, tt.wantRecorded)
			}
			if tt.wantLogged != "" && !strings.Contains(output, "access_key="+tt.wantLogged) {
				t.Errorf("log does not name access_key=%s:\n%s", tt.wantLogged, output)
			}
			if tt.wantLogged == "" && strings.Contains(output, "access_key=") {
				t.Errorf("log names an access key, want none:\n%s", output)
			}

			if tt.misplaced == "" {
				return
			}
			if strings.Contains(output, tt.misplaced) {
				t.Errorf("log contains the misplaced value:\n%s", output)
			}
			if strings.Contains(fmt.Sprintf("%+v", record), tt.misplaced) {
				t.Errorf("audit record contains the misplaced value: %+v", record)
			}
			if strings.Contains(string(r.Raw), tt.misplaced) {
				t.Errorf("response contains the misplaced value: %s", r.Raw)
			}
		})
	}
}

// unknownKeys is a CredentialSource without credentials.
type unknownKeys struct{}

func (unknownKeys) Lookup(_ context.Context, accessKey string) (auth.Principal, []byte, error) {
	return auth.Principal{}, nil, fmt.Errorf("%w: %s", auth.ErrUnknownAccessKey, accessKey)
}

// TestAuthFailureFloodThroughServer sends a flood of unsigned requests, as wrk did, and
// checks that the log gets at most the budget of lines per second, not one per request.
func TestAuthFailureFloodThroughServer(t *testing.T) {
	var logs syncBuffer
	s := New(nil, auth.NewVerifier(unknownKeys{}, auth.VerifierConfig{}),
		slog.New(slog.NewTextHandler(&logs, nil)), Config{})

	const flood = 50 * authFailureLinesPerSecond
	start := time.Now()
	for range flood {
		req := httptest.NewRequest(http.MethodPost, "/v1.0/x/kms/list-keys", strings.NewReader("{}"))
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", rec.Code)
		}
	}
	seconds := int(time.Since(start)/time.Second) + 1

	logged := strings.Count(logs.String(), `msg="authentication failed"`)
	if logged > seconds*authFailureLinesPerSecond {
		t.Errorf("logged %d lines for %d failures in under %d s, want at most %d per second",
			logged, flood, seconds, authFailureLinesPerSecond)
	}
	if logged == 0 {
		t.Error("logged no authentication failure")
	}
}

// TestSlowBodyGets408 sends a request whose body stops arriving. When the server's read
// timeout passes, the client gets 408 KMS.0202 and a closed connection instead of a
// connection closed without a response, and the call is audited.
func TestSlowBodyGets408(t *testing.T) {
	e := newTestEnv(t)
	srv := New(e.svc, auth.NewVerifier(e.creds, auth.VerifierConfig{}), testLogger(),
		Config{Credentials: e.creds, OperatorProjectID: projectP1, Audit: e.trail})
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Config.ReadTimeout = 300 * time.Millisecond
	hs.Config.WriteTimeout = 10 * time.Second
	hs.Start()
	defer hs.Close()

	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	head := "POST /v1.0/" + projectP1 + "/kms/list-keys HTTP/1.1\r\nHost: kms\r\n" +
		"Authorization: " + auth.FormatAuthorization(e.admin.ak, []string{"x-sdk-date"},
		strings.Repeat("0", 64)) + "\r\n" +
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"lim"
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}

	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408: %s", res.StatusCode, body)
	}
	if !strings.Contains(string(body), `"error_code":"KMS.0202"`) {
		t.Errorf("body %s, want error code KMS.0202", body)
	}
	if !res.Close {
		t.Error("the response does not close the connection")
	}

	records := chainRecords(t, e)
	if len(records) != 1 {
		t.Fatalf("trail contains %d records, want 1", len(records))
	}
	if got := records[0].Status; got != http.StatusRequestTimeout {
		t.Errorf("audited status %d, want 408", got)
	}
	if got := records[0].AccessKey; got != e.admin.ak {
		t.Errorf("audited access key %q, want the one the request sent, %q", got, e.admin.ak)
	}
	if got := records[0].ProjectID; got != projectP1 {
		t.Errorf("audited project %q, want the one in the path, %q", got, projectP1)
	}
}
