package hsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// errNoTokenIV means Config.TokenGeneratesIV is set but the token left the IV buffer zeroed.
var errNoTokenIV = errors.New("token did not choose a GCM IV: turn off TokenGeneratesIV " +
	"(kmsd --hsm-generates-iv=false) for this token")

// Seal encrypts plaintext with AES-256-GCM under ref inside the token (C_Encrypt with
// CKM_AES_GCM). The IV is 12 bytes from C_GenerateRandom, or chosen by the token when
// Config.TokenGeneratesIV is set, and the tag is 16 bytes.
func (m *Module) Seal(ctx context.Context, ref KeyRef, plaintext, aad []byte) (Sealed, error) {
	var sealed Sealed
	err := m.do(ctx, false, func(c *conn, s *session) error {
		key, err := c.sessionKey(s, ref)
		if err != nil {
			return err
		}

		iv := make([]byte, GCMIVSize)
		random := iv
		if m.cfg.TokenGeneratesIV {
			random = nil
		}
		sealed, err = m.sealInSession(c, s, key, random, iv, plaintext, aad)
		return err
	})
	if err != nil {
		return Sealed{}, fmt.Errorf("seal with key %s: %w", ref, err)
	}

	return sealed, nil
}

// SealRandom generates n bytes with C_GenerateRandom and seals them under ref as Seal
// does, in the same session. One C_GenerateRandom call returns the plaintext and, unless
// Config.TokenGeneratesIV is set, the IV after it.
func (m *Module) SealRandom(ctx context.Context, ref KeyRef, n int, aad []byte) ([]byte, Sealed, error) {
	if n <= 0 {
		return nil, Sealed{}, fmt.Errorf("seal random bytes with key %s: length %d is not positive", ref, n)
	}

	var plaintext []byte
	var sealed Sealed
	err := m.do(ctx, false, func(c *conn, s *session) error {
		key, err := c.sessionKey(s, ref)
		if err != nil {
			return err
		}

		size := n
		if !m.cfg.TokenGeneratesIV {
			size += GCMIVSize
		}
		random := make([]byte, size)
		iv := random[n:]
		if m.cfg.TokenGeneratesIV {
			iv = make([]byte, GCMIVSize)
		}
		if sealed, err = m.sealInSession(c, s, key, random, iv, random[:n], aad); err != nil {
			clear(random)
			return err
		}

		// The capacity stops at n, so appending to the plaintext cannot overwrite the IV.
		plaintext = random[:n:n]
		return nil
	})
	if err != nil {
		return nil, Sealed{}, fmt.Errorf("seal random bytes with key %s: %w", ref, err)
	}

	return plaintext, sealed, nil
}

// sealInSession fills random from C_GenerateRandom unless it is empty, encrypts plaintext
// under iv (random may hold both), and with Config.TokenGeneratesIV checks that the
// token chose an IV. It takes one cgo call when the library's function list could be
// read (gcmCalls) and goes through miekg/pkcs11 otherwise.
func (m *Module) sealInSession(
	c *conn, s *session, key pkcs11.ObjectHandle, random, iv, plaintext, aad []byte,
) (Sealed, error) {
	var sealed Sealed
	if c.gcm != nil {
		ciphertext, err := c.gcm.seal(s.handle, key, random, iv, plaintext, aad)
		if err != nil {
			return Sealed{}, err
		}
		sealed = Sealed{IV: iv, Ciphertext: ciphertext}
	} else {
		if len(random) > 0 {
			filled, err := c.p11.GenerateRandom(s.handle, len(random))
			if err != nil {
				return Sealed{}, fmt.Errorf("C_GenerateRandom: %w", err)
			}
			copy(random, filled)
			clear(filled)
		}
		var err error
		if sealed, err = encryptGCM(c.p11, s.handle, key, iv, plaintext, aad); err != nil {
			return Sealed{}, err
		}
	}

	if m.cfg.TokenGeneratesIV {
		noIV := bytes.Equal(sealed.IV, make([]byte, GCMIVSize))
		m.noTokenIV.Store(noIV)
		if noIV {
			return Sealed{}, errNoTokenIV
		}
	}
	return sealed, nil
}

