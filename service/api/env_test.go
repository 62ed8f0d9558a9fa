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
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// testEnv is a complete server on real components: a SoftHSM2 token of its own, a
// SQLite file in a temporary directory, and an admin credential of project projectP1.
type testEnv struct {
	t      *testing.T
	setup  softhsmsetup.Setup
	dbPath string

	// svcConfig is the service configuration of every start; zero fields take the
	// service defaults, except KeysPerProject, which defaults to 1000 here.
	svcConfig service.Config

	token *hsm.Module
	store store.Store
	// trail records every call of every start; stop verifies the whole trail.
	trail *audit.Trail
	// auditStore, when set, wraps the store that the trail writes to, to inject faults.
	auditStore func(store.AuditStore) store.AuditStore
	// serviceStore, when set, wraps the store that the service reads and writes, to
	// inject faults.
	serviceStore func(store.Store) store.Store
	// auditConfig configures the trail of every start; its Logger is set by start.
	auditConfig audit.Config
	svc         *service.Service
	creds       *auth.Credentials
	http        *httptest.Server

	admin client
	// trailDamaged is set by tests that damage the trail on purpose, so that closeTrail
	// does not verify it.
	trailDamaged bool
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
	return newTestEnvWith(t, service.Config{})
}

// newTestEnvWith starts a server whose service has the configuration cfg.
func newTestEnvWith(t *testing.T, cfg service.Config) *testEnv {
	t.Helper()
	if cfg.KeysPerProject == 0 {
		cfg.KeysPerProject = 1000
	}
	e := &testEnv{
		t:         t,
		setup:     softhsmtest.NewTestToken(t),
		dbPath:    testDatabaseURL(t),
		svcConfig: cfg,
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
	// One token call at a time, as kmsd runs the embedded SoftHSM2 token.
	tok, err := hsm.Open(ctx, hsm.Config{
		ModulePath: e.setup.ModulePath, TokenLabel: e.setup.TokenLabel, PIN: pin,
		MaxConcurrentCalls: 1,
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
	var svcStore store.Store = st
	if e.serviceStore != nil {
		svcStore = e.serviceStore(st)
	}
	svc := service.New(tok, svcStore, log, e.svcConfig)
	e.svc = svc
	var auditStore store.AuditStore = st
	if e.auditStore != nil {
		auditStore = e.auditStore(st)
	}
	auditConfig := e.auditConfig
	auditConfig.Logger = log
	e.trail, err = audit.Open(ctx, auditStore, tok, auditConfig)
	if err != nil {
		t.Fatalf("open audit trail: %v", err)
	}
	srv := New(svc, verifier, log, Config{Credentials: e.creds, OperatorProjectID: projectP1,
		Audit: e.trail, AuditSource: st, AuditPublicKey: e.trail.PublicKey})
	e.http = httptest.NewServer(srv.Handler())
	e.admin.base = e.http.URL
}

func (e *testEnv) stop() {
	if e.http == nil {
		return
	}
	e.http.Close()
	if err := e.svc.FlushSealCounts(context.Background()); err != nil {
		e.t.Errorf("flush seal counts: %v", err)
	}
	e.closeTrail()
	if err := e.store.Close(); err != nil {
		e.t.Errorf("close store: %v", err)
	}
	if err := e.token.Close(); err != nil {
		e.t.Errorf("close token: %v", err)
	}
	e.http = nil
}

// closeTrail flushes the audit trail and verifies every chain in the database, so that
// every test that uses the harness also checks the trail its calls produced.
func (e *testEnv) closeTrail() {
	if err := e.trail.Close(); err != nil {
		e.t.Errorf("close audit trail: %v", err)
	}
	if e.trailDamaged {
		return
	}
	key, err := e.trail.PublicKey(context.Background())
	if err != nil {
		e.t.Fatalf("read audit public key: %v", err)
	}
	report, err := audit.VerifySource(context.Background(), e.store, key)
	if err != nil {
		e.t.Errorf("audit trail does not verify: %v", err)
	}
	if n := report.UnsignedRecords(); n != 0 {
		e.t.Errorf("audit trail has %d records after the last checkpoint of their chain", n)
	}
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

// response is a decoded HTTP response.
type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

// code returns the KMS or gateway error code of the response, "" when it has none.
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

// mustPost posts and fails the test unless the response is 200.
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

// testDatabaseURL returns a fresh database for one test: a SQLite file, or with
// KMS_TEST_BACKEND=postgres a schema of its own on the test PostgreSQL server
// (storetest.PostgresURL), so that the whole HTTP suite runs on either backend.
func testDatabaseURL(t *testing.T) string {
	t.Helper()
	if os.Getenv("KMS_TEST_BACKEND") == storetest.Postgres {
		return storetest.PostgresURL(t)
	}
	return filepath.Join(t.TempDir(), "kms.db")
}

// requireSQLite skips a test that edits the SQLite file directly.
func requireSQLite(t *testing.T) {
	t.Helper()
	if os.Getenv("KMS_TEST_BACKEND") == storetest.Postgres {
		t.Skip("this test edits a copy of the SQLite file; the PostgreSQL run covers the rest")
	}
}
