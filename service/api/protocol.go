package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/hsmkms/kms/service"
)

// net/http rejects a request that it cannot parse itself, before any handler runs, by
// writing a plain-text response straight to the connection (conn.serve in net/http's
// server.go). Each such response is one write of the status line, exactly these headers
// and a short text.
const (
	netHTTPStatusPrefix   = "HTTP/1.1 "
	netHTTPErrorHeaders   = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	netHTTPUnsupportedTE  = "Unsupported transfer encoding"
	protocolErrorFallback = "the request is not valid HTTP/1.1"
)

// ProtocolErrorResponse returns the response that kmsd sends in place of raw, when raw is
// one of net/http's own plain-text error responses, and reports whether it is. The
// replacement carries a KMS error code in the JSON shape of every other error:
//
//   - 431 (request headers larger than the server's limit) stays 431, with KMS.0203;
//   - 501 (a Transfer-Encoding other than chunked) becomes 400 with KMS.0201, because
//     the client can send the same body with Content-Length or chunked instead;
//   - every other status, such as a malformed request line, a duplicate Content-Length
//     or a protocol version other than HTTP/1.x, becomes 400 with KMS.0201, and the
//     message keeps net/http's reason where it gives one.
//
// A response written by a handler never matches: net/http writes its headers in sorted
// order and adds a Date header, while these responses have Content-Type before
// Connection and no Date.
func ProtocolErrorResponse(raw []byte) ([]byte, bool) {
	if !bytes.HasPrefix(raw, []byte(netHTTPStatusPrefix)) {
		return nil, false
	}
	statusLine, text, found := bytes.Cut(raw, []byte(netHTTPErrorHeaders))
	if !found || len(statusLine) < len(netHTTPStatusPrefix)+3 {
		return nil, false
	}
	code, err := strconv.Atoi(string(statusLine[len(netHTTPStatusPrefix) : len(netHTTPStatusPrefix)+3]))
	if err != nil || code < 400 {
		return nil, false
	}

	status, detail := protocolError(code, statusLine, text)
	body, err := json.Marshal(errorBody{Error: detail})
	if err != nil {
		return nil, false // json.Marshal fails only for types that errorBody does not use
	}

	out := make([]byte, 0, 128+len(body))
	out = append(out, netHTTPStatusPrefix...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\nConnection: close\r\n\r\n"...)
	return append(out, body...), true
}

// protocolError maps net/http's status code, status line and text to the status and
// error detail of the replacement response.
func protocolError(code int, statusLine, text []byte) (int, errorDetail) {
	switch {
	case code == http.StatusRequestHeaderFieldsTooLarge:
		return code, errorDetail{Code: service.CodeTooLong,
			Message: "the request headers are larger than the server accepts"}
	case code == http.StatusNotImplemented && string(text) == netHTTPUnsupportedTE:
		return http.StatusBadRequest, errorDetail{Code: service.CodeInvalidURL,
			Message: "Transfer-Encoding values other than chunked are not supported, " +
				"so send the body with Content-Length or chunked"}
	}

	// A status line of the form "HTTP/1.1 400 Bad Request: missing required Host header"
	// carries net/http's reason, which never echoes the request.
	message := protocolErrorFallback
	if _, reason, ok := bytes.Cut(statusLine, []byte(": ")); ok && len(reason) > 0 {
		message += ": " + string(reason)
	}
	return http.StatusBadRequest, errorDetail{Code: service.CodeInvalidURL, Message: message}
}
