package hsm

import (
	"errors"
	"fmt"
	"slices"

	"github.com/miekg/pkcs11"
)

// ErrPINIncorrect means the token rejected the user PIN (CKR_PIN_INCORRECT, CKR_PIN_INVALID,
// CKR_PIN_LEN_RANGE, CKR_PIN_EXPIRED or CKR_PIN_LOCKED). Open returns it so that the daemon can
// exit with a clear message, and the Module never retries a rejected PIN because tokens lock a
// PIN after a few failed logins.
var ErrPINIncorrect = errors.New("token rejected the user PIN")

// ErrTokenAmbiguous is wrapped by the error of a connection attempt that found more than one
// token with the configured label. No login is tried then. The Module keeps retrying, so it
// connects once all but one of those tokens are relabelled or removed.
var ErrTokenAmbiguous = errors.New("token label is not unique")

// ErrTokenReplaced is wrapped by the error of a connection attempt that found, under the
// configured label, a token with another serial number than the one pinned by
// Module.PinToken. No login is tried then, and the Module keeps retrying. It is also
// wrapped by the token fault of a connection whose slot reports a new serial number.
var ErrTokenReplaced = errors.New("token replaced")

// KeyRejected reports whether err is the token's rejection of a key object for the
// operation: CKR_MECHANISM_INVALID, CKR_KEY_TYPE_INCONSISTENT or
// CKR_KEY_FUNCTION_NOT_PERMITTED. An AES key that this package generated draws them when
// its object is damaged, as SoftHSM2 2.6.1 leaves an object file that it was killed while
// writing, or when the token lacks AES-GCM.
func KeyRejected(err error) bool {
	return hasReturnValue(err, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_KEY_TYPE_INCONSISTENT,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)
}

// hasReturnValue reports whether err wraps a PKCS#11 return value that is one of values.
func hasReturnValue(err error, values ...pkcs11.Error) bool {
	var rv pkcs11.Error
	return errors.As(err, &rv) && slices.Contains(values, rv)
}

// ckrAEADDecryptFailed is CKR_AEAD_DECRYPT_FAILED from PKCS#11 3.0, which miekg/pkcs11 v1.1.2
// does not define.
const ckrAEADDecryptFailed = pkcs11.Error(0x00000035)

// failure is the recovery a caller must perform after a PKCS#11 error.
type failure int

const (
	// failOther: return the error to the caller, the session and handles stay valid.
	failOther failure = iota
	// failHandle: cached object handles are stale, look the object up again.
	failHandle
	// failSession: the session is dead, drop it and open another one.
	failSession
	// failToken: the module, the token or the login is gone, reconnect.
	failToken
	// failPIN: the PIN was rejected, never retry.
	failPIN
)

// errLoginLost reports a new session that is not logged in, which happens after every session
// of the application was closed (C_CloseAllSessions ends the login state).
var errLoginLost = errors.New("session is not logged in")

// errTokenFault reports that C_GetTokenInfo failed on a slot that holds the token. SoftHSM2
// 2.6.1 gets into this state when its token directory disappears while the library is
// initialised (measured): C_GetTokenInfo then returns CKR_GENERAL_ERROR, C_FindObjects finds
// no object, even after the directory is back, and C_GetSessionInfo still succeeds. Only
// C_Finalize and C_Initialize read the directory again.
var errTokenFault = errors.New("token reports a fault")

// keyMissingError reports that the token has no object for a key version that this process
// generated or found before and did not destroy. It is read as a fault of the token, not as a
// deleted key, until a connection made after the miss still lacks the object.
type keyMissingError struct {
	ref KeyRef
}

func (e *keyMissingError) Error() string {
	return fmt.Sprintf("key object %s was found before and is now missing from the token", e.ref)
}

// classify maps err to the recovery it needs. Errors that are not PKCS#11 return codes are
// failOther, except errLoginLost, errTokenFault and keyMissingError.
func classify(err error) failure {
	if err == nil {
		return failOther
	}

	var missing *keyMissingError
	if errors.Is(err, errLoginLost) || errors.Is(err, errTokenFault) || errors.As(err, &missing) {
		return failToken
	}

	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return failOther
	}

	switch rv {
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return failHandle
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_OPERATION_ACTIVE:
		return failSession
	case pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_SLOT_ID_INVALID:
		return failToken
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE,
		pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_PIN_LOCKED:
		return failPIN
	}

	return failOther
}

// isDecryptFailure reports whether err from C_Decrypt with CKM_AES_GCM means that the tag did
// not verify.
//
// NOTE: SoftHSM2 2.6.1 returns CKR_GENERAL_ERROR from C_Decrypt when the GCM tag does not
// match (measured), not CKR_ENCRYPTED_DATA_INVALID, so CKR_GENERAL_ERROR from C_Decrypt is
// read as a failed authentication. A real internal failure of C_Decrypt is then reported as
// ErrDecrypt too.
func isDecryptFailure(err error) bool {
	return hasReturnValue(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID,
		pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, ckrAEADDecryptFailed, pkcs11.CKR_GENERAL_ERROR)
}
