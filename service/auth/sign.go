package auth

import (
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Sign signs req for the access key pair (ak, sk) as the Huawei Cloud Go SDK does. It
// sets X-Sdk-Date to now in UTC, and an Authorization header that signs every header
// already in req (lower-cased and sorted) except names that start with "content-type" or
// contain "_". An Authorization header from an earlier signature is replaced, not signed.
//
// body must be the exact bytes that will be sent. When req carries an
// X-Sdk-Content-Sha256 header, its value replaces the body hash, as in the SDK. Sign
// never sets that header itself, so bodies it signs are always covered by the signature.
// Headers added to req after Sign are not signed. Host is signed only when req.Header
// names it, with the value req.Host (or req.URL.Host when req.Host is empty).
//
// A request whose query net/url cannot parse (for example one with ";") gets a signature
// that the server rejects.
func Sign(req *http.Request, body []byte, ak, sk string, now time.Time) {
	req.Header.Set(HeaderDate, now.UTC().Format(DateFormat))
	signWithHeaders(req, body, ak, sk, defaultSignedHeaders(req.Header))
}

// signWithHeaders sets the Authorization header of req, signing the headers in signed
// (lower-case names, in that order). req must already carry X-Sdk-Date.
func signWithHeaders(req *http.Request, body []byte, ak, sk string, signed []string) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}

	payloadHash := req.Header.Get(HeaderContentSHA256)
	if payloadHash == "" {
		payloadHash = hashPayload(body)
	}

	parts := requestParts{
		method:      req.Method,
		escapedPath: req.URL.EscapedPath(),
		rawQuery:    req.URL.RawQuery,
		header:      req.Header,
		host:        host,
		payloadHash: payloadHash,
	}

	// The only errors come from a path or query that cannot be decoded or a signed
	// header that is missing. The signature then covers an empty canonical request,
	// which the server rejects.
	canonical, _ := canonicalRequest(parts, signed)

	date := req.Header.Get(HeaderDate)
	signature := hex.EncodeToString(computeSignature([]byte(sk), date, canonical))
	req.Header.Set("Authorization", FormatAuthorization(ak, signed, signature))
}

// defaultSignedHeaders returns the SDK's default header choice for header. It also
// leaves out Authorization, which a request signed before carries and which a signature
// cannot cover.
func defaultSignedHeaders(header http.Header) []string {
	var names []string
	for key := range header {
		name := strings.ToLower(key)
		if strings.HasPrefix(name, "content-type") || strings.Contains(name, "_") {
			continue
		}
		if name == "authorization" {
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// FormatAuthorization returns the Authorization header value
// "SDK-HMAC-SHA256 Access=<ak>, SignedHeaders=<a;b>, Signature=<signature>".
func FormatAuthorization(ak string, signedHeaders []string, signature string) string {
	return Algorithm + " Access=" + ak +
		", SignedHeaders=" + strings.Join(signedHeaders, ";") +
		", Signature=" + signature
}
