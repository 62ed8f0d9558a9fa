package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// plainServer starts a net/http server on a plainListener, as kmsd serves plain HTTP,
// whose handler returns 200 for "/" and net/http's 404 for every other path.
func plainServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 1 << 10}
	go func() { _ = hs.Serve(plainListener{ln}) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

// roundTrip sends raw on a new connection to addr and reads one response.
func roundTrip(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}

	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return res, string(body)
}

func TestPlainConnUnparsedRequestKMSCodes(t *testing.T) {
	addr := plainServer(t)
	tests := []struct {
		name       string
		request    string
		wantStatus int
		wantCode   string
	}{
		{"two different Content-Lengths",
			"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
			400, "KMS.0201"},
		{"gzip transfer encoding",
			"POST / HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "KMS.0201"},
		{"chunked given twice",
			"POST / HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n" +
				"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "KMS.0201"},
		{"unknown expectation",
			"POST / HTTP/1.1\r\nHost: kms\r\nExpect: foo\r\nContent-Length: 2\r\n\r\n{}",
			417, "KMS.0201"},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, "KMS.0201"},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400, "KMS.0201"},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: kms\r\n\r\n", 400, "KMS.0201"},
		{"headers over the limit",
			"GET / HTTP/1.1\r\nHost: kms\r\nX-Padding: " + strings.Repeat("a", 8<<10) + "\r\n\r\n",
			431, "KMS.0203"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := roundTrip(t, addr, tt.request)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d: %s", res.StatusCode, tt.wantStatus, body)
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q, want application/json", got)
			}
			if res.Header.Get("X-Request-Id") == "" {
				t.Error("the response has no X-Request-Id")
			}

			var parsed struct {
				Error struct {
					Code    string `json:"error_code"`
					Message string `json:"error_msg"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &parsed); err != nil {
				t.Fatalf("body is not JSON: %v: %q", err, body)
			}
			if parsed.Error.Code != tt.wantCode {
				t.Errorf("error_code %q, want %q", parsed.Error.Code, tt.wantCode)
			}
			if parsed.Error.Message == "" {
				t.Error("error_msg is empty")
			}
		})
	}
}

func TestPlainConnLeavesHandlerResponses(t *testing.T) {
	addr := plainServer(t)
	tests := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"success", "/", 200, "ok"},
		{"handler's plain-text 404", "/missing", 404, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := roundTrip(t, addr, "GET "+tt.path+" HTTP/1.1\r\nHost: kms\r\n\r\n")
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if body != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
		})
	}
}

func TestKmsdUnparsedRequestGetsKMSCode(t *testing.T) {
	p := startKmsd(t, t.TempDir())
	tests := []struct {
		name        string
		request     string
		wantMessage string
	}{
		{"two different Content-Lengths",
			"POST /v1.0/p/kms/decrypt-datakey HTTP/1.1\r\n" +
				"Host: kms\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
			"the request is not valid HTTP/1.1"},
		{"HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http2PrefaceMessage},
		{"HTTP/2 connection preface with a header", "PRI * HTTP/2.0\r\nHost: kms\r\n\r\n",
			http2PrefaceMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := roundTrip(t, p.addr, tt.request)
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", res.StatusCode)
			}
			if !strings.Contains(body, `"error_code":"KMS.0201"`) {
				t.Errorf("body %q has no KMS.0201", body)
			}
			if !strings.Contains(body, tt.wantMessage) {
				t.Errorf("body %q does not contain %q", body, tt.wantMessage)
			}
			if !res.Close {
				t.Error("the response does not close the connection")
			}
		})
	}
	p.stop(t)
}

// TestKmsdClosesAfterChunkedRequest sends requests with a chunked body, one of them with a
// Content-Length too, which a proxy in front could read differently. kmsd must respond
// to each and then close the connection.
func TestKmsdClosesAfterChunkedRequest(t *testing.T) {
	p := startKmsd(t, t.TempDir())
	tests := []struct {
		name    string
		request string
	}{
		{"chunked with Content-Length",
			"GET /healthz HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n" +
				"Content-Length: 3\r\n\r\n0\r\n\r\n"},
		{"chunked alone",
			"GET /healthz HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, body := roundTrip(t, p.addr, tt.request)
			if res.StatusCode != http.StatusOK {
				t.Errorf("status %d, want 200: %s", res.StatusCode, body)
			}
			if !res.Close {
				t.Error("the response keeps the connection open")
			}
		})
	}

	t.Run("Content-Length alone keeps the connection", func(t *testing.T) {
		res, body := roundTrip(t, p.addr, "GET /healthz HTTP/1.1\r\nHost: kms\r\n\r\n")
		if res.StatusCode != http.StatusOK {
			t.Errorf("status %d, want 200: %s", res.StatusCode, body)
		}
		if res.Close {
			t.Error("the response closes the connection")
		}
	})
	p.stop(t)
}
