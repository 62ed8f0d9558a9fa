package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// signingKey is a secret key with a pool of HMAC-SHA256 states keyed by it. A warm
// signingKey verifies a signature without allocating and without computing the HMAC key
// schedule again. hmac.New hashes the inner and outer key pads on every call, while a
// pooled state restores them from the copy crypto/hmac keeps after its first Reset.
//
// The pooled states are derived from the secret and are as sensitive as the secret. They
// live only as long as the signingKey, which Credentials keeps in the cache entry of the
// credential, so they are never shared between two secrets. They are never logged.
type signingKey struct {
	secret []byte
	states sync.Pool // of *macState
}

// macState is one HMAC state of a signingKey with the buffers of one verification.
type macState struct {
	mac hash.Hash
	// text is the string to sign, and sum the HMAC over it.
	text []byte
	sum  [sha256.Size]byte
}

func newSigningKey(secret []byte) *signingKey {
	return &signingKey{secret: secret}
}

// verify reports whether signature is the HMAC-SHA256 under k of the string to sign of
// date and digest (the SHA-256 of a canonical request). It compares in constant time
// and is safe for concurrent use.
func (k *signingKey) verify(date string, digest *[sha256.Size]byte, signature []byte) bool {
	st, _ := k.states.Get().(*macState)
	if st == nil {
		st = &macState{mac: hmac.New(sha256.New, k.secret), text: make([]byte, 0, 128)}
	}

	st.text = appendStringToSign(st.text[:0], date, digest)
	st.mac.Write(st.text)
	match := hmac.Equal(st.mac.Sum(st.sum[:0]), signature)

	// Return the state keyed and empty, so that nothing of this request stays in it.
	st.mac.Reset()
	clear(st.sum[:])
	k.states.Put(st)
	return match
}

// appendStringToSign appends the string to sign of date and the SHA-256 digest of a
// canonical request: the algorithm, the date and the hex digest, one per line.
func appendStringToSign(dst []byte, date string, digest *[sha256.Size]byte) []byte {
	dst = append(dst, Algorithm...)
	dst = append(dst, '\n')
	dst = append(dst, date...)
	dst = append(dst, '\n')
	return hex.AppendEncode(dst, digest[:])
}

// signingKeySource is a CredentialSource that keeps a signingKey per credential, so that
// the HMAC states of a credential are reused by its later requests. Credentials is one.
type signingKeySource interface {
	// lookupSigningKey is Lookup with the signing key in place of the secret.
	lookupSigningKey(ctx context.Context, accessKey string) (Principal, *signingKey, error)
}
