package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
)

// metricsEnv is a second server over the token, store and credentials of a testEnv,
// with metrics and a metered token, as kmsd wires it.
type metricsEnv struct {
	*testEnv
	http  *httptest.Server
	admin client
}

func newMetricsEnv(t *testing.T, edit func(*Config)) *metricsEnv {
	t.Helper()
	e := newTestEnv(t)
	log := testLogger()

	reg := prometheus.NewRegistry()
	if err := hsm.RegisterStats(reg, e.token); err != nil {
		t.Fatal(err)
	}
	token, err := hsm.NewMeteredToken(e.token, reg)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(token, e.store, log, service.Config{KeysPerProject: 1000})
	metrics, err := NewMetrics(reg, svc)
	if err != nil {
		t.Fatal(err)
	}

	cfg := Config{
		Credentials: e.creds,
		Metrics:     metrics,
		Ready: func(ctx context.Context) error {
			if err := token.Ping(ctx); err != nil {
				return fmt.Errorf("%w: %w", ErrTokenNotReady, err)
			}
			return nil
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	verifier := auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log})
	srv := httptest.NewServer(New(svc, verifier, log, cfg).Handler())
	t.Cleanup(srv.Close)

	admin := e.admin
	admin.base, admin.env = srv.URL, nil
	return &metricsEnv{testEnv: e, http: srv, admin: admin}
}

// get sends an unsigned GET and returns the status and body.
func (m *metricsEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := http.Get(m.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()

	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(body)
}

// metricValue returns the value of the sample line that starts with series, or -1 when
// /metrics has none.
func (m *metricsEnv) metricValue(t *testing.T, series string) float64 {
	t.Helper()
	_, body := m.get(t, "/metrics")
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		return v
	}
	return -1
}

func TestMetricsCountRequests(t *testing.T) {
	m := newMetricsEnv(t, nil)
	keyID := m.admin.createKey(t, "metrics")
	m.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	m.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	if r := m.admin.post(t, "describe-key", map[string]any{"key_id": "not-a-key"}); r.Status != 400 {
		t.Fatalf("describe-key of an invalid id: status %d", r.Status)
	}

	status, body := m.get(t, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", status)
	}

	tests := []struct {
		series string
		want   float64
	}{
		{`kms_http_requests_total{operation="create-key",status="200"}`, 1},
		{`kms_http_requests_total{operation="create-datakey",status="200"}`, 2},
		{`kms_http_requests_total{operation="describe-key",status="400"}`, 1},
		{`kms_http_request_duration_seconds_count{operation="create-datakey"}`, 2},
		{`kms_token_connected`, 1},
		{`kms_key_cache_hits_total`, 1},
		{`kms_key_cache_misses_total`, 1},
	}
	for _, tt := range tests {
		if got := m.metricValue(t, tt.series); got != tt.want {
			t.Errorf("%s = %v, expected %v", tt.series, got, tt.want)
		}
	}
	// create-datakey generates and seals its data key in one token call.
	if got := m.metricValue(t, `kms_token_operation_duration_seconds_count{operation="seal_random"}`); got < 2 {
		t.Errorf("token seal_random latency count = %v, expected at least 2", got)
	}

	if strings.Contains(body, keyID) {
		t.Error("/metrics serves a key id")
	}
	if strings.Contains(body, projectP1) {
		t.Error("/metrics serves a project id")
	}
}

func TestMetricsLabelUnknownRoutes(t *testing.T) {
	m := newMetricsEnv(t, nil)
	if status, _ := m.get(t, "/no-such-route"); status != http.StatusNotFound {
		t.Fatalf("GET /no-such-route: status %d, expected 404", status)
	}
	// The group's authentication runs before echo finds no route, so this is 401.
	if status, _ := m.get(t, "/v1.0/"+projectP1+"/kms/no-such-op"); status != 401 {
		t.Fatalf("unsigned GET of an unknown operation: status %d, expected 401", status)
	}

	_, body := m.get(t, "/metrics")
	if strings.Contains(body, "no-such") {
		t.Error("/metrics has a label taken from the request URL")
	}
	if got := m.metricValue(t, `kms_http_requests_total{operation="unknown",status="404"}`); got != 1 {
		t.Errorf("unknown route counted %v times with 404, expected 1", got)
	}
	if got := m.metricValue(t, `kms_http_requests_total{operation="unknown",status="401"}`); got != 1 {
		t.Errorf("unknown operation counted %v times with 401, expected 1", got)
	}
}

