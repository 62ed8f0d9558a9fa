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
// and a short text. It rejects an Expect header other than 100-continue with an empty 417
// response (sendExpectationFailed), which no kmsd handler sends.
const (
	netHTTPStatusPrefix      = "HTTP/1.1 "
	netHTTPErrorHeaders      = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	netHTTPUnsupportedTE     = "Unsupported transfer encoding"
	netHTTPExpectationFailed = "HTTP/1.1 417 Expectation Failed\r\n"
	protocolErrorFallback    = "the request is not valid HTTP/1.1"
	netHTTPEmptyResponseEnd  = "\r\nContent-Length: 0\r\n\r\n"
)

// ProtocolErrorResponse returns the response that kmsd sends in place of raw, when raw is
// one of net/http's own plain-text error responses, and reports whether it is. The
// replacement carries a KMS error code in the JSON shape of every other error:
//
//   - 431 (request headers larger than the server's limit) stays 431, with KMS.0203;
//   - 501 (a Transfer-Encoding other than one chunked) becomes 400 with KMS.0201,
//     because the client can send the same body with Content-Length or chunked instead;
//   - 417 (an Expect header other than 100-continue) stays 417, with KMS.0201;
//   - every other status, such as a malformed request line, a duplicate Content-Length
//     or a protocol version other than HTTP/1.x, becomes 400 with KMS.0201, and the
//     message keeps net/http's reason where it gives one.
//
// A response written by a handler never matches: net/http writes its headers in sorted
// order and adds a Date header, while these responses have Content-Type before
// Connection and no Date. The replacement carries a new X-Request-Id, as every other
// response does, although no log line or audit record has that id.
func ProtocolErrorResponse(raw []byte) ([]byte, bool) {
	if !bytes.HasPrefix(raw, []byte(netHTTPStatusPrefix)) {
		return nil, false
	}

	var status int
	var detail errorDetail
	if bytes.HasPrefix(raw, []byte(netHTTPExpectationFailed)) &&
		bytes.HasSuffix(raw, []byte(netHTTPEmptyResponseEnd)) {
		status, detail = http.StatusExpectationFailed, errorDetail{Code: service.CodeInvalidURL,
			Message: "Expect values other than 100-continue are not supported"}
	} else {
		statusLine, text, found := bytes.Cut(raw, []byte(netHTTPErrorHeaders))
		if !found || len(statusLine) < len(netHTTPStatusPrefix)+3 {
			return nil, false
		}
		digits := statusLine[len(netHTTPStatusPrefix) : len(netHTTPStatusPrefix)+3]
		code, err := strconv.Atoi(string(digits))
		if err != nil || code < 400 {
			return nil, false
		}
		status, detail = protocolError(code, statusLine, text)
	}

	// errorBody has only string fields, for which json.Marshal cannot fail, so the error
	// branch only keeps net/http's response if that ever changes.
	body, err := json.Marshal(errorBody{Error: detail})
	if err != nil {
		return nil, false
	}

	out := make([]byte, 0, 128+len(body))
	out = append(out, netHTTPStatusPrefix...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(status)...)
	out = append(out, "\r\nContent-Type: application/json\r\nX-Request-Id: "...)
	out = append(out, NewRequestID()...)
	out = append(out, "\r\nContent-Length: "...)
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
			Message: "Transfer-Encoding must be absent or a single chunked, " +
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
