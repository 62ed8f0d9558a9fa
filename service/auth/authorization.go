package auth

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Limits on the Authorization header. Real headers are far below them: the SDK signs
// three or four headers with a 20-character access key.
const (
	maxAuthorizationLength = 4096
	maxSignedHeaders       = 64
	maxAccessKeyLength     = 128
)

// Authorization is a parsed SDK-HMAC-SHA256 Authorization header.
type Authorization struct {
	AccessKey string
	// SignedHeaders are the lower-case header names, in the order the client listed them.
	SignedHeaders []string
	// Signature is the decoded 32-byte HMAC-SHA256.
	Signature []byte
}

// ParseAuthorization parses "SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>,
// Signature=<hex>". The three parameters may come in any order, separated by commas with
// optional spaces, and each must appear once. Header names must be lower case and
// unique, and the signature must be 64 hex digits. Every error wraps ErrMalformedHeader.
//
// ParseAuthorization does not require x-sdk-date among the signed headers; Verify does.
func ParseAuthorization(value string) (Authorization, error) {
	if len(value) > maxAuthorizationLength {
		return Authorization{}, malformed("header is longer than %d bytes", maxAuthorizationLength)
	}
	if value == "" {
		return Authorization{}, malformed("header is missing")
	}

	algorithm, params, ok := strings.Cut(value, " ")
	if !ok || algorithm != Algorithm {
		return Authorization{}, malformed("algorithm is not %s", Algorithm)
	}

	var auth Authorization
	seen := make(map[string]bool, 3)
	for param := range strings.SplitSeq(params, ",") {
		name, paramValue, ok := strings.Cut(strings.TrimSpace(param), "=")
		if !ok {
			return Authorization{}, malformed("parameter %q has no \"=\"", param)
		}
		if seen[name] {
			return Authorization{}, malformed("parameter %s appears twice", name)
		}
		seen[name] = true

		if err := auth.setParameter(name, paramValue); err != nil {
			return Authorization{}, err
		}
	}

	for _, name := range []string{"Access", "SignedHeaders", "Signature"} {
		if !seen[name] {
			return Authorization{}, malformed("parameter %s is missing", name)
		}
	}
	return auth, nil
}

func (a *Authorization) setParameter(name, value string) error {
	switch name {
	case "Access":
		if !validAccessKey(value) {
			return malformed("access key is not 1 to %d characters of A-Z a-z 0-9 _ - .",
				maxAccessKeyLength)
		}
		a.AccessKey = value

	case "SignedHeaders":
		headers, err := parseSignedHeaders(value)
		if err != nil {
			return err
		}
		a.SignedHeaders = headers

	case "Signature":
		signature, err := hex.DecodeString(value)
		if err != nil || len(signature) != 32 {
			return malformed("signature is not 64 hex digits")
		}
		a.Signature = signature

	default:
		return malformed("unknown parameter %q", name)
	}
	return nil
}

func parseSignedHeaders(value string) ([]string, error) {
	headers := strings.Split(value, ";")
	if len(headers) > maxSignedHeaders {
		return nil, malformed("more than %d signed headers", maxSignedHeaders)
	}

	for i, name := range headers {
		if !validHeaderName(name) {
			return nil, malformed("signed header %q is not a lower-case header name", name)
		}
		if slices.Contains(headers[:i], name) {
			return nil, malformed("signed header %q appears twice", name)
		}
	}
	return headers, nil
}

// validHeaderName reports whether name is a non-empty RFC 9110 token without upper-case
// letters.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}

	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validAccessKey reports whether ak is 1 to maxAccessKeyLength characters of
// A-Z a-z 0-9 _ - . (generated access keys use A-Z 0-9 only).
func validAccessKey(ak string) bool {
	if ak == "" || len(ak) > maxAccessKeyLength {
		return false
	}

	for i := 0; i < len(ak); i++ {
		c := ak[i]
		if !isUnreserved(c) || c == '~' {
			return false
		}
	}
	return true
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedHeader, fmt.Sprintf(format, args...))
}
