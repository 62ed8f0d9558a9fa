package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of VerifierConfig, after the public Huawei Cloud API gateway: X-Sdk-Date within
// 15 minutes of server time, and an access key locked for 5 minutes after 5 consecutive
// failures.
const (
	DefaultWindow         = 15 * time.Minute
	DefaultMaxFailures    = 5
	DefaultLockDuration   = 5 * time.Minute
	DefaultMaxTrackedKeys = 10000
)

// Principal is the authenticated caller of a request.
type Principal struct {
	AccessKey string
	UserID    string
	ProjectID string
	DomainID  string
	// Role is one of the Role constants.
	Role string
}

// CredentialSource returns the principal and secret key of an access key. Credentials
// implements it. Lookup returns an error wrapping ErrUnknownAccessKey or
// ErrDisabledAccessKey for a key that cannot sign, and any other error when the lookup
// itself failed. Callers must not modify the returned secret.
type CredentialSource interface {
	Lookup(ctx context.Context, accessKey string) (Principal, []byte, error)
}

// VerifierConfig configures a Verifier. Zero fields take the Default values.
type VerifierConfig struct {
	// Window is how far X-Sdk-Date may be from the clock, before or after.
	Window time.Duration
	// MaxFailures is the number of consecutive failures of one access key that locks it.
	MaxFailures int
	// LockDuration is how long a locked access key stays locked.
	LockDuration time.Duration
	// MaxTrackedKeys caps how many access keys have a failure count in memory.
	MaxTrackedKeys int
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Logger receives lockout events. Nil means slog.Default().
	Logger *slog.Logger
}

// Verifier checks SDK-HMAC-SHA256 signatures of server requests. It is safe for
// concurrent use.
//
// Failure counts live in the memory of one Verifier, so with several replicas an access
// key is locked on each replica separately, after MaxFailures failures there.
type Verifier struct {
	source  CredentialSource
	window  time.Duration
	clock   func() time.Time
	logger  *slog.Logger
	lockout *lockout
}

// NewVerifier returns a Verifier that reads credentials from source.
func NewVerifier(source CredentialSource, cfg VerifierConfig) *Verifier {
	cfg = cfg.withDefaults()
	return &Verifier{
		source:  source,
		window:  cfg.Window,
		clock:   cfg.Clock,
		logger:  cfg.Logger,
		lockout: newLockout(cfg.MaxFailures, cfg.LockDuration, cfg.MaxTrackedKeys),
	}
}

func (cfg VerifierConfig) withDefaults() VerifierConfig {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = DefaultMaxFailures
	}
	if cfg.LockDuration <= 0 {
		cfg.LockDuration = DefaultLockDuration
	}
	if cfg.MaxTrackedKeys <= 0 {
		cfg.MaxTrackedKeys = DefaultMaxTrackedKeys
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// Verify authenticates r, whose body the caller has already read into body (the exact
// bytes received). It returns the principal of the signing access key.
//
// The path is taken from r.RequestURI, still percent-encoded as received, and each
// segment is decoded and encoded again. Only when RequestURI is empty (a request built
// for a client) is r.URL.EscapedPath() used instead. A signed "host" header is the
// request's Host.
//
// The body hash is the SHA-256 of body unless X-Sdk-Content-Sha256 is present. That
// header may hold UNSIGNED-PAYLOAD only when Content-Type is present and is neither JSON
// nor BSON, which is when the SDK sends it, and only for an empty body. Every API call
// that has a body reads it as JSON, so an unsigned body would let anyone who can alter
// the request in transit change what a signed call does. Any other value must equal the
// hex SHA-256 of body.
//
// Errors wrap the sentinel errors of this package (see Message for client wording).
// Failures after the access key was found (bad date, bad signature) count towards the
// lockout, and a success resets the count. A locked key is rejected with a *LockedError
// before any other check. When no credential was found, the error shows the access key
// as RecordedAccessKey does.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, body []byte) (Principal, error) {
	var auth authorizationParts
	if err := parseAuthorization(r.Header.Get("Authorization"), &auth); err != nil {
		return Principal{}, err
	}
	if !signedHeadersContain(auth.signedHeaders, signedDateHeader) {
		return Principal{}, malformed("SignedHeaders does not include %s", signedDateHeader)
	}

	now := v.clock()
	if until, locked := v.lockout.lockedUntil(auth.accessKey, now); locked {
		return Principal{}, &LockedError{AccessKey: auth.accessKey, Until: until}
	}

	principal, key, err := v.lookup(ctx, auth.accessKey)
	if err != nil && !credentialFound(err) && !plausibleAccessKey(auth.accessKey) {
		// No credential was found, and the value can be a secret (see RecordedAccessKey).
		// Credential sources repeat it in their errors, as Credentials and SQLStore do.
		err = &redactedError{err: err, accessKey: auth.accessKey}
	}
	if errors.Is(err, ErrUnknownAccessKey) || errors.Is(err, ErrDisabledAccessKey) {
		return Principal{}, err
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up access key %s: %w",
			RecordedAccessKey(auth.accessKey, err), err)
	}

	if err := v.check(r, body, &auth, key, now); err != nil {
		v.recordFailure(auth.accessKey, now)
		return Principal{}, err
	}

	v.lockout.recordSuccess(auth.accessKey)
	return principal, nil
}

