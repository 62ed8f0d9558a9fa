package api

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
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

// gateRecorder is an audit recorder that holds each record until the test releases it,
// and reports whether its context could be cancelled.
type gateRecorder struct {
	entered     chan struct{}
	release     chan struct{}
	cancellable chan bool
	statuses    chan int
}

func (g gateRecorder) Record(ctx context.Context, r audit.Record) error {
	close(g.entered)
	g.cancellable <- ctx.Done() != nil
	<-g.release
	g.statuses <- r.Status
	return nil
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

// TestClientDisconnectDuringAuditRecord checks that a finished call whose client hangs
// up while its audit record is written is still recorded as it ended. A client that only
// shut down its sending side then reads the response.
func TestClientDisconnectDuringAuditRecord(t *testing.T) {
	e := newTestEnv(t)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	metrics, err := NewMetrics(prometheus.NewRegistry(), e.svc)
	if err != nil {
		t.Fatal(err)
	}
	recorder := gateRecorder{entered: make(chan struct{}), release: make(chan struct{}),
		cancellable: make(chan bool, 1), statuses: make(chan int, 1)}
	srv := New(e.svc, auth.NewVerifier(e.creds, auth.VerifierConfig{Logger: log}), log,
		Config{Audit: recorder, Metrics: metrics})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	conn := sendSigned(t, e, hs.URL, "list-keys", []byte(`{}`))
	<-recorder.entered
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if <-recorder.cancellable {
		t.Error("the audit record's context can be cancelled by the client's hang-up")
	}
	close(recorder.release)

	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", res.StatusCode)
	}
	if got := <-recorder.statuses; got != http.StatusOK {
		t.Errorf("audited status %d, want 200", got)
	}
	if output := logs.String(); strings.Contains(output, "level=ERROR") {
		t.Errorf("hang-up logged at ERROR:\n%s", output)
	}
	if n := testutil.ToFloat64(metrics.requests.WithLabelValues("list-keys", "499")); n != 0 {
		t.Errorf("finished call counted as %v requests with status 499", n)
	}
}

// sendSigned writes a signed POST of body to operation op of the server at baseURL on a
// new connection, and returns the connection.
func sendSigned(t *testing.T, e *testEnv, baseURL, op string, body []byte) net.Conn {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL+"/v1.0/"+projectP1+"/kms/"+op,
		bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	auth.Sign(req, body, e.admin.ak, e.admin.sk, time.Now())

	conn, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	return conn
}

// hungStore is a store whose ListKeys waits for its context to end and then fails with
// the context's error, as a query to a database that stopped responding does, or with
// sql.ErrTxDone when txDone is set, as a commit that the cancellation rolled back does.
type hungStore struct {
	store.Store
	entered chan struct{}
	txDone  bool
}

func (h hungStore) ListKeys(ctx context.Context, _ string, _ store.ListKeysFilter) (
	[]store.Key, int, error) {
	close(h.entered)
	<-ctx.Done()
	if h.txDone {
		return nil, 0, fmt.Errorf("list keys: commit: %w", sql.ErrTxDone)
	}
	return nil, 0, fmt.Errorf("list keys: begin transaction: %w", ctx.Err())
}

// TestClientDisconnectDuringStoreCall checks that a call whose store query is cancelled
// because the client hung up is not an internal error. It is logged at INFO, audited
// and counted with status 499, and the connection is closed without a response.
func TestClientDisconnectDuringStoreCall(t *testing.T) {
	for _, txDone := range []bool{false, true} {
		name := "query cancelled"
		if txDone {
			name = "commit rolled back"
		}
		t.Run(name, func(t *testing.T) { testClientDisconnect(t, txDone) })
	}
}

func testClientDisconnect(t *testing.T, txDone bool) {
	e := newTestEnv(t)
	hung := hungStore{entered: make(chan struct{}), txDone: txDone}
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

	conn := sendSigned(t, e, hs.URL, "list-keys", []byte(`{}`))
	<-hung.entered
	// A shut-down sending side is enough for net/http to cancel the request.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}

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
