package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// netHTTPError builds a response the way net/http's conn.serve writes its own errors.
func netHTTPError(statusLine, text string) string {
	return "HTTP/1.1 " + statusLine + netHTTPErrorHeaders + text
}

func TestProtocolErrorResponse(t *testing.T) {
	tests := []struct {
		name        string
		raw         string
		wantStatus  int
		wantCode    string
		wantMessage string
	}{
		{"malformed request", netHTTPError("400 Bad Request", "400 Bad Request"),
			400, "KMS.0201", "the request is not valid HTTP/1.1"},
		{"reason kept", netHTTPError("400 Bad Request: missing required Host header",
			"400 Bad Request: missing required Host header"),
			400, "KMS.0201", "the request is not valid HTTP/1.1: missing required Host header"},
		{"protocol version", netHTTPError("505 HTTP Version Not Supported: unsupported protocol version",
			"505 HTTP Version Not Supported: unsupported protocol version"),
			400, "KMS.0201", "the request is not valid HTTP/1.1: unsupported protocol version"},
		{"transfer encoding", netHTTPError("501 Not Implemented", "Unsupported transfer encoding"),
			400, "KMS.0201", "Transfer-Encoding must be absent or a single chunked"},
		{"expectation failed", "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\n" +
			"Date: Sat, 05 Dec 2026 08:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
			417, "KMS.0201", "Expect values other than 100-continue are not supported"},
		{"headers too large", netHTTPError("431 Request Header Fields Too Large",
			"431 Request Header Fields Too Large"),
			431, "KMS.0203", "the request headers are larger than the server accepts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := ProtocolErrorResponse([]byte(tt.raw))
			if !ok {
				t.Fatalf("not recognized: %q", tt.raw)
			}

			res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
			if err != nil {
				t.Fatalf("replacement is not an HTTP response: %v\n%s", err, out)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q, want application/json", got)
			}
			if !res.Close {
				t.Error("replacement does not close the connection")
			}

			var body errorBody
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatalf("body is not the JSON error: %v", err)
			}
			if body.Error.Code != tt.wantCode {
				t.Errorf("error_code %q, want %q", body.Error.Code, tt.wantCode)
			}
			if !strings.HasPrefix(body.Error.Message, tt.wantMessage) {
				t.Errorf("error_msg %q, want it to start with %q", body.Error.Message,
					tt.wantMessage)
			}
		})
	}
}

func TestProtocolErrorResponseIgnoresOtherWrites(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"handler response", "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\n\r\n{}"},
		{"handler text with net/http's headers sorted", "HTTP/1.1 404 Not Found\r\n" +
			"Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n404 page not found"},
		{"success", netHTTPError("200 OK", "")},
		{"body chunk", `{"error":{"error_code":"KMS.0205"}}`},
		{"short", "HTTP/1.1 4"},
		{"status not a number", netHTTPError("4x0 Bad Request", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, ok := ProtocolErrorResponse([]byte(tt.raw)); ok {
				t.Errorf("recognized %q as net/http's error, replaced by %q", tt.raw, out)
			}
		})
	}
}
