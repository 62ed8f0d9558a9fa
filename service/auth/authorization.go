package auth

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
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
	var parsed authorizationParts
	if err := parseAuthorization(value, &parsed); err != nil {
		return Authorization{}, err
	}
	return Authorization{
		AccessKey:     parsed.accessKey,
		SignedHeaders: strings.Split(parsed.signedHeaders, ";"),
		Signature:     bytes.Clone(parsed.signature[:]),
	}, nil
}

// authorizationParts is a parsed Authorization header in the form that Verify uses,
// which parsing fills without allocating.
type authorizationParts struct {
	accessKey string
	// signedHeaders is the SignedHeaders value as received: valid, unique lower-case
	// header names separated by ";", which is also how the canonical request lists them.
	signedHeaders string
	signature     [sha256.Size]byte
}

// parseAuthorization parses value into dst as ParseAuthorization documents.
func parseAuthorization(value string, dst *authorizationParts) error {
	if len(value) > maxAuthorizationLength {
		return malformed("header is longer than %d bytes", maxAuthorizationLength)
	}
	if value == "" {
		return malformed("header is missing")
	}

	algorithm, params, ok := strings.Cut(value, " ")
	if !ok || algorithm != Algorithm {
		return malformed("algorithm is not %s", Algorithm)
	}

	// The messages name a parameter by its position or by one of the three known names,
	// never by its text: a malformed parameter can hold the signature, which logs and
	// responses must not repeat.
	var auth authorizationParts
	seen := make(map[string]bool, 3)
	position := 0
	for param := range strings.SplitSeq(params, ",") {
		position++
		name, paramValue, ok := strings.Cut(strings.TrimSpace(param), "=")
		if !ok {
			return malformed("parameter %d has no \"=\"", position)
		}
		if name != "Access" && name != "SignedHeaders" && name != "Signature" {
			return malformed("parameter %d is unknown: the parameters are Access, "+
				"SignedHeaders and Signature", position)
		}
		if seen[name] {
			return malformed("parameter %s appears twice", name)
		}
		seen[name] = true

		if err := auth.setParameter(name, paramValue); err != nil {
			return err
		}
	}

	for _, name := range []string{"Access", "SignedHeaders", "Signature"} {
		if !seen[name] {
			return malformed("parameter %s is missing", name)
		}
	}
	*dst = auth
	return nil
}

func (a *authorizationParts) setParameter(name, value string) error {
	switch name {
	case "Access":
		if !validAccessKey(value) {
			return malformed("access key is not 1 to %d characters of A-Z a-z 0-9 _ - .",
				maxAccessKeyLength)
		}
		a.accessKey = value

	case "SignedHeaders":
		if err := checkSignedHeaders(value); err != nil {
			return err
		}
		a.signedHeaders = value

	case "Signature":
		if !decodeSignature(&a.signature, value) {
			return malformed("signature is not 64 hex digits")
		}

	default:
		// parseAuthorization passes only the three names above.
		return malformed("parameter %s is unknown", name)
	}
	return nil
}

// checkSignedHeaders checks a SignedHeaders value: at most maxSignedHeaders names
// separated by ";", each a lower-case header name that appears once. Its errors name a
// header as signedHeaderLabel does.
func checkSignedHeaders(value string) error {
	if strings.Count(value, ";") >= maxSignedHeaders {
		return malformed("more than %d signed headers", maxSignedHeaders)
	}

	before := 0 // length of the names before the current one, separators included
	position := 0
	for name := range strings.SplitSeq(value, ";") {
		position++
		if !validHeaderName(name) {
			return malformed("signed header %s is not a lower-case header name",
				signedHeaderLabel(position, name))
		}
		if before > 0 && signedHeadersContain(value[:before-1], name) {
			return malformed("signed header %s appears twice", signedHeaderLabel(position, name))
		}
		before += len(name) + 1
	}
	return nil
}

// signedHeaderLabel returns how error messages, which kmsd logs, name the signed header
// name at position (counted from 1) of SignedHeaders. A valid header name shorter than
// minSecretLength is quoted. Any other name is replaced by its position, because a
// client can write its signature (64 hex digits) or secret key (at least minSecretLength
// characters) into SignedHeaders by mistake.
func signedHeaderLabel(position int, name string) string {
	if validHeaderName(name) && len(name) < minSecretLength {
		return strconv.Quote(name)
	}
	return strconv.Itoa(position)
}

// signedHeadersContain reports whether the ";"-separated list signed has name.
func signedHeadersContain(signed, name string) bool {
	for candidate := range strings.SplitSeq(signed, ";") {
		if candidate == name {
			return true
		}
	}
	return false
}

// decodeSignature decodes 64 hex digits of either case into dst, as hex.DecodeString
// accepts them, and reports whether value was such a string.
func decodeSignature(dst *[sha256.Size]byte, value string) bool {
	if len(value) != 2*len(dst) {
		return false
	}
	for i := range dst {
		high, ok1 := fromHexChar(value[2*i])
		low, ok2 := fromHexChar(value[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = high<<4 | low
	}
	return true
}

func fromHexChar(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
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

// RedactedAccessKey is the placeholder that logs, error messages and audit records show
// in place of an Access value that can be a secret (see RecordedAccessKey).
const RedactedAccessKey = "(redacted)"

// RecordedAccessKey returns how logs and audit records show accessKey, the Access value
// of a request that Verify rejected with err. It is accessKey itself when that is a
// plausible access key (plausibleAccessKey). It is accessKey too when err shows that
// Verify found a credential with it, which is true of a locked or disabled access key and
// of a bad X-Sdk-Date or signature. Otherwise it is RedactedAccessKey, because the value
// can be the signature or the secret key, written into Access by mistake.
func RecordedAccessKey(accessKey string, err error) string {
	if plausibleAccessKey(accessKey) || credentialFound(err) {
		return accessKey
	}
	return RedactedAccessKey
}

// credentialFound reports whether err, from Verify, comes from a check that Verify runs
// only after it found the credential of the access key.
func credentialFound(err error) bool {
	return errors.Is(err, ErrLocked) || errors.Is(err, ErrDisabledAccessKey) ||
		errors.Is(err, ErrInvalidDate) || errors.Is(err, ErrDateExpired) ||
		errors.Is(err, ErrSignatureMismatch)
}

// plausibleAccessKey reports whether ak can be an access key but not a whole secret key
// or signature. It is true for a valid access key (validAccessKey) shorter than
// minSecretLength, which every generated access key (accessKeyLength characters) is.
// Chosen secret keys have at least minSecretLength characters, generated ones
// secretKeyLength, and signatures 64 hex digits.
//
// NOTE: credentials created before chosen secret keys needed minSecretLength characters
// can have shorter ones, which pass for plausible access keys here.
func plausibleAccessKey(ak string) bool {
	return validAccessKey(ak) && len(ak) < minSecretLength
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
