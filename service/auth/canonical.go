package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Names and formats of the SDK-HMAC-SHA256 scheme, as the Huawei Cloud Go SDK spells them.
const (
	// Algorithm is the first word of the Authorization header.
	Algorithm = "SDK-HMAC-SHA256"

	// HeaderDate carries the signing time in DateFormat, in UTC.
	HeaderDate = "X-Sdk-Date"

	// HeaderContentSHA256, when present, replaces the body hash in the canonical request.
	HeaderContentSHA256 = "X-Sdk-Content-Sha256"

	// DateFormat is the time.Parse layout of HeaderDate: YYYYMMDDTHHMMSSZ.
	DateFormat = "20060102T150405Z"

	// UnsignedPayload is the HeaderContentSHA256 value that leaves the body unsigned. The
	// SDK sends it for content types that are neither JSON nor BSON.
	UnsignedPayload = "UNSIGNED-PAYLOAD"
)

// signedDateHeader is HeaderDate as it appears in SignedHeaders.
const signedDateHeader = "x-sdk-date"

// requestParts are the request fields that the signature covers, taken from a client
// request before it is sent or from a server request as received.
type requestParts struct {
	method string
	// escapedPath is the path still percent-encoded, without the query.
	escapedPath string
	rawQuery    string
	header      http.Header
	// host is the value signed for the "host" header.
	host        string
	payloadHash string
}

// canonicalRequest builds the six-line canonical request over the headers in signed,
// in that order. It fails when the path or query cannot be decoded or when a signed
// header is absent from the request.
func canonicalRequest(p requestParts, signed []string) (string, error) {
	uri, err := canonicalURI(p.escapedPath)
	if err != nil {
		return "", err
	}

	query, err := canonicalQuery(p.rawQuery)
	if err != nil {
		return "", err
	}

	headers, err := canonicalHeaders(p.header, p.host, signed)
	if err != nil {
		return "", err
	}

	parts := []string{
		p.method,
		uri,
		query,
		headers,
		strings.Join(signed, ";"),
		p.payloadHash,
	}
	return strings.Join(parts, "\n"), nil
}

// canonicalURI decodes each "/"-separated segment of escapedPath and encodes it again
// with the SDK's unreserved set, so that "env:prod" and "env%3Aprod" both become
// "env%3Aprod" while an encoded "%2F" stays inside its segment. The result always ends
// in "/".
func canonicalURI(escapedPath string) (string, error) {
	segments := strings.Split(escapedPath, "/")
	for i, segment := range segments {
		decoded, err := url.PathUnescape(segment)
		if err != nil {
			return "", fmt.Errorf("decode path segment %q: %w", segment, err)
		}
		segments[i] = escape(decoded)
	}

	uri := strings.Join(segments, "/")
	if !strings.HasSuffix(uri, "/") {
		uri += "/"
	}
	return uri, nil
}

// canonicalQuery sorts the query by key and the values of each key, and encodes both
// with the SDK's unreserved set. The raw query is decoded as net/url does, so "+" is a
// space, which is what url.Values.Encode sends for one.
func canonicalQuery(rawQuery string) (string, error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("decode query: %w", err)
	}

	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)

	var pairs []string
	for _, key := range keys {
		sorted := slices.Clone(values[key])
		slices.Sort(sorted)
		for _, value := range sorted {
			pairs = append(pairs, escape(key)+"="+escape(value))
		}
	}
	return strings.Join(pairs, "&"), nil
}

// canonicalHeaders writes one "name:value" line per value of each signed header, values
// trimmed and sorted as the SDK does, each line followed by "\n". The "host" header is
// taken from host because net/http keeps it out of the header map.
func canonicalHeaders(header http.Header, host string, signed []string) (string, error) {
	var b strings.Builder
	for _, name := range signed {
		values := headerValues(header, name)
		if name == "host" {
			values = []string{host}
		}
		if len(values) == 0 {
			return "", fmt.Errorf("signed header %q is missing from the request", name)
		}

		values = slices.Clone(values)
		slices.Sort(values)
		for _, value := range values {
			b.WriteString(name)
			b.WriteByte(':')
			b.WriteString(strings.TrimSpace(value))
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}

// headerValues returns every value of the header whose name equals name in any case,
// including keys that were stored without canonicalization (such as "TEST_UNDERSCORE").
func headerValues(header http.Header, name string) []string {
	if values, ok := header[http.CanonicalHeaderKey(name)]; ok {
		return values
	}

	for key, values := range header {
		if strings.EqualFold(key, name) {
			return values
		}
	}
	return nil
}

// stringToSign returns the text that the HMAC covers.
func stringToSign(date, canonical string) string {
	digest := sha256.Sum256([]byte(canonical))
	return Algorithm + "\n" + date + "\n" + hex.EncodeToString(digest[:])
}

// computeSignature returns HMAC-SHA256(secretKey, string to sign), raw bytes.
func computeSignature(secretKey []byte, date, canonical string) []byte {
	mac := hmac.New(sha256.New, secretKey)
	mac.Write([]byte(stringToSign(date, canonical)))
	return mac.Sum(nil)
}

// hashPayload returns the lower-case hex SHA-256 of body.
func hashPayload(body []byte) string {
	digest := sha256.Sum256(body)
	return hex.EncodeToString(digest[:])
}

// escape percent-encodes every byte outside A-Z a-z 0-9 _ - ~ . with upper-case hex.
func escape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	switch {
	case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	case c == '_', c == '-', c == '~', c == '.':
		return true
	}
	return false
}