// redactedError is err with RedactedAccessKey in place of accessKey in its message. It
// unwraps to err, so errors.Is and errors.As still find the errors in its chain, whose
// own messages are not changed. accessKey must be long enough not to occur in the
// message by chance. Every Access value that parseAuthorization accepts and
// plausibleAccessKey rejects has at least minSecretLength characters.
type redactedError struct {
	err       error
	accessKey string
}

func (e *redactedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.accessKey, RedactedAccessKey)
}

func (e *redactedError) Unwrap() error { return e.err }

// lookup returns the principal and signing key of accessKey from the source, with the
// source's own signing key when it keeps one per credential.
func (v *Verifier) lookup(ctx context.Context, accessKey string) (Principal, *signingKey, error) {
	if source, ok := v.source.(signingKeySource); ok {
		return source.lookupSigningKey(ctx, accessKey)
	}

	principal, secret, err := v.source.Lookup(ctx, accessKey)
	if err != nil {
		return Principal{}, nil, err
	}
	return principal, newSigningKey(secret), nil
}

// check verifies the date and the signature of r against key.
func (v *Verifier) check(r *http.Request, body []byte, auth *authorizationParts, key *signingKey,
	now time.Time) error {
	date, err := v.checkDate(r.Header, now)
	if err != nil {
		return err
	}

	payloadHash, err := receivedPayloadHash(r.Header, body)
	if err != nil {
		return err
	}

	parts := requestParts{
		method:      r.Method,
		escapedPath: receivedPath(r),
		rawQuery:    r.URL.RawQuery,
		header:      r.Header,
		host:        r.Host,
		payloadHash: payloadHash,
		body:        body,
	}
	buf := canonicalBuffers.Get().(*[]byte)
	canonical, err := appendCanonicalRequest((*buf)[:0], &parts, auth.signedHeaders)
	digest := sha256.Sum256(canonical)
	*buf = canonical[:0]
	canonicalBuffers.Put(buf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignatureMismatch, err)
	}

	if !key.verify(date, &digest, auth.signature[:]) {
		return fmt.Errorf("%w for access key %s", ErrSignatureMismatch, auth.accessKey)
	}
	return nil
}

// checkDate returns the X-Sdk-Date value when it is valid and within the window of now.
func (v *Verifier) checkDate(header http.Header, now time.Time) (string, error) {
	values := header.Values(HeaderDate)
	if len(values) == 0 {
		return "", ErrMissingDate
	}
	if len(values) != 1 {
		return "", fmt.Errorf("%w: header must appear once, found %d", ErrInvalidDate, len(values))
	}

	date := values[0]
	signedAt, err := parseDate(date)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not in YYYYMMDDTHHMMSSZ form", ErrInvalidDate,
			describeDate(date))
	}

	skew := now.Sub(signedAt).Abs()
	if skew > v.window {
		return "", fmt.Errorf("%w: %s is %s from server time, more than %s",
			ErrDateExpired, date, skew.Round(time.Second), v.window)
	}
	return date, nil
}

