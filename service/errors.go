package service

import (
	"errors"
	"fmt"
)

// Error codes of the Huawei Cloud KMS API v1.0 that this service returns. The HTTP
// status of each is chosen in one place, service/api.
const (
	CodeInternal            = "KMS.0101"
	CodeUnavailable         = "KMS.0102"
	CodeInvalidURL          = "KMS.0201"
	CodeInvalidJSON         = "KMS.0202"
	CodeTooLong             = "KMS.0203"
	CodeMissingParameter    = "KMS.0204"
	CodeInvalidKeyID        = "KMS.0205"
	CodeInvalidSequence     = "KMS.0206"
	CodeInvalidContext      = "KMS.0208"
	CodeKeyDisabled         = "KMS.0209"
	CodeKeyPendingDeletion  = "KMS.0210"
	CodeInvalidProject      = "KMS.0305"
	CodeKeyForbidden        = "KMS.0306"
	CodeRoleForbidden       = "KMS.0307"
	CodeInvalidParameter    = "KMS.0308"
	CodeInvalidAlias        = "KMS.1101"
	CodeInvalidDescription  = "KMS.1103"
	CodeAliasExists         = "KMS.1104"
	CodeKeyQuota            = "KMS.1105"
	CodeKeyNotDisabled      = "KMS.1201"
	CodeKeyNotEnabled       = "KMS.1301"
	CodeInvalidPendingDays  = "KMS.1401"
	CodeAlreadyPending      = "KMS.1402"
	CodeNotPendingDeletion  = "KMS.1501"
	CodeInvalidLimit        = "KMS.1601"
	CodeInvalidMarker       = "KMS.1602"
	CodeInvalidRandomLength = "KMS.1801"
	CodeInvalidDataKeyBits  = "KMS.1901"
	CodeInvalidPlainText    = "KMS.2101"
	CodeInvalidPlainLength  = "KMS.2102"
	CodeDigestMismatch      = "KMS.2103"
	CodeInvalidCipherText   = "KMS.2201"
	CodeInvalidCipherLength = "KMS.2202"
	CodeDecryptFailed       = "KMS.2203"
	CodeExternalNoRotation  = "KMS.0312"
	CodeRotationDisabled    = "KMS.0313"

	// Grant errors.
	CodeGrantOnlyCreateGrant = "KMS.2401"
	CodeInvalidUserID        = "KMS.2402"
	CodeGrantQuota           = "KMS.2404"
	CodeInvalidGrantID       = "KMS.2501"
	CodeGrantKeyMismatch     = "KMS.2502"

	// Tag errors.
	CodeTagListEmpty       = "KMS.0401"
	CodeInvalidMatchValue  = "KMS.0402"
	CodeInvalidMatchKey    = "KMS.0403"
	CodeInvalidTagAction   = "KMS.0404"
	CodeInvalidTagValue    = "KMS.0405"
	CodeInvalidTagKey      = "KMS.0406"
	CodeInvalidTagListSize = "KMS.0407"
	CodeTooManyTags        = "KMS.0409"
	CodeTagValueLength     = "KMS.0410"
	CodeTagKeyLength       = "KMS.0411"
	CodeInvalidTagList     = "KMS.0412"
	CodeTooManyTagValues   = "KMS.0413"
	CodeInvalidMatches     = "KMS.0415"
	// NOTE: Huawei's error table gives no meaning for KMS.0416. It sits among the
	// resource_instances codes, just before "invalid offset", so it is used here for an
	// invalid limit.
	CodeInvalidTagLimit  = "KMS.0416"
	CodeInvalidTagOffset = "KMS.0417"
)

// Error is a failure with a KMS error code. Message is safe to show to the client: it
// never carries a key, a plaintext or an internal detail. Err, when set, is the cause,
// for logs only.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, &Error{Code: CodeKeyDisabled}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns an *Error with code and a client-safe message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the KMS code of err, or CodeInternal when err carries none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func errKeyNotFound() *Error {
	return Errorf(CodeInvalidKeyID, "the key does not exist")
}
