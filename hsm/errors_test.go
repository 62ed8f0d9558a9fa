package hsm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want failure
	}{
		{"nil", nil, failOther},
		{"plain error", errors.New("other"), failOther},
		{"key not found", ErrKeyNotFound, failOther},
		{"object handle invalid", pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID), failHandle},
		{"wrapped key handle invalid", fmt.Errorf("C_EncryptInit: %w", pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID)), failHandle},
		{"session handle invalid", pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), failSession},
		{"session closed", pkcs11.Error(pkcs11.CKR_SESSION_CLOSED), failSession},
		{"user not logged in", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN), failToken},
		{"device removed", pkcs11.Error(pkcs11.CKR_DEVICE_REMOVED), failToken},
		{"token not present", pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT), failToken},
		{"not initialised", pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED), failToken},
		{"login lost", fmt.Errorf("open: %w", errLoginLost), failToken},
		{"token fault", fmt.Errorf("look up: %w", errTokenFault), failToken},
		{"found key missing", fmt.Errorf("seal: %w", &keyMissingError{ref: KeyRef{KeyID: "k", Version: 1}}), failToken},
		{"pin incorrect", pkcs11.Error(pkcs11.CKR_PIN_INCORRECT), failPIN},
		{"pin locked", pkcs11.Error(pkcs11.CKR_PIN_LOCKED), failPIN},
		{"mechanism invalid", pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID), failOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.err); got != tt.want {
				t.Errorf("classify(%v) = %d, expected %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestIsDecryptFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"SoftHSM2 tag mismatch", pkcs11.Error(pkcs11.CKR_GENERAL_ERROR), true},
		{"encrypted data invalid", pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_INVALID), true},
		{"AEAD decrypt failed", ckrAEADDecryptFailed, true},
		{"encrypted data length", pkcs11.Error(pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE), true},
		{"session handle invalid", pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), false},
		{"plain error", errors.New("other"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isDecryptFailure(tt.err); got != tt.want {
				t.Errorf("isDecryptFailure(%v) = %v, expected %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestKeyRejected(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"mechanism invalid, wrapped", fmt.Errorf("seal: %w",
			pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)), true},
		{"key type inconsistent", pkcs11.Error(pkcs11.CKR_KEY_TYPE_INCONSISTENT), true},
		{"key function not permitted", pkcs11.Error(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED), true},
		{"device error", pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), false},
		{"not a PKCS#11 error", errors.New("seal failed"), false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeyRejected(tc.err); got != tc.want {
				t.Errorf("KeyRejected(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
