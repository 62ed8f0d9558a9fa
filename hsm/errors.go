package hsm

import (
	"errors"

	"github.com/miekg/pkcs11"
)

// ErrPINIncorrect means the token rejected the user PIN (CKR_PIN_INCORRECT, CKR_PIN_INVALID,
// CKR_PIN_LEN_RANGE, CKR_PIN_EXPIRED or CKR_PIN_LOCKED). Open returns it so that the daemon can
// exit with a clear message, and the Module never retries a rejected PIN because tokens lock a
// PIN after a few failed logins.
var ErrPINIncorrect = errors.New("token rejected the user PIN")

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

// classify maps err to the recovery it needs. Errors that are not PKCS#11 return codes are
// failOther, except errLoginLost.
func classify(err error) failure {
	if err == nil {
		return failOther
	}

	if errors.Is(err, errLoginLost) {
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
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}

	switch rv {
	case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		ckrAEADDecryptFailed, pkcs11.CKR_GENERAL_ERROR:
		return true
	}

	return false
}
