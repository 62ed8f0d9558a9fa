package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// testEnv is a complete server on real components: a SoftHSM2 token of its own, a
// SQLite file in a temporary directory, and an admin credential of project projectP1.
type testEnv struct {
	t      *testing.T
	setup  softhsmsetup.Setup
	dbPath string

	token *hsm.Module
	store store.Store
	creds *auth.Credentials
	http  *httptest.Server

	admin client
}

const (
	projectP1 = "0123456789abcdef0123456789abcdef"
	domainD1  = "fedcba9876543210fedcba9876543210"
)

func testLogger() *slog.Logger {
	if os.Getenv("KMS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newTestEnv starts a server; t.Cleanup stops it.
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{
		t:      t,
		setup:  softhsmtest.NewTestToken(t),
		dbPath: filepath.Join(t.TempDir(), "kms.db"),
	}
	e.start()
	t.Cleanup(e.stop)

	cred, secret, err := e.creds.Create(context.Background(), auth.CreateRequest{
		ProjectID: projectP1, DomainID: domainD1, Role: auth.RoleAdmin,
	})
	if err != nil {
		t.Fatalf("create admin credential: %v", err)
	}
	e.admin = e.client(cred.AccessKey, secret, projectP1)
	return e
}

// start opens the token and the store and serves HTTP. It is also the second half of
// restart, so it must find everything the previous start made.
func (e *testEnv) start() {
	t := e.t
	ctx := context.Background()
	log := testLogger()

	pin, err := e.setup.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := hsm.Open(ctx, hsm.Config{
		ModulePath: e.setup.ModulePath, TokenLabel: e.setup.TokenLabel, PIN: pin,
	}, log)
	if err != nil {
		t.Fatalf("open token: %v", err)
	}
	st, err := store.Open(ctx, e.dbPath, log)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}

	e.token, e.store = tok, st
	e.creds = auth.NewCredentials(st, tok, auth.CredentialsConfig{Logger: log})
	verifier := auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log})
	svc := service.New(tok, st, log, service.Config{KeysPerProject: 1000})
	srv := New(svc, verifier, log, Config{Credentials: e.creds})
	e.http = httptest.NewServer(srv.Handler())
	e.admin.base = e.http.URL
}

func (e *testEnv) stop() {
	if e.http == nil {
		return
	}
	e.http.Close()
	if err := e.store.Close(); err != nil {
		e.t.Errorf("close store: %v", err)
	}
	if err := e.token.Close(); err != nil {
		e.t.Errorf("close token: %v", err)
	}
	e.http = nil
}

// restart stops every component and starts them again on the same token and file.
func (e *testEnv) restart() {
	e.stop()
	e.start()
}

// client signs requests with one access key pair.
type client struct {
	base      string
	ak, sk    string
	projectID string
	// env, when set, gives the current base URL (it changes on restart).
	env *testEnv
}

func (e *testEnv) client(ak, sk, projectID string) client {
	return client{base: e.http.URL, ak: ak, sk: sk, projectID: projectID, env: e}
}

// response is a decoded answer.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// code returns the KMS or gateway error code of the answer, "" when it has none.
func (r response) code() string {
	if inner, ok := r.Body["error"].(map[string]any); ok {
		code, _ := inner["error_code"].(string)
		return code
	}
	code, _ := r.Body["error_code"].(string)
	return code
}

func (r response) str(field string) string {
	s, _ := r.Body[field].(string)
	return s
}

// do sends a signed request to path (relative to /v1.0/<project>/kms/ unless it starts
// with "/") with body marshalled to JSON, or sent as is when it is a []byte or string.
func (c client) do(t testing.TB, method, path string, body any) response {
	t.Helper()
	raw := encodeBody(t, body)

	url := path
	if len(path) == 0 || path[0] != '/' {
		url = "/v1.0/" + c.projectID + "/kms/" + path
	}
	base := c.base
	if c.env != nil && c.env.http != nil {
		base = c.env.http.URL
	}
	req, err := http.NewRequest(method, base+url, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Project-Id", c.projectID)
	auth.Sign(req, raw, c.ak, c.sk, time.Now())
	return send(t, req)
}

func encodeBody(t testing.TB, body any) []byte {
	switch b := body.(type) {
	case nil:
		return nil
	case []byte:
		return b
	case string:
		return []byte(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
}

func send(t testing.TB, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()

	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.Body); err != nil {
			t.Fatalf("answer is not JSON: %v: %s", err, raw)
		}
	}
	return r
}

func (c client) post(t testing.TB, op string, body any) response {
	t.Helper()
	return c.do(t, http.MethodPost, op, body)
}

// mustPost posts and fails the test unless the answer is 200.
func (c client) mustPost(t testing.TB, op string, body any) response {
	t.Helper()
	r := c.post(t, op, body)
	if r.Status != http.StatusOK {
		t.Fatalf("%s: status %d, body %s", op, r.Status, r.Raw)
	}
	return r
}

// createKey creates an AES_256 key with a unique alias and returns its id.
func (c client) createKey(t testing.TB, alias string) string {
	t.Helper()
	r := c.mustPost(t, "create-key", map[string]any{"key_alias": alias})
	info, _ := r.Body["key_info"].(map[string]any)
	id, _ := info["key_id"].(string)
	if id == "" {
		t.Fatalf("create-key answered no key id: %s", r.Raw)
	}
	return id
}
