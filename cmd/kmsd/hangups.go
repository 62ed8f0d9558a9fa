package main

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"

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
// NOTE: over TLS the read is crypto/tls's, which hangupConn cannot tell apart; it stays.

// skipsHangupRead reports whether kmsd ends net/http's hang-up read at once: on the
// embedded store and without TLS.
func skipsHangupRead(cfg config) bool {
	return cfg.TLSCert == "" && !store.IsPostgresURL(cfg.DatabaseURL)
}

// hangupListener wraps the TCP connections it accepts in hangupConns.
type hangupListener struct{ net.Listener }

// Accept returns the next connection, wrapped when it is a TCP connection.
func (l hangupListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &hangupConn{TCPConn: tc}, nil
	}
	return c, nil
}

// hangupConn is a TCP connection that ends net/http's hang-up read with no data while a
// handler serves a request on it.
type hangupConn struct {
	*net.TCPConn

	// serving is set by skipHangupRead's handler from its start to its end.
	serving atomic.Bool
}

// Read reads from the connection, except that a one-byte read while a handler serves a
// request returns 0 bytes and no error at once. While a handler runs, net/http reads
// the connection only for that read and for a body of known length, which it reads
// through a 4 KiB buffer with reads that ask for the whole buffer or more.
func (c *hangupConn) Read(p []byte) (int, error) {
	if len(p) == 1 && c.serving.Load() {
		return 0, nil
	}
	return c.TCPConn.Read(p)
}

// hangupConnKey is the context key of a connection's hangupConn.
type hangupConnKey struct{}

// hangupConnContext is the http.Server.ConnContext hook that lets the handlers of
// skipHangupRead find their connection.
func hangupConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*hangupConn); ok {
		return context.WithValue(ctx, hangupConnKey{}, hc)
	}
	return ctx
}

// skipHangupRead returns h with net/http's hang-up read ended at once on the hangupConns
// of the server, from the start to the end of each request that has a Content-Length.
// A chunked body is read with reads of any length, so there the read stays.
func skipHangupRead(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc, _ := r.Context().Value(hangupConnKey{}).(*hangupConn)
		if hc == nil || r.ContentLength < 0 {
			h.ServeHTTP(w, r)
			return
		}

		hc.serving.Store(true)
		defer hc.serving.Store(false)
		h.ServeHTTP(w, r)
	})
}