// decrypt runs one C_DecryptInit and C_Decrypt with CKM_AES_GCM, as encrypt does. A tag
// that does not verify returns ErrDecrypt.
func (c *conn) decrypt(s *session, key pkcs11.ObjectHandle, iv, ciphertext, aad []byte) (
	[]byte, error) {
	if c.gcm == nil {
		return decryptGCM(c.p11, s.handle, key, iv, ciphertext, aad)
	}
	return c.gcm.decrypt(s.handle, key, iv, ciphertext, aad)
}

// encryptGCM runs one C_EncryptInit and C_Encrypt. The IV is read back from CK_GCM_PARAMS
// because tokens that choose the IV write it there.
func encryptGCM(
	p11 *pkcs11.Ctx, s pkcs11.SessionHandle, key pkcs11.ObjectHandle, iv, plaintext, aad []byte,
) (Sealed, error) {
	params := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
	defer params.Free()

	if err := p11.EncryptInit(s, gcmMechanism(params), key); err != nil {
		return Sealed{}, fmt.Errorf("C_EncryptInit: %w", err)
	}

	ciphertext, err := p11.Encrypt(s, plaintext)
	if err != nil {
		return Sealed{}, fmt.Errorf("C_Encrypt: %w", err)
	}

	used := params.IV()
	if len(used) != GCMIVSize {
		return Sealed{}, fmt.Errorf("token returned a %d-byte GCM IV, expected %d", len(used), GCMIVSize)
	}

	return Sealed{IV: used, Ciphertext: ciphertext}, nil
}

// Open decrypts and authenticates ciphertext under ref inside the token (C_Decrypt with
// CKM_AES_GCM). An IV of the wrong length, a ciphertext shorter than the tag or a tag that
// does not verify returns an error wrapping ErrDecrypt.
func (m *Module) Open(ctx context.Context, ref KeyRef, iv, ciphertext, aad []byte) ([]byte, error) {
	if len(iv) != GCMIVSize || len(ciphertext) < GCMTagSize {
		return nil, fmt.Errorf("open with key %s: %w", ref, ErrDecrypt)
	}

	var plaintext []byte
	err := m.do(ctx, false, func(c *conn, s *session) error {
		key, err := c.sessionKey(s, ref)
		if err != nil {
			return err
		}

		plaintext, err = c.decrypt(s, key, iv, ciphertext, aad)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open with key %s: %w", ref, err)
	}

	return plaintext, nil
}

// decryptGCM runs one C_DecryptInit and C_Decrypt.
func decryptGCM(
	p11 *pkcs11.Ctx, s pkcs11.SessionHandle, key pkcs11.ObjectHandle, iv, ciphertext, aad []byte,
) ([]byte, error) {
	params := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
	defer params.Free()

	if err := p11.DecryptInit(s, gcmMechanism(params), key); err != nil {
		return nil, fmt.Errorf("C_DecryptInit: %w", err)
	}

	plaintext, err := p11.Decrypt(s, ciphertext)
	if err != nil {
		if isDecryptFailure(err) {
			return nil, ErrDecrypt
		}
		return nil, fmt.Errorf("C_Decrypt: %w", err)
	}

	return plaintext, nil
}

// Random returns n bytes from C_GenerateRandom.
func (m *Module) Random(ctx context.Context, n int) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("random: length %d is negative", n)
	}
	if n == 0 {
		return []byte{}, nil
	}

	var out []byte
	err := m.do(ctx, false, func(c *conn, s *session) error {
		var err error
		if out, err = c.p11.GenerateRandom(s.handle, n); err != nil {
			return fmt.Errorf("C_GenerateRandom: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}

	return out, nil
}
