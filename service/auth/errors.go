package auth

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of Verify and Credentials. Errors wrap them with %w and add detail
// (never a secret key or the expected signature), so test them with errors.Is. An error
// from Verify that wraps none of them is an internal failure of the credential store or
// the token, and the caller should return a server error for it.
var (
	// ErrMalformedHeader means the Authorization header is missing or cannot be parsed,
	// or its SignedHeaders omits x-sdk-date.
	ErrMalformedHeader = errors.New("malformed Authorization header")

	// ErrInvalidDate means X-Sdk-Date is missing, repeated or not in YYYYMMDDTHHMMSSZ form.
	ErrInvalidDate = errors.New("invalid X-Sdk-Date")

	// ErrMissingDate means the request has no X-Sdk-Date header. It matches
	// ErrInvalidDate with errors.Is too.
	ErrMissingDate = fmt.Errorf("%w: header missing", ErrInvalidDate)

	// ErrDateExpired means X-Sdk-Date is further from the verifier's clock than the window.
	ErrDateExpired = errors.New("X-Sdk-Date outside the accepted window")

	// ErrUnknownAccessKey means no credential has the access key.
	ErrUnknownAccessKey = errors.New("access key not found")

	// ErrDisabledAccessKey means the credential exists but is disabled.
	ErrDisabledAccessKey = errors.New("access key disabled")

	// ErrSignatureMismatch means the signature does not match the request, or the server
	// cannot rebuild the canonical request (undecodable path or query, missing signed
	// header, body hash mismatch).
	ErrSignatureMismatch = errors.New("signature mismatch")

	// ErrLocked means the access key is locked after too many consecutive failures.
	// Verify returns it as a *LockedError.
	ErrLocked = errors.New("access key locked")

	// ErrAccessKeyExists means Create was given an access key that already has a
	// credential.
	ErrAccessKeyExists = errors.New("access key already exists")

	// ErrInvalidCredential means a field of a CreateRequest or AdminEnv is invalid.
	ErrInvalidCredential = errors.New("invalid credential")
)

// LockedError is returned by Verify for a locked access key. It matches ErrLocked with
// errors.Is.
type LockedError struct {
	AccessKey string
	// Until is when the lock ends, from which a Retry-After header can be derived.
	Until time.Time
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("access key %s locked until %s after repeated authentication failures",
		e.AccessKey, e.Until.UTC().Format(time.RFC3339))
}

// Is reports whether target is ErrLocked.
func (e *LockedError) Is(target error) bool {
	return target == ErrLocked
}

// IsLocked reports whether err means a locked access key. Callers reply to it
// differently from other authentication failures (Huawei's gateway uses the message "AK access
// failed to reach the limit, forbidden").
func IsLocked(err error) bool {
	return errors.Is(err, ErrLocked)
}

// Client-safe messages in the wording of Huawei's API gateway (error code APIGW.0301).
const (
	messageSignature   = "Incorrect IAM authentication information: verify aksk signature fail"
	messageUnknownAK   = "Incorrect IAM authentication information: ak not exist"
	messageDate        = "Incorrect IAM authentication information: x-sdk-date expired"
	messageMissingDate = "Incorrect IAM authentication information: x-sdk-date missing"
	messageInvalidDate = "Incorrect IAM authentication information: x-sdk-date invalid"
	messageLocked      = "AK access failed to reach the limit, forbidden"
	messageInternal    = "Authentication failed because of an internal error, retry later"
)

// Message returns the message to send to the client for an error from Verify. It never
// includes the error's detail. A disabled access key gets the unknown-key message, so
// clients cannot tell the two apart. Internal failures get a generic retry message.
func Message(err error) string {
	switch {
	case errors.Is(err, ErrLocked):
		return messageLocked
	case errors.Is(err, ErrUnknownAccessKey), errors.Is(err, ErrDisabledAccessKey):
		return messageUnknownAK
	case errors.Is(err, ErrDateExpired):
		return messageDate
	case errors.Is(err, ErrMissingDate):
		// Huawei's documented wording covers an expired date only. The missing and the
		// invalid date messages follow its form.
		return messageMissingDate
	case errors.Is(err, ErrInvalidDate):
		return messageInvalidDate
	case errors.Is(err, ErrSignatureMismatch), errors.Is(err, ErrMalformedHeader):
		return messageSignature
	}
	return messageInternal
}
