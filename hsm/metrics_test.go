package hsm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSessionIdleTimeoutReplacesSession(t *testing.T) {
	const idle = 100 * time.Millisecond
	m := openTestModule(t, func(cfg *Config) {
		// One session, so that the second call takes the session the first one used.
		cfg.MaxSessions = 1
		cfg.SessionIdleTimeout = idle
	})
	ref := KeyRef{KeyID: "idle-timeout", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	sealed, err := m.Seal(ctx, ref, []byte("data"), nil)
	if err != nil {
		t.Fatal(err)
	}

	time.Sleep(3 * idle)

	got, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil)
	if err != nil {
		t.Fatalf("Open after the idle timeout: %v", err)
	}
	if string(got) != "data" {
		t.Errorf("Open returned %q, expected %q", got, "data")
	}

	stats := m.Stats()
	if stats.SessionsExpired < 1 {
		t.Errorf("Stats.SessionsExpired is %d, expected at least 1", stats.SessionsExpired)
	}
	if stats.SessionsDropped != 0 {
		t.Errorf("Stats.SessionsDropped is %d, expected 0", stats.SessionsDropped)
	}
	if stats.KeyCopies != 1 {
		t.Errorf("Stats.KeyCopies is %d, expected 1 (the copy of the fresh session)",
			stats.KeyCopies)
	}
}

func TestOpenRejectsNegativeIdleTimeout(t *testing.T) {
	cfg, _ := testConfig(t)
	cfg.SessionIdleTimeout = -time.Second

	_, err := Open(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "SessionIdleTimeout") {
		t.Fatalf("Open error = %v, expected one naming SessionIdleTimeout", err)
	}
}

func TestMeteredTokenCountsErrors(t *testing.T) {
	m := openTestModule(t, nil)
	reg := prometheus.NewRegistry()
	token, err := NewMeteredToken(m, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref := KeyRef{KeyID: "metered", Version: 1}

	if err := token.GenerateKey(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := token.GenerateKey(ctx, ref); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second GenerateKey error = %v, expected ErrKeyExists", err)
	}
	sealed, err := token.Seal(ctx, ref, []byte("data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed.Ciphertext[0] ^= 1
	if _, err := token.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Open of a changed ciphertext error = %v, expected ErrDecrypt", err)
	}
	if _, err := token.Seal(ctx, KeyRef{KeyID: "missing", Version: 1}, nil, nil); err == nil {
		t.Fatal("Seal with a missing key succeeded")
	}

	errorsTotal := func(operation, reason string) float64 {
		return testutil.ToFloat64(token.errors.WithLabelValues(operation, reason))
	}
	tests := []struct {
		operation, reason string
		want              float64
	}{
		{"generate_key", reasonKeyExists, 1},
		{"open", reasonDecrypt, 1},
		{"seal", reasonKeyNotFound, 1},
		{"seal", reasonUnavailable, 0},
	}
	for _, tt := range tests {
		if got := errorsTotal(tt.operation, tt.reason); got != tt.want {
			t.Errorf("kms_token_errors_total{%s,%s} = %v, expected %v",
				tt.operation, tt.reason, got, tt.want)
		}
	}

	// generate_key, and the series of open, seal and seal_random, which NewMeteredToken
	// makes at the start.
	if got := testutil.CollectAndCount(token.duration); got != 4 {
		t.Errorf("kms_token_operation_duration_seconds has %d series, expected 4", got)
	}
}

func TestMeteredTokenAfterClose(t *testing.T) {
	m := openTestModule(t, nil)
	token, err := NewMeteredToken(m, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := token.Close(); err != nil {
		t.Fatal(err)
	}

	if err := token.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ping after Close error = %v, expected ErrUnavailable", err)
	}
	if got := testutil.ToFloat64(token.errors.WithLabelValues("ping", reasonUnavailable)); got != 1 {
		t.Errorf("kms_token_errors_total{ping,unavailable} = %v, expected 1", got)
	}
}

func TestRegisterStatsReportsPool(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxSessions = 1 })
	reg := prometheus.NewRegistry()
	if err := RegisterStats(reg, m); err != nil {
		t.Fatal(err)
	}
	ref := KeyRef{KeyID: "stats", Version: 1}
	generateTestKey(t, m, ref)
	if _, err := m.Seal(context.Background(), ref, []byte("data"), nil); err != nil {
		t.Fatal(err)
	}
	if err := m.CloseAllSessions(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Seal(context.Background(), ref, []byte("data"), nil); err != nil {
		t.Fatal(err)
	}

	want := `
# HELP kms_token_connected 1 while the module holds a logged-in connection, else 0.
# TYPE kms_token_connected gauge
kms_token_connected 1
# HELP kms_token_sessions_dropped_total Sessions closed because the token reported them dead or their connection failed.
# TYPE kms_token_sessions_dropped_total counter
kms_token_sessions_dropped_total 1
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kms_token_connected", "kms_token_sessions_dropped_total")
	if err != nil {
		t.Error(err)
	}

	if err := RegisterStats(reg, m); err == nil {
		t.Error("a second RegisterStats on the same registry succeeded")
	}
}
