package audit

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BatchObserver receives one call per group commit of the audit trail. Implementations
// are safe for concurrent use.
type BatchObserver interface {
	// ObserveBatch records a committed batch: records is how many records it held, and
	// delay is how long its oldest record waited from Record until the commit returned.
	ObserveBatch(records int, delay time.Duration)
}

// NopObserver is a BatchObserver that records nothing.
type NopObserver struct{}

// ObserveBatch does nothing.
func (NopObserver) ObserveBatch(int, time.Duration) {}

// batchMetrics is the Prometheus BatchObserver.
type batchMetrics struct {
	size  prometheus.Histogram
	delay prometheus.Histogram
}

// NewBatchMetrics returns a BatchObserver that registers two histograms on reg:
// kms_audit_batch_records (records per group commit) and kms_audit_batch_delay_seconds
// (wait of the oldest record of each batch). It fails when reg already holds them.
func NewBatchMetrics(reg prometheus.Registerer) (BatchObserver, error) {
	m := &batchMetrics{
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kms_audit_batch_records",
			Help:    "Audit records written per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kms_audit_batch_delay_seconds",
			Help:    "Time from the oldest record of a batch being submitted to its commit.",
			Buckets: prometheus.ExponentialBucketsRange(100e-6, 5, 14),
		}),
	}

	for _, c := range []prometheus.Collector{m.size, m.delay} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register audit metrics: %w", err)
		}
	}

	return m, nil
}

// ObserveBatch records one batch.
func (m *batchMetrics) ObserveBatch(records int, delay time.Duration) {
	m.size.Observe(float64(records))
	m.delay.Observe(delay.Seconds())
}
