package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startPprof serves Go's profiles on addr, which must be a loopback address because a
// heap profile holds memory contents. It returns a function that stops the listener.
func startPprof(addr string, log *slog.Logger) (func(), error) {
	if err := checkPprofListen(addr); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof_listen: %w", err)
	}

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Warn("pprof listener stopped", "error", err)
		}
	}()
	log.Info("serving Go profiles", "address", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// serveMetrics serves GET /metrics of registry on a listener of its own, so that
// operators can keep the unauthenticated metrics off the API address.
func serveMetrics(addr string, registry *prometheus.Registry, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Warn("metrics listener stopped", "error", err)
		}
	}()
	log.Info("serving metrics", "address", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// connCounter counts the open client connections of an http.Server through its ConnState
// hook. The audit trail reads the count to tell many clients from a few.
type connCounter struct {
	open atomic.Int64
}

// track is the http.Server.ConnState hook.
func (c *connCounter) track(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		c.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		c.open.Add(-1)
	}
}

// count returns the number of open connections.
func (c *connCounter) count() int { return int(c.open.Load()) }
