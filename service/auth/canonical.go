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
	host string
	// payloadHash replaces the body hash when it is not empty.
	payloadHash string
	// body is the payload whose lower-case hex SHA-256 is signed when payloadHash is
	// empty.
	body []byte
}

// canonicalRequest builds the six-line canonical request over the headers in signed,
// in that order. It fails when the path or query cannot be decoded or when a signed
// header is absent from the request.
func canonicalRequest(p requestParts, signed []string) (string, error) {
	b, err := appendCanonicalRequest(nil, &p, strings.Join(signed, ";"))
	return string(b), err
}

// appendCanonicalRequest appends the canonical request of p over signed, lower-case
// header names separated by ";", to dst. The verifier hashes the result straight from a
// pooled buffer, so the hot path builds no strings.
func appendCanonicalRequest(dst []byte, p *requestParts, signed string) ([]byte, error) {
	dst = append(dst, p.method...)
	dst = append(dst, '\n')

	dst, err := appendCanonicalURI(dst, p.escapedPath)
	if err != nil {
		return dst, err
	}
	dst = append(dst, '\n')

	if p.rawQuery != "" {
		query, err := canonicalQuery(p.rawQuery)
		if err != nil {
			return dst, err
		}
		dst = append(dst, query...)
	}
	dst = append(dst, '\n')

	dst, err = appendCanonicalHeaders(dst, p.header, p.host, signed)
	if err != nil {
		return dst, err
	}
	dst = append(dst, '\n')

	dst = append(dst, signed...)
	dst = append(dst, '\n')
	if p.payloadHash != "" {
		return append(dst, p.payloadHash...), nil
	}
	digest := sha256.Sum256(p.body)
	return hex.AppendEncode(dst, digest[:]), nil
}

// canonicalURI decodes each "/"-separated segment of escapedPath and encodes it again
// with the SDK's unreserved set, so that "env:prod" and "env%3Aprod" both become
// "env%3Aprod" while an encoded "%2F" stays inside its segment. The result always ends
// in "/".
func canonicalURI(escapedPath string) (string, error) {
	b, err := appendCanonicalURI(nil, escapedPath)
	return string(b), err
}

// appendCanonicalURI appends the canonical URI of escapedPath to dst.
func appendCanonicalURI(dst []byte, escapedPath string) ([]byte, error) {
	first := true
	for segment := range strings.SplitSeq(escapedPath, "/") {
		if !first {
			dst = append(dst, '/')
		}
		first = false

		if !strings.Contains(segment, "%") {
			dst = appendEscaped(dst, segment)
			continue
		}
		decoded, err := url.PathUnescape(segment)
		if err != nil {
			return dst, fmt.Errorf("decode path segment %q: %w", segment, err)
		}
		dst = appendEscaped(dst, decoded)
	}

	if len(dst) == 0 || dst[len(dst)-1] != '/' {
		dst = append(dst, '/')
	}
	return dst, nil
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

// appendCanonicalHeaders appends one "name:value" line per value of each header in
// signed (lower-case names separated by ";"), values trimmed and sorted as the SDK does,
// each line followed by "\n". The "host" header is taken from host because net/http
// keeps it out of the header map. The error for a missing header names it as
// signedHeaderLabel does.
func appendCanonicalHeaders(dst []byte, header http.Header, host string, signed string) ([]byte, error) {
	position := 0
	for name := range strings.SplitSeq(signed, ";") {
		position++
		if name == "host" {
			dst = appendHeaderLine(dst, name, host)
			continue
		}

		values := headerValues(header, name)
		if len(values) == 0 {
			return dst, fmt.Errorf("signed header %s is missing from the request",
				signedHeaderLabel(position, name))
		}
		if len(values) > 1 {
			values = slices.Clone(values)
			slices.Sort(values)
		}
		for _, value := range values {
			dst = appendHeaderLine(dst, name, value)
		}
	}
	return dst, nil
}

func appendHeaderLine(dst []byte, name, value string) []byte {
	dst = append(dst, name...)
	dst = append(dst, ':')
	dst = append(dst, strings.TrimSpace(value)...)
	return append(dst, '\n')
}

// headerValues returns every value of the header whose name equals name in any case,
// including keys that were stored without canonicalization (such as "TEST_UNDERSCORE").
func headerValues(header http.Header, name string) []string {
	var buf [64]byte
	if key, ok := appendCanonicalKey(buf[:0], name); ok {
		// A map index with string(key) does not allocate.
		if values, ok := header[string(key)]; ok {
			return values
		}
	} else if values, ok := header[http.CanonicalHeaderKey(name)]; ok {
		return values
	}

	for key, values := range header {
		if strings.EqualFold(key, name) {
			return values
		}
	}
	return nil
}

// appendCanonicalKey appends http.CanonicalHeaderKey(name) to dst for a name that
// validHeaderName accepts: the first letter and each letter after "-" in upper case.
// For any other name it returns false, and the caller uses http.CanonicalHeaderKey.
func appendCanonicalKey(dst []byte, name string) ([]byte, bool) {
	if !validHeaderName(name) {
		return dst, false
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst, true
}

// computeSignature returns HMAC-SHA256(secretKey, string to sign), raw bytes.
func computeSignature(secretKey []byte, date, canonical string) []byte {
	return signDigest(secretKey, date, sha256.Sum256([]byte(canonical)))
}

// signDigest returns the signature over the string to sign of date and the SHA-256
// digest of a canonical request.
func signDigest(secretKey []byte, date string, digest [sha256.Size]byte) []byte {
	mac := hmac.New(sha256.New, secretKey)
	mac.Write(appendStringToSign(make([]byte, 0, 128), date, &digest))
	return mac.Sum(make([]byte, 0, sha256.Size))
}

// hashPayload returns the lower-case hex SHA-256 of body.
func hashPayload(body []byte) string {
	digest := sha256.Sum256(body)
	return hex.EncodeToString(digest[:])
}

// escape percent-encodes every byte outside A-Z a-z 0-9 _ - ~ . with upper-case hex.
func escape(s string) string {
	return string(appendEscaped(make([]byte, 0, len(s)), s))
}

// appendEscaped appends s to dst with every byte outside the unreserved set
// percent-encoded in upper-case hex.
func appendEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&15])
	}
	return dst
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
