package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
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
