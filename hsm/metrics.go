package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MeteredToken is a Token decorator that records the latency of every call and counts
// failed calls by reason. It is safe for concurrent use when the wrapped Token is.
type MeteredToken struct {
	next     Token
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec

	// dataKeyDurations are the duration series of the token operations of the data-key
	// calls, looked up once because WithLabelValues hashes the label on every call. The
	// map is not changed after NewMeteredToken.
	dataKeyDurations map[string]prometheus.Observer
}

var _ Token = (*MeteredToken)(nil)

// Error reasons of kms_token_errors_total. They are the sentinel errors of this package,
// so the label has a fixed, small set of values.
const (
	reasonUnavailable = "unavailable"
	reasonKeyNotFound = "key_not_found"
	reasonKeyExists   = "key_exists"
	reasonDecrypt     = "decrypt_failed"
	reasonCanceled    = "canceled"
	reasonOther       = "other"
)

// NewMeteredToken wraps next and registers two metrics on reg:
// kms_token_operation_duration_seconds (histogram by operation) and
// kms_token_errors_total (counter by operation and reason). It fails when reg already
// holds metrics of the same names.
func NewMeteredToken(next Token, reg prometheus.Registerer) (*MeteredToken, error) {
	t := &MeteredToken{
		next: next,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kms_token_operation_duration_seconds",
			Help: "Latency of PKCS#11 token calls, including the wait for a pooled session.",
			// From 50 µs (a C_Encrypt on a session copy in SoftHSM2) to 5 s (the default
			// session wait timeout).
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 5, 14),
		}, []string{"operation"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kms_token_errors_total",
			Help: "Failed PKCS#11 token calls by operation and reason.",
		}, []string{"operation", "reason"}),
	}

	for _, c := range []prometheus.Collector{t.duration, t.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register token metrics: %w", err)
		}
	}
	t.dataKeyDurations = map[string]prometheus.Observer{}
	for _, operation := range []string{"open", "seal", "seal_random"} {
		t.dataKeyDurations[operation] = t.duration.WithLabelValues(operation)
	}

	return t, nil
}

// observe records one call of operation that started at start and ended with err.
func (t *MeteredToken) observe(operation string, start time.Time, err error) {
	duration, ok := t.dataKeyDurations[operation]
	if !ok {
		duration = t.duration.WithLabelValues(operation)
	}
	duration.Observe(time.Since(start).Seconds())
	if err != nil {
		t.errors.WithLabelValues(operation, errorReason(err)).Inc()
	}
}

func errorReason(err error) string {
	switch {
	case errors.Is(err, ErrUnavailable):
		return reasonUnavailable
	case errors.Is(err, ErrKeyNotFound):
		return reasonKeyNotFound
	case errors.Is(err, ErrKeyExists):
		return reasonKeyExists
	case errors.Is(err, ErrDecrypt):
		return reasonDecrypt
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return reasonCanceled
	default:
		return reasonOther
	}
}

// GenerateKey calls the wrapped Token.
func (t *MeteredToken) GenerateKey(ctx context.Context, ref KeyRef) error {
	start := time.Now()
	err := t.next.GenerateKey(ctx, ref)
	t.observe("generate_key", start, err)
	return err
}

// DestroyKey calls the wrapped Token.
func (t *MeteredToken) DestroyKey(ctx context.Context, ref KeyRef) error {
	start := time.Now()
	err := t.next.DestroyKey(ctx, ref)
	t.observe("destroy_key", start, err)
	return err
}

// KeyExists calls the wrapped Token.
func (t *MeteredToken) KeyExists(ctx context.Context, ref KeyRef) (bool, error) {
	start := time.Now()
	ok, err := t.next.KeyExists(ctx, ref)
	t.observe("key_exists", start, err)
	return ok, err
}

// ListKeys calls the wrapped Token.
func (t *MeteredToken) ListKeys(ctx context.Context) ([]KeyRef, error) {
	start := time.Now()
	refs, err := t.next.ListKeys(ctx)
	t.observe("list_keys", start, err)
	return refs, err
}

// Seal calls the wrapped Token.
func (t *MeteredToken) Seal(ctx context.Context, ref KeyRef, plaintext, aad []byte) (Sealed, error) {
	start := time.Now()
	sealed, err := t.next.Seal(ctx, ref, plaintext, aad)
	t.observe("seal", start, err)
	return sealed, err
}

