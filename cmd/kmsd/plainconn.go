package main

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/api"
)

// plainListener wraps the TCP connections it accepts in plainConns. kmsd uses it whenever
// it serves plain HTTP.
//
// NOTE: with TLS, net/http writes its own error responses through crypto/tls, below
// which the bytes are encrypted, so those responses stay net/http's plain text.
type plainListener struct{ net.Listener }

// Accept returns the next connection, wrapped when it is a TCP connection.
func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		pc := &plainConn{TCPConn: tc}
		pc.writeDeadline.laterAtOnce = true
		return pc, nil
	}
	return c, nil
}

// plainConn is a TCP connection of the plain-HTTP server. It sends the API's JSON errors
// in response to requests that net/http cannot parse (Write), it ends net/http's hang-up
// read with no data while a handler serves a request on it (Read, hangups.go), and it
// sets the socket's deadlines lazily (deadlines.go).
type plainConn struct {
	*net.TCPConn

	// serving is set by skipHangupRead's handler from its start to its end. It stays
	// false where kmsd keeps the hang-up read.
	serving atomic.Bool

	readDeadline  lazyDeadline
	writeDeadline lazyDeadline
}

// SetDeadline sets the read and write deadlines, as net.Conn's SetDeadline does.
func (c *plainConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of reads, lazily (lazyDeadline).
func (c *plainConn) SetReadDeadline(t time.Time) error {
	return c.readDeadline.set(t, c.TCPConn.SetReadDeadline)
}

// SetWriteDeadline sets the deadline of writes, lazily (lazyDeadline).
func (c *plainConn) SetWriteDeadline(t time.Time) error {
	return c.writeDeadline.set(t, c.TCPConn.SetWriteDeadline)
}

// Read reads from the connection, except that a one-byte read while a handler serves a
// request returns 0 bytes and no error at once. While a handler runs, net/http reads
// the connection only for that read and for a body of known length, which it reads
// through a 4 KiB buffer with reads that ask for the whole buffer or more.
func (c *plainConn) Read(p []byte) (int, error) {
	if len(p) == 1 && c.serving.Load() {
		return 0, nil
	}

	for {
		n, err := c.TCPConn.Read(p)
		if n > 0 || err == nil || !c.readDeadline.rearm(err, c.TCPConn.SetReadDeadline) {
			return n, err
		}
	}
}

// Write writes p to the connection. When p is one of net/http's own plain-text error
// responses, to a request it could not parse, Write sends the API's JSON error with a KMS
// code instead (api.ProtocolErrorResponse) and reports p as written.
func (c *plainConn) Write(p []byte) (int, error) {
	// Responses of handlers are mostly 2xx, so one byte spares them the full check.
	const statusDigit = len("HTTP/1.1 ")
	if len(p) > statusDigit && p[statusDigit] != '2' {
		if resp, ok := api.ProtocolErrorResponse(p); ok {
			if _, err := c.write(resp); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.write(p)
}

// write writes p to the socket, and writes the rest of it again when the socket's write
// deadline passed before the requested one.
func (c *plainConn) write(p []byte) (int, error) {
	written := 0
	for {
		n, err := c.TCPConn.Write(p[written:])
		written += n
		if err == nil || !c.writeDeadline.rearm(err, c.TCPConn.SetWriteDeadline) {
			return written, err
		}
	}
}

// ReadFrom copies r to the connection through Write. Without it, *net.TCPConn's
// ReadFrom, which net/http uses for bodies copied with io.Copy, would write to the
// socket past the lazy write deadline.
func (c *plainConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// http2PrefaceMessage is the error message for the HTTP/2 connection preface.
const http2PrefaceMessage = "the request is not valid HTTP/1.1: it is the HTTP/2 " +
	"connection preface, and kmsd serves HTTP/2 only over TLS once ALPN chose h2, " +
	"so send HTTP/1.1"

// checkFraming wraps h with the two checks of a request's framing that net/http leaves
// to handlers, in one wrapper because it runs on every request.
//
// It rejects the HTTP/2 connection preface ("PRI * HTTP/2.0") with 400 KMS.0201 and
// closes the connection, as net/http does for every other HTTP/2.0 request line.
// net/http passes the preface to the handler, so that a handler can take the connection
// over for HTTP/2 without TLS, which kmsd does not serve. With TLS, clients choose
// HTTP/2 through ALPN, and net/http serves it without passing the preface here. A TLS
// client that chose HTTP/1.1 and then sends the preface gets the same 400.
//
// It closes the connection after the response to every request with a chunked body.
// RFC 9112, section 6.1, requires that for a request that has both Transfer-Encoding and
// Content-Length, which net/http serves by the Transfer-Encoding while keeping the
// connection. net/http removes the Content-Length header of such a request before any
// handler runs, so every chunked request is treated alike. SDKs send their bodies with
// Content-Length and keep their connections.
func checkFraming(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PRI" && r.ProtoMajor == 2 {
			w.Header().Set("Connection", "close")
			w.Header().Set("X-Request-Id", api.NewRequestID())
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{
				"error_code": service.CodeInvalidURL,
				"error_msg":  http2PrefaceMessage,
			}})
			return
		}

		if len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
