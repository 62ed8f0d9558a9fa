package hsm

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

// GenerateSigningKey creates the ECDSA P-256 key pair of ref in the token. Calls are
// serialised with GenerateKey.
func (m *Module) GenerateSigningKey(ctx context.Context, ref KeyRef) error {
	public, private, err := signingKeyTemplates(ref)
	if err != nil {
		return err
	}

	m.genMu.Lock()
	defer m.genMu.Unlock()

	err = m.do(ctx, true, func(c *conn, s *session) error {
		pairs, err := c.c11.FindKeyPairs(ref.ObjectID(), nil)
		if err != nil {
			return fmt.Errorf("find key pair: %w", err)
		}
		if len(pairs) > 0 {
			return fmt.Errorf("%w: %s", ErrKeyExists, ref)
		}
		if err := c.missingKey(ref, "signing key "); !errors.Is(err, ErrKeyNotFound) {
			return err
		}

		signer, err := c.c11.GenerateECDSAKeyPairWithAttributes(public, private, elliptic.P256())
		if err != nil {
			return fmt.Errorf("C_GenerateKeyPair: %w", err)
		}

		c.storeSigner(ref, signer)
		return nil
	})
	if err != nil {
		return fmt.Errorf("generate signing key %s: %w", ref, err)
	}

	m.log.Info("signing key generated", "key_ref", ref.String())
	return nil
}

// Sign signs digest, a SHA-256 hash, with the private key of ref and returns an ASN.1 DER
// ECDSA signature.
func (m *Module) Sign(ctx context.Context, ref KeyRef, digest []byte) ([]byte, error) {
	if len(digest) != crypto.SHA256.Size() {
		return nil, fmt.Errorf("sign with key %s: digest is %d bytes, expected %d",
			ref, len(digest), crypto.SHA256.Size())
	}

	var signature []byte
	err := m.do(ctx, true, func(c *conn, s *session) error {
		signer, err := c.signer(ref)
		if err != nil {
			return err
		}

		signature, err = signer.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return fmt.Errorf("C_Sign: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", ref, err)
	}

	return signature, nil
}

// PublicKey returns the *ecdsa.PublicKey of the signing key pair of ref.
func (m *Module) PublicKey(ctx context.Context, ref KeyRef) (crypto.PublicKey, error) {
	var public crypto.PublicKey
	err := m.do(ctx, true, func(c *conn, s *session) error {
		signer, err := c.signer(ref)
		if err != nil {
			return err
		}

		public = signer.Public()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read public key %s: %w", ref, err)
	}

	return public, nil
}

// signer returns the cached crypto11 signer of ref, finding the pair by CKA_ID on a miss.
func (c *conn) signer(ref KeyRef) (crypto11.Signer, error) {
	c.signersMu.Lock()
	signer, ok := c.signers[ref]
	c.signersMu.Unlock()
	if ok {
		return signer, nil
	}

	pairs, err := c.c11.FindKeyPairs(ref.ObjectID(), nil)
	if err != nil {
		return nil, fmt.Errorf("find key pair: %w", err)
	}
	if len(pairs) == 0 {
		return nil, c.missingKey(ref, "signing key ")
	}

	c.storeSigner(ref, pairs[0])
	return pairs[0], nil
}

// storeSigner caches signer and records ref as found.
func (c *conn) storeSigner(ref KeyRef, signer crypto11.Signer) {
	c.signersMu.Lock()
	c.signers[ref] = signer
	c.signersMu.Unlock()
	c.found.add(ref)
}
