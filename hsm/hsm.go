// Package hsm is the token layer: every use of the PKCS#11 token goes through the Token
// interface defined here, so that no other package handles a PKCS#11 object handle
// and tests can inject token faults with a fake.
//
// # Key custody
//
// Customer master keys (CMKs) are AES-256 secret keys generated inside the token as
// token objects that are sensitive, private and not extractable. No method returns key
// material: callers pass plaintext in and get ciphertext back, or the reverse.
//
// # Concurrency
//
// Implementations of Token are safe for concurrent use by multiple goroutines.
package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// GCM parameters used for every seal. The IV is 96 bits as NIST SP 800-38D recommends
// for random IVs, and the tag is the full 128 bits.
const (
	GCMIVSize  = 12
	GCMTagSize = 16
)

// Sentinel errors that callers act on. Implementations wrap them with %w, so test them
// with errors.Is.
var (
	// ErrKeyNotFound means the token holds no object for the requested key version.
	ErrKeyNotFound = errors.New("key object not found in token")

	// ErrKeyExists means a key object with the same CKA_ID is already in the token.
	ErrKeyExists = errors.New("key object already exists in token")

	// ErrDecrypt means authenticated decryption failed: the ciphertext, IV, tag or AAD
	// does not match what was sealed. It never carries detail about which part failed.
	ErrDecrypt = errors.New("authenticated decryption failed")

	// ErrUnavailable means the token cannot be used right now (module not loaded, token
	// missing, login failed, sessions lost). The call may succeed when retried later.
	ErrUnavailable = errors.New("token unavailable")
)

// KeyRef names one version of a key inside the token. The pair is encoded into the
// object's CKA_ID and CKA_LABEL, so a key version can be found again after a restart or
// by another process sharing the token.
type KeyRef struct {
	// KeyID is the key's 36-character id, or a name starting with "system-" for keys
	// the service keeps for itself (the credential sealing key, the audit signing key).
	KeyID string
	// Version counts from 1; each rotation adds one.
	Version uint32
}

// objectIDPrefix starts the CKA_ID of every object this service creates, so that a
// token shared with other applications can be listed without touching their objects.
const objectIDPrefix = "kms:"

// ObjectID returns the CKA_ID value for the key version: "kms:<key id>:<version>".
func (r KeyRef) ObjectID() []byte {
	return []byte(objectIDPrefix + r.KeyID + ":" + strconv.FormatUint(uint64(r.Version), 10))
}

// String returns the same text as ObjectID; it is also used as the CKA_LABEL.
func (r KeyRef) String() string {
	return string(r.ObjectID())
}

// ParseObjectID is the inverse of KeyRef.ObjectID.
func ParseObjectID(id []byte) (KeyRef, error) {
	s, ok := strings.CutPrefix(string(id), objectIDPrefix)
	if !ok {
		return KeyRef{}, fmt.Errorf("object id %q does not start with %q", id, objectIDPrefix)
	}

	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return KeyRef{}, fmt.Errorf("object id %q has no version", id)
	}

	v, err := strconv.ParseUint(s[i+1:], 10, 32)
	if err != nil || v == 0 {
		return KeyRef{}, fmt.Errorf("object id %q has an invalid version", id)
	}

	return KeyRef{KeyID: s[:i], Version: uint32(v)}, nil
}

// Sealed is the output of Token.Seal.
type Sealed struct {
	// IV is the GCM IV. It is chosen by the service from the token RNG, or by the token
	// itself on HSMs that generate GCM IVs (FIPS mode). Either way it must be stored with
	// the ciphertext.
	IV []byte
	// Ciphertext is the encrypted data followed by the 16-byte GCM tag.
	Ciphertext []byte
}

// Token is the narrow interface over a PKCS#11 token that the service uses.
//
// Every method returns an error wrapping ErrUnavailable when the token cannot be
// reached, so callers can respond "retry later" rather than "internal error".
type Token interface {
	// GenerateKey creates an AES-256 token object for ref inside the token. It returns
	// an error wrapping ErrKeyExists when an object with the same CKA_ID exists.
	GenerateKey(ctx context.Context, ref KeyRef) error

	// DestroyKey destroys the token object of ref. Destroying a missing object returns
	// an error wrapping ErrKeyNotFound.
	DestroyKey(ctx context.Context, ref KeyRef) error

	// KeyExists reports whether the token holds an object for ref.
	KeyExists(ctx context.Context, ref KeyRef) (bool, error)

	// ListKeys returns every secret key object that this service created (CKA_ID starts
	// with "kms:"), in no particular order.
	ListKeys(ctx context.Context) ([]KeyRef, error)

	// Seal encrypts plaintext with AES-256-GCM under ref inside the token, binding aad.
	Seal(ctx context.Context, ref KeyRef, plaintext, aad []byte) (Sealed, error)

	// SealRandom generates n random bytes in the token and seals them under ref like
	// Seal, in one session: a data key made and encrypted with one trip to the session
	// pool. It returns the plaintext and the sealed form.
	SealRandom(ctx context.Context, ref KeyRef, n int, aad []byte) ([]byte, Sealed, error)

	// Open decrypts and authenticates ciphertext (data followed by the tag) under ref.
	// A mismatch of any byte of iv, ciphertext or aad returns an error wrapping
	// ErrDecrypt.
	Open(ctx context.Context, ref KeyRef, iv, ciphertext, aad []byte) ([]byte, error)

	// Random returns n bytes from the token's random number generator
	// (C_GenerateRandom).
	Random(ctx context.Context, n int) ([]byte, error)

	// GenerateSigningKey creates an ECDSA P-256 key pair in the token for ref; the
	// private key is sensitive and not extractable. It returns an error wrapping
	// ErrKeyExists when the pair exists.
	GenerateSigningKey(ctx context.Context, ref KeyRef) error

	// Sign signs digest (a SHA-256 hash) with the private key of ref and returns an
	// ASN.1 DER ECDSA signature.
	Sign(ctx context.Context, ref KeyRef, digest []byte) ([]byte, error)

	// PublicKey returns the public half of the signing key pair of ref.
	PublicKey(ctx context.Context, ref KeyRef) (crypto.PublicKey, error)

	// Ping checks that the token is usable: the module is loaded, the token is present
	// and a logged-in session can be opened.
	Ping(ctx context.Context) error

	// Close releases every session and finalises the module. Calls after Close return
	// errors wrapping ErrUnavailable.
	Close() error
}
