package main

import (
	"context"
	"net"
	"net/http"

	"github.com/hsmkms/kms/service/store"
)

// net/http notices a client that hangs up during a request only through a one-byte read
// of the connection. It starts that read on a new goroutine once the request body has
// been read to its end, and stops it when the handler returns (startBackgroundRead and
// abortPendingRead in net/http's server.go). When the read fails, net/http cancels the
// request's context.
//
// In kmsd that read costs more than in most servers. During the handler's token call, a
// cgo call, another processor takes the new goroutine and runs it on another thread, so
// the read becomes a system call, a wait in the poller and two wake-ups per request.
// Without it, decrypt-datakey at 64 connections served 0 to 6% more requests per second,
// 4% on average over five `kmsbench --against` runs of 8 alternating rounds on a 2-core
// machine (docs/benchmarks.md).
//
// The cancelled context matters only to a request that waits on the network, where it
// lets a caller who gave up free the request. On the embedded store no wait in a request
// does: SQLite waits for its lock at most its busy timeout, token calls cannot be
// cancelled, and waits for a token session or call slot end after their own timeout. So
// with the embedded store kmsd ends that read at once with no data, and net/http goes on
// as if the client had sent nothing more. With PostgreSQL, where a query waits on the
// network, the read stays, so that a hung database does not hold requests whose callers
// have gone.
//
// NOTE: over TLS the read is crypto/tls's, which plainConn (plainconn.go) cannot tell
// apart, so it stays.

// skipsHangupRead reports whether kmsd ends net/http's hang-up read at once: on the
// embedded store and without TLS.
func skipsHangupRead(cfg config) bool {
	return cfg.TLSCert == "" && !store.IsPostgresURL(cfg.DatabaseURL)
}

// plainConnKey is the context key of a connection's plainConn.
type plainConnKey struct{}

// plainConnContext is the http.Server.ConnContext hook that lets the handlers of
// skipHangupRead find their connection.
func plainConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*plainConn); ok {
		return context.WithValue(ctx, plainConnKey{}, hc)
	}
	return ctx
}

// skipHangupRead returns h with net/http's hang-up read ended at once on the plainConns
// of the server, from the start to the end of each request that has a Content-Length.
// A chunked body is read with reads of any length, so there the read stays.
func skipHangupRead(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc, _ := r.Context().Value(plainConnKey{}).(*plainConn)
		if hc == nil || r.ContentLength < 0 {
			h.ServeHTTP(w, r)
			return
		}

		hc.serving.Store(true)
		defer hc.serving.Store(false)
		h.ServeHTTP(w, r)
	})
}
