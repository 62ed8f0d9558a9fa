package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// blockingRecorder is an audit recorder that waits for the request context to end, to
// hold a call at its audit record until the client disconnects, which no real trail
// does on demand.
type blockingRecorder struct{ entered chan struct{} }

func (b blockingRecorder) Record(ctx context.Context, _ audit.Record) error {
	close(b.entered)
	<-ctx.Done()
	return ctx.Err()
}

// syncBuffer is a log sink that is safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// TestClientDisconnectNotAuditFailure checks that a client that disconnects while its
// call waits for the audit record is logged at INFO and counted under 499, not as a 503
// audit failure.
func TestClientDisconnectNotAuditFailure(t *testing.T) {
	e := newTestEnv(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	metrics, err := NewMetrics(prometheus.NewRegistry(), e.svc)
	if err != nil {
		t.Fatal(err)
	}
	recorder := blockingRecorder{entered: make(chan struct{})}
	srv := New(e.svc, auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log}), log,
		Config{Audit: recorder, Metrics: metrics})

	handled := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handled)
		srv.Handler().ServeHTTP(w, r)
	}))
	defer hs.Close()

	ctx, cancel := context.WithCancel(context.Background())
	body := []byte(`{}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		hs.URL+"/v1.0/"+projectP1+"/kms/list-keys", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	auth.Sign(req, body, e.admin.ak, e.admin.sk, time.Now())

	sent := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		sent <- err
	}()
	<-recorder.entered
	cancel()
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Errorf("client error = %v, want context.Canceled", err)
	}
	<-handled

	output := logs.String()
	if strings.Contains(output, "level=ERROR") {
		t.Errorf("disconnect logged at ERROR:\n%s", output)
	}
	if !strings.Contains(output, "level=INFO msg=\"client disconnected") {
		t.Errorf("disconnect not logged at INFO:\n%s", output)
	}
	if n := testutil.ToFloat64(metrics.requests.WithLabelValues("list-keys", "503")); n != 0 {
		t.Errorf("disconnect counted as %v requests with status 503", n)
	}
	if n := testutil.ToFloat64(metrics.requests.WithLabelValues("list-keys", "499")); n != 1 {
		t.Errorf("disconnect counted as %v requests with status 499, want 1", n)
	}
}

// hungStore is a store whose ListKeys waits for its context to end and then fails with
// the context's error, as a query to a database that stopped responding does.
type hungStore struct {
	store.Store
	entered chan struct{}
}

func (h hungStore) ListKeys(ctx context.Context, _ string, _ store.ListKeysFilter) (
	[]store.Key, int, error) {
	close(h.entered)
	<-ctx.Done()
	return nil, 0, fmt.Errorf("list keys: begin transaction: %w", ctx.Err())
}

// TestClientDisconnectDuringStoreCall checks that a call whose store query is cancelled
// because the client hung up is not an internal error. It is logged at INFO, audited
// and counted with status 499, and the connection is closed without a response.
func TestClientDisconnectDuringStoreCall(t *testing.T) {
	e := newTestEnv(t)
	hung := hungStore{entered: make(chan struct{})}
	e.serviceStore = func(s store.Store) store.Store {
		hung.Store = s
		return hung
	}
	e.restart()

	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	metrics, err := NewMetrics(prometheus.NewRegistry(), e.svc)
	if err != nil {
		t.Fatal(err)
	}
	recorder := &capturingRecorder{}
	srv := New(e.svc, auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log}), log,
		Config{Audit: recorder, Metrics: metrics})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	body := []byte(`{}`)
	req, err := http.NewRequest(http.MethodPost,
		hs.URL+"/v1.0/"+projectP1+"/kms/list-keys", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	auth.Sign(req, body, e.admin.ak, e.admin.sk, time.Now())
	conn, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	<-hung.entered
	// A shut-down sending side is enough for net/http to cancel the request.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}

	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if answer, err := io.ReadAll(conn); err != nil || len(answer) != 0 {
		t.Errorf("client read %q, %v; want the connection closed without a response",
			answer, err)
	}

	output := logs.String()
	if strings.Contains(output, "level=ERROR") {
		t.Errorf("disconnect logged at ERROR:\n%s", output)
	}
	if !strings.Contains(output, `level=INFO msg="client disconnected before the call finished"`) {
		t.Errorf("disconnect not logged at INFO:\n%s", output)
	}
	if n := testutil.ToFloat64(metrics.requests.WithLabelValues("list-keys", "500")); n != 0 {
		t.Errorf("disconnect counted as %v requests with status 500", n)
	}
	if n := testutil.ToFloat64(metrics.requests.WithLabelValues("list-keys", "499")); n != 1 {
		t.Errorf("disconnect counted as %v requests with status 499, want 1", n)
	}
	if got := recorder.statuses(); len(got) != 1 || got[0] != statusClientClosed {
		t.Errorf("audited statuses %v, want [%d]", got, statusClientClosed)
	}
}

// capturingRecorder is an audit recorder that keeps the status of every record.
type capturingRecorder struct {
	mu     sync.Mutex
	status []int
}

func (c *capturingRecorder) Record(_ context.Context, r audit.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = append(c.status, r.Status)
	return nil
}

func (c *capturingRecorder) statuses() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.status)
}
