package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection, the server end wrapped as
// plainListener wraps it.
func tcpPair(t *testing.T) (client net.Conn, server *plainConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	accepted, err := plainListener{ln}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return client, accepted.(*plainConn)
}

func TestHangupConnRead(t *testing.T) {
	tests := []struct {
		name    string
		serving bool
		bufLen  int
		want    string
	}{
		{"one byte while serving answers no data", true, 1, ""},
		{"one byte between requests reads the connection", false, 1, "a"},
		{"a buffer while serving reads the connection", true, 4096, "abc"},
		{"a buffer between requests reads the connection", false, 4096, "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if _, err := client.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			// Wait until the bytes have arrived, so that a read that reaches the
			// connection finds them.
			time.Sleep(50 * time.Millisecond)

			server.serving.Store(tt.serving)
			buf := make([]byte, tt.bufLen)
			n, err := server.Read(buf)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got := string(buf[:n]); got != tt.want {
				t.Errorf("Read returned %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSkipsHangupRead(t *testing.T) {
	tests := []struct {
		name string
		cfg  config
		want bool
	}{
		{"embedded default", config{}, true},
		{"SQLite file", config{DatabaseURL: "/var/lib/kms/kms.db"}, true},
		{"PostgreSQL", config{DatabaseURL: "postgres://kms@db/kms"}, false},
		{"PostgreSQL, postgresql scheme", config{DatabaseURL: "postgresql://kms@db/kms"}, false},
		{"TLS", config{TLSCert: "cert.pem", TLSKey: "key.pem"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := skipsHangupRead(tt.cfg); got != tt.want {
				t.Errorf("skipsHangupRead = %v, want %v", got, tt.want)
			}
		})
	}
}

// hangupServer serves HTTP on a loopback listener, with kmsd's hang-up handling when
// skip is set. Its handler reads the body, reports it on entered, and then reports on
// ended whether the request's context ended within wait.
func hangupServer(t *testing.T, skip bool, wait time.Duration) (addr string,
	entered chan struct{}, ended chan bool) {
	t.Helper()
	entered, ended = make(chan struct{}, 1), make(chan bool, 1)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- true
		case <-time.After(wait):
			ended <- false
		}
		fmt.Fprint(w, "done")
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if skip {
		ln = plainListener{ln}
		hs.Handler = skipHangupRead(h)
		hs.ConnContext = plainConnContext
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String(), entered, ended
}

const (
	lengthRequest  = "POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\n\r\n{}"
	chunkedRequest = "POST / HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"2\r\n{}\r\n0\r\n\r\n"
)

// TestHangupDuringRequest checks which requests still notice a client that hangs up:
// every request of a plain net/http server, and with kmsd's handling only one with a
// chunked body.
func TestHangupDuringRequest(t *testing.T) {
	tests := []struct {
		name       string
		skip       bool
		request    string
		wantCancel bool
	}{
		{"net/http, Content-Length", false, lengthRequest, true},
		{"kmsd, Content-Length", true, lengthRequest, false},
		{"kmsd, chunked", true, chunkedRequest, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A context that ends does so within milliseconds of the hang-up; one
			// that stays is given a second to show otherwise.
			addr, entered, ended := hangupServer(t, tt.skip, time.Second)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(conn, tt.request); err != nil {
				t.Fatal(err)
			}
			<-entered
			conn.Close()

			if got := <-ended; got != tt.wantCancel {
				t.Errorf("request context ended after the hang-up: %v, want %v", got,
					tt.wantCancel)
			}
		})
	}
}

// TestPipelinedRequestsWithHangupSkip sends requests back to back without waiting for
// the responses. The byte that net/http's hang-up read would have taken from the next
// request stays on the connection for it.
func TestPipelinedRequestsWithHangupSkip(t *testing.T) {
	addr, entered, ended := hangupServer(t, true, 0)
	go func() {
		for range entered {
			<-ended
		}
	}()

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const requests = 3
	if _, err := io.WriteString(conn, strings.Repeat(lengthRequest, requests)); err != nil {
		t.Fatal(err)
	}

	for i, res := range readResponses(t, conn, requests) {
		if res.status != http.StatusOK || res.body != "done" {
			t.Errorf("response %d: %d %q, want 200 \"done\"", i+1, res.status, res.body)
		}
	}
}

// TestKmsdPipelinedSignedRequests sends signed requests back to back to a kmsd on the
// embedded store, which skips net/http's hang-up read.
func TestKmsdPipelinedSignedRequests(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	if !strings.Contains(p.logs.String(), "watch_hangups=false") {
		t.Fatalf("kmsd on the embedded store does not log watch_hangups=false:\n%s", p.logs)
	}
	ak, sk, projectID := readAdmin(t, dataDir)

	var batch bytes.Buffer
	const requests = 4
	for range requests {
		req := signedRequest(t, p, "list-keys", []byte(`{"limit":"10"}`), ak, sk, projectID)
		if err := req.Write(&batch); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(batch.Bytes()); err != nil {
		t.Fatal(err)
	}

	for i, res := range readResponses(t, conn, requests) {
		if res.status != http.StatusOK {
			t.Errorf("response %d: %d %s, want 200", i+1, res.status, res.body)
		}
	}
	p.stop(t)
}

// response is the status and body of one HTTP response.
type response struct {
	status int
	body   string
}

// readResponses reads n HTTP responses from conn.
func readResponses(t *testing.T, conn net.Conn, n int) []response {
	t.Helper()
	r := bufio.NewReader(conn)
	var out []response
	for i := range n {
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("response %d: body: %v", i+1, err)
		}
		out = append(out, response{res.StatusCode, string(body)})
	}
	return out
}
