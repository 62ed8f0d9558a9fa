package api

import (
	"fmt"
	"maps"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmkms/kms/service"
)

// Metrics are the HTTP and service metrics of a Server, served on GET /metrics in the
// Prometheus text format.
//
// /metrics is not authenticated, so that a Prometheus server can scrape it without an
// access key. It serves no key id, access key, project id or request content: its labels
// are the operation name (a fixed set of route names), the HTTP status, and the labels of
// whatever else the registry holds (the token metrics of package hsm have operation and
// error reason). Bind the listener to a private network when even request counts are
// sensitive.
type Metrics struct {
	gatherer prometheus.Gatherer
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge

	// series maps an operation to its duration series and its status 200 counter, so
	// that a request does not hash its labels (WithLabelValues). A new operation copies
	// the map under seriesMu, and readers load it without a lock.
	series   atomic.Pointer[map[string]*operationSeries]
	seriesMu sync.Mutex
}

// operationSeries are the series of one operation that every successful request updates.
type operationSeries struct {
	duration prometheus.Observer
	ok       prometheus.Counter
}

// seriesOf returns the series of operation, creating them on its first request.
func (m *Metrics) seriesOf(operation string) *operationSeries {
	if series := m.series.Load(); series != nil {
		if s, ok := (*series)[operation]; ok {
			return s
		}
	}

	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	old := m.series.Load()
	if old != nil {
		if s, ok := (*old)[operation]; ok {
			return s
		}
	}
	series := make(map[string]*operationSeries, 1)
	if old != nil {
		maps.Copy(series, *old)
	}
	s := &operationSeries{
		duration: m.duration.WithLabelValues(operation),
		ok:       m.requests.WithLabelValues(operation, "200"),
	}
	series[operation] = s
	m.series.Store(&series)
	return s
}

// NewMetrics registers the HTTP metrics and the key cache counters of svc on reg and
// returns them for Config.Metrics: kms_http_requests_total (by operation and status),
// kms_http_request_duration_seconds (by operation), kms_http_requests_in_flight,
// kms_key_cache_hits_total and kms_key_cache_misses_total. GET /metrics serves everything
// reg holds. It fails when reg already holds metrics of the same names, so give each
// Server its own registry.
func NewMetrics(reg *prometheus.Registry, svc *service.Service) (*Metrics, error) {
	m := &Metrics{
		gatherer: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kms_http_requests_total",
			Help: "HTTP requests completed, by operation and status code.",
		}, []string{"operation", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kms_http_request_duration_seconds",
			Help: "Time from receiving a request to writing its response, by operation.",
			// From 100 µs to about 10 s: data-key calls on SoftHSM2 take a few hundred µs,
			// and a call waiting for the token gives up after the 5 s session wait.
			Buckets: prometheus.ExponentialBucketsRange(100e-6, 10, 16),
		}, []string{"operation"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kms_http_requests_in_flight",
			Help: "HTTP requests received and not yet completed.",
		}),
	}

	hits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kms_key_cache_hits_total",
		Help: "Key metadata lookups served from the in-memory cache.",
	}, func() float64 {
		h, _ := svc.CacheStats()
		return float64(h)
	})
	misses := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kms_key_cache_misses_total",
		Help: "Key metadata lookups by key id that went to the metadata store.",
	}, func() float64 {
		_, miss := svc.CacheStats()
		return float64(miss)
	})

	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, hits, misses} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register HTTP metrics: %w", err)
		}
	}

	return m, nil
}

// metricsRoutes serves GET /metrics when the server has metrics.
func (s *Server) metricsRoutes() {
	if s.cfg.Metrics == nil || s.cfg.MetricsElsewhere {
		return
	}

	h := promhttp.HandlerFor(s.cfg.Metrics.gatherer, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
	s.echo.GET("/metrics", echo.WrapHandler(h))
}

// slogPrinter passes promhttp's gathering errors to the server's log.
type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) {
	p.s.log.Warn("gathering metrics failed", "error", fmt.Sprint(v...))
}

// measure counts and times every request. It runs the error handler itself, so that the
// status it records is the one sent.
func (s *Server) measure(next echo.HandlerFunc) echo.HandlerFunc {
	m := s.cfg.Metrics
	if m == nil {
		return next
	}

	return func(c echo.Context) error {
		m.inFlight.Inc()
		defer m.inFlight.Dec()

		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}

		operation := operationLabel(c)
		series := m.seriesOf(operation)
		series.duration.Observe(time.Since(start).Seconds())
		if status := c.Response().Status; status == http.StatusOK {
			series.ok.Inc()
		} else {
			m.requests.WithLabelValues(operation, strconv.Itoa(status)).Inc()
		}
		return nil
	}
}

// operationLabel returns the operation name of the request: the name op gave it, else
// the last element of the route (a request rejected before its handler ran), else
// "unknown" for a URL that matches no route. The label therefore never carries a value
// taken from the request.
func operationLabel(c echo.Context) string {
	if st := stateOf(c); st.op != "" && !strings.HasPrefix(st.op, "/") {
		return st.op
	}

	route := c.Path()
	if route == "" || strings.Contains(route, "*") || c.Response().Status == http.StatusNotFound {
		return "unknown"
	}

	return path.Base(route)
}