func (v *Verifier) recordFailure(ak string, now time.Time) {
	until, locked := v.lockout.recordFailure(ak, now)
	if locked {
		v.logger.Warn("access key locked after consecutive authentication failures",
			"access_key", ak, "locked_until", until)
	}
}

// receivedPath returns the request path as received, still percent-encoded.
func receivedPath(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" {
		return r.URL.EscapedPath()
	}

	uri, _, _ = strings.Cut(uri, "?")
	if strings.HasPrefix(uri, "/") {
		return uri
	}

	// Absolute form ("http://host/path"), which a server receives from some proxies.
	if _, rest, ok := strings.Cut(uri, "://"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i:]
		}
		return "/"
	}
	return r.URL.EscapedPath()
}

// receivedPayloadHash returns the X-Sdk-Content-Sha256 value that replaces the body
// hash in the canonical request of a received request, applying the rules documented
// on Verify. It returns "" when the header is absent, for the body hash itself.
func receivedPayloadHash(header http.Header, body []byte) (string, error) {
	declared := header.Get(HeaderContentSHA256)
	if declared == "" {
		return "", nil
	}

	if declared == UnsignedPayload {
		if !unsignedPayloadAllowed(header.Get("Content-Type")) {
			return "", fmt.Errorf("%w: %s is accepted only for content types other than JSON and BSON",
				ErrSignatureMismatch, UnsignedPayload)
		}
		if len(body) != 0 {
			return "", fmt.Errorf("%w: %s is accepted only for an empty body; sign the body",
				ErrSignatureMismatch, UnsignedPayload)
		}
		return declared, nil
	}

	if !strings.EqualFold(declared, hashPayload(body)) {
		return "", fmt.Errorf("%w: %s does not match the body", ErrSignatureMismatch,
			HeaderContentSHA256)
	}
	return declared, nil
}

// unsignedPayloadAllowed reports whether the SDK would send UNSIGNED-PAYLOAD for
// contentType: the header is present and contains neither "application/json" nor
// "application/bson" (the SDK's substring test, case-insensitive here).
func unsignedPayloadAllowed(contentType string) bool {
	if contentType == "" {
		return false
	}

	lower := strings.ToLower(contentType)
	return !strings.Contains(lower, "application/json") &&
		!strings.Contains(lower, "application/bson")
}

// canonicalBuffers holds the buffers in which Verify builds canonical requests.
var canonicalBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// parseDate parses an X-Sdk-Date value, YYYYMMDDTHHMMSSZ in UTC, as time.Parse with
// DateFormat does but without its general layout machinery.
func parseDate(s string) (time.Time, error) {
	if len(s) != len("20060102T150405Z") || s[8] != 'T' || s[15] != 'Z' {
		return time.Time{}, errors.New("not in YYYYMMDDTHHMMSSZ form")
	}
	var n [6]int
	for i, field := range [6][2]int{{0, 4}, {4, 6}, {6, 8}, {9, 11}, {11, 13}, {13, 15}} {
		for _, c := range s[field[0]:field[1]] {
			if c < '0' || c > '9' {
				return time.Time{}, errors.New("not in YYYYMMDDTHHMMSSZ form")
			}
			n[i] = n[i]*10 + int(c-'0')
		}
	}
	t := time.Date(n[0], time.Month(n[1]), n[2], n[3], n[4], n[5], 0, time.UTC)
	// time.Date normalises out-of-range fields (month 13, second 61); reject them.
	if t.Year() != n[0] || int(t.Month()) != n[1] || t.Day() != n[2] ||
		t.Hour() != n[3] || t.Minute() != n[4] || t.Second() != n[5] {
		return time.Time{}, errors.New("not a valid date and time")
	}
	return t, nil
}

// describeDate returns an invalid X-Sdk-Date value for an error message: quoted when it
// is under 32 bytes of digits, letters T and Z, '-', ':', '.' and spaces, as other date
// formats are, and only its length otherwise. Every secret key has at least 32
// characters, so a caller who pastes one into the header does not see it logged.
func describeDate(date string) string {
	if len(date) < 32 && strings.Trim(date, "0123456789TZ-:. ") == "" {
		return strconv.Quote(date)
	}
	return fmt.Sprintf("a value of %d bytes", len(date))
}