// TestCloseAllSessionsUnderLoad cuts every session while 20 data-key requests run, then
// sends 50 more: at most the 20 may fail, and only with 503, and the 50 all succeed.
func TestCloseAllSessionsUnderLoad(t *testing.T) {
	m := newMetricsEnv(t, nil)
	keyID := m.admin.createKey(t, "close-all")
	m.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})

	statuses := make(chan int, 20)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			<-start
			statuses <- m.admin.post(t, "create-datakey", map[string]any{"key_id": keyID}).Status
		})
	}
	close(start)
	if err := m.token.CloseAllSessions(); err != nil {
		t.Fatalf("CloseAllSessions: %v", err)
	}
	wg.Wait()
	close(statuses)

	for status := range statuses {
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Errorf("in-flight request: status %d, expected 200 or 503", status)
		}
	}
	for i := range 50 {
		r := m.admin.post(t, "create-datakey", map[string]any{"key_id": keyID})
		if r.Status != http.StatusOK {
			t.Fatalf("request %d after CloseAllSessions: status %d, body %s", i, r.Status, r.Raw)
		}
	}

	if got := m.metricValue(t, "kms_token_sessions_dropped_total"); got < 1 {
		t.Errorf("kms_token_sessions_dropped_total = %v, expected at least 1", got)
	}
	if got := m.metricValue(t, "kms_token_connected"); got != 1 {
		t.Errorf("kms_token_connected = %v, expected 1", got)
	}
}

func TestTokenClosedAnswers503(t *testing.T) {
	m := newMetricsEnv(t, nil)
	keyID := m.admin.createKey(t, "closed")
	m.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})

	if err := m.token.Close(); err != nil {
		t.Fatal(err)
	}

	r := m.admin.post(t, "create-datakey", map[string]any{"key_id": keyID})
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("create-datakey: status %d, expected 503; body %s", r.Status, r.Raw)
	}
	if r.code() != service.CodeUnavailable {
		t.Errorf("error code %q, expected %s", r.code(), service.CodeUnavailable)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	status, body := m.get(t, "/readyz")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: status %d, expected 503", status)
	}
	if !strings.Contains(body, `"reason":"token unavailable"`) {
		t.Errorf("/readyz body %s, expected the reason token unavailable", body)
	}
	if strings.Contains(body, m.setup.ModulePath) || strings.Contains(body, m.setup.TokenLabel) {
		t.Errorf("/readyz body %s leaks the module path or token label", body)
	}
}

func TestReadyzReasonCategories(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantReason string
	}{
		{"ready", nil, http.StatusOK, ""},
		{"starting", fmt.Errorf("%w: admin credential pending", ErrStarting), 503, "starting"},
		{"store", fmt.Errorf("%w: dial tcp 10.1.2.3:5432: refused", ErrStoreNotReady), 503,
			"store unavailable"},
		{"audit", fmt.Errorf("%w: write failed 1ms ago", ErrAuditNotReady), 503,
			"audit trail unavailable"},
		{"token behind", fmt.Errorf("%w: it lacks key version kms:k:1", ErrTokenBehind), 503,
			"token older than the store"},
		{"timeout", context.DeadlineExceeded, 503, "timed out"},
		{"uncategorised", fmt.Errorf("secret detail /etc/kms"), 503, "not ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetricsEnv(t, func(cfg *Config) {
				cfg.Ready = func(context.Context) error { return tt.err }
			})

			status, body := m.get(t, "/readyz")
			if status != tt.wantStatus {
				t.Fatalf("status %d, expected %d", status, tt.wantStatus)
			}
			if tt.wantReason != "" && !strings.Contains(body, `"reason":"`+tt.wantReason+`"`) {
				t.Errorf("body %s, expected the reason %q", body, tt.wantReason)
			}
			if regexp.MustCompile(`10\.1\.2\.3|/etc/kms`).MatchString(body) {
				t.Errorf("body %s leaks the cause", body)
			}
		})
	}
}

func TestStartingRejectsCalls(t *testing.T) {
	m := newMetricsEnv(t, func(cfg *Config) {
		cfg.Started = func() bool { return false }
	})

	r := m.admin.post(t, "list-keys", map[string]any{})
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("list-keys while starting: status %d, expected 503", r.Status)
	}
	if r.code() != service.CodeUnavailable {
		t.Errorf("error code %q, expected %s", r.code(), service.CodeUnavailable)
	}
	if status, _ := m.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz while starting: status %d, expected 200", status)
	}
}