// SealRandom calls the wrapped Token.
func (t *MeteredToken) SealRandom(
	ctx context.Context, ref KeyRef, n int, aad []byte,
) ([]byte, Sealed, error) {
	start := time.Now()
	plaintext, sealed, err := t.next.SealRandom(ctx, ref, n, aad)
	t.observe("seal_random", start, err)
	return plaintext, sealed, err
}

// Open calls the wrapped Token.
func (t *MeteredToken) Open(
	ctx context.Context, ref KeyRef, iv, ciphertext, aad []byte,
) ([]byte, error) {
	start := time.Now()
	plaintext, err := t.next.Open(ctx, ref, iv, ciphertext, aad)
	t.observe("open", start, err)
	return plaintext, err
}

// Random calls the wrapped Token.
func (t *MeteredToken) Random(ctx context.Context, n int) ([]byte, error) {
	start := time.Now()
	b, err := t.next.Random(ctx, n)
	t.observe("random", start, err)
	return b, err
}

// GenerateSigningKey calls the wrapped Token.
func (t *MeteredToken) GenerateSigningKey(ctx context.Context, ref KeyRef) error {
	start := time.Now()
	err := t.next.GenerateSigningKey(ctx, ref)
	t.observe("generate_signing_key", start, err)
	return err
}

// Sign calls the wrapped Token.
func (t *MeteredToken) Sign(ctx context.Context, ref KeyRef, digest []byte) ([]byte, error) {
	start := time.Now()
	sig, err := t.next.Sign(ctx, ref, digest)
	t.observe("sign", start, err)
	return sig, err
}

// PublicKey calls the wrapped Token.
func (t *MeteredToken) PublicKey(ctx context.Context, ref KeyRef) (crypto.PublicKey, error) {
	start := time.Now()
	pub, err := t.next.PublicKey(ctx, ref)
	t.observe("public_key", start, err)
	return pub, err
}

// Ping calls the wrapped Token.
func (t *MeteredToken) Ping(ctx context.Context) error {
	start := time.Now()
	err := t.next.Ping(ctx)
	t.observe("ping", start, err)
	return err
}

// Close calls the wrapped Token. It records no metric.
func (t *MeteredToken) Close() error {
	return t.next.Close()
}

// RegisterStats registers on reg the session pool metrics of m, read from m.Stats at each
// scrape: kms_token_connected, kms_token_sessions_open, kms_token_sessions_idle,
// kms_token_sessions_in_use, kms_token_key_copies, and the counters
// kms_token_sessions_dropped_total, kms_token_sessions_expired_total and
// kms_token_reconnects_total.
func RegisterStats(reg prometheus.Registerer, m *Module) error {
	gauge := func(name, help string, value func(Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return value(m.Stats()) })
	}
	counter := func(name, help string, value func(Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return value(m.Stats()) })
	}

	collectors := []prometheus.Collector{
		gauge("kms_token_connected", "1 while the module holds a logged-in connection, else 0.",
			func(s Stats) float64 {
				if s.Connected {
					return 1
				}
				return 0
			}),
		gauge("kms_token_sessions_open", "Open pooled PKCS#11 sessions, in use or idle.",
			func(s Stats) float64 { return float64(s.SessionsOpen) }),
		gauge("kms_token_sessions_idle", "Open pooled PKCS#11 sessions waiting in the pool.",
			func(s Stats) float64 { return float64(s.SessionsIdle) }),
		gauge("kms_token_sessions_in_use", "Pooled PKCS#11 sessions taken by a call.",
			func(s Stats) float64 { return float64(s.SessionsOpen - s.SessionsIdle) }),
		gauge("kms_token_key_copies", "Session-object copies of keys held by open sessions.",
			func(s Stats) float64 { return float64(s.KeyCopies) }),
		counter("kms_token_sessions_dropped_total",
			"Sessions closed because the token reported them dead or their connection failed.",
			func(s Stats) float64 { return float64(s.SessionsDropped) }),
		counter("kms_token_sessions_expired_total",
			"Sessions closed because they were idle longer than the session idle timeout.",
			func(s Stats) float64 { return float64(s.SessionsExpired) }),
		counter("kms_token_reconnects_total", "Successful connections to the token after a failure.",
			func(s Stats) float64 { return float64(s.Reconnects) }),
	}

	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register token pool metrics: %w", err)
		}
	}

	return nil
}
