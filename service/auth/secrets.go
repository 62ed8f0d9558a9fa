package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// Alphabets of generated access and secret keys.
const (
	upperAlphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	alphanumeric      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// secretAAD binds a sealed secret to its access key.
func secretAAD(accessKey string) []byte {
	return []byte("credential:" + accessKey)
}

// seal encrypts secret under SealingKey and returns IV followed by ciphertext and tag,
// the form stored in store.Credential.SealedSecret.
func (c *Credentials) seal(ctx context.Context, accessKey string, secret []byte) ([]byte, error) {
	if err := c.ensureSealingKey(ctx); err != nil {
		return nil, err
	}

	sealed, err := c.token.Seal(ctx, SealingKey, secret, secretAAD(accessKey))
	if hsm.KeyRejected(err) {
		sealed, err = c.replaceUnusedSealingKey(ctx, err, func() (hsm.Sealed, error) {
			return c.token.Seal(ctx, SealingKey, secret, secretAAD(accessKey))
		})
	}
	if err != nil {
		return nil, fmt.Errorf("seal secret key of %s: %w", accessKey, err)
	}
	if len(sealed.IV) != hsm.GCMIVSize {
		return nil, fmt.Errorf("seal secret key of %s: token returned a %d-byte IV, expected %d",
			accessKey, len(sealed.IV), hsm.GCMIVSize)
	}

	out := make([]byte, 0, len(sealed.IV)+len(sealed.Ciphertext))
	out = append(out, sealed.IV...)
	return append(out, sealed.Ciphertext...), nil
}

// open reverses seal.
func (c *Credentials) open(ctx context.Context, accessKey string, sealed []byte) ([]byte, error) {
	return openSealed(ctx, c.token, accessKey, sealed)
}

// openSealed opens sealed, the stored form of accessKey's secret key, with token's
// SealingKey.
func openSealed(
	ctx context.Context, token hsm.Token, accessKey string, sealed []byte,
) ([]byte, error) {
	if len(sealed) < hsm.GCMIVSize+hsm.GCMTagSize {
		return nil, fmt.Errorf("open secret key of %s: sealed value is %d bytes, shorter than IV and tag",
			accessKey, len(sealed))
	}

	iv, ciphertext := sealed[:hsm.GCMIVSize], sealed[hsm.GCMIVSize:]
	secret, err := token.Open(ctx, SealingKey, iv, ciphertext, secretAAD(accessKey))
	if err != nil {
		return nil, fmt.Errorf("open secret key of %s: %w", accessKey, err)
	}
	return secret, nil
}

// ensureSealingKey generates SealingKey in the token unless this instance has seen it
// exist. A key that another process generated first is fine.
func (c *Credentials) ensureSealingKey(ctx context.Context) error {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()

	if c.keyReady {
		return nil
	}

	err := c.token.GenerateKey(ctx, SealingKey)
	if err != nil && !errors.Is(err, hsm.ErrKeyExists) {
		return fmt.Errorf("generate credential sealing key %s: %w", SealingKey, err)
	}
	if err == nil {
		c.logger.Info("credential sealing key generated", "key", SealingKey.String())
	}

	c.keyReady = true
	return nil
}

// replaceUnusedSealingKey destroys and generates SealingKey again after the token
// rejected it with sealErr, then runs seal once more. It does so only while the store
// holds no credential, so that no sealed secret depends on the key. Otherwise, or when
// the store cannot be read, it returns sealErr. A kill while SoftHSM2 writes the key's
// object file during a first start leaves such a key.
func (c *Credentials) replaceUnusedSealingKey(
	ctx context.Context, sealErr error, seal func() (hsm.Sealed, error),
) (hsm.Sealed, error) {
	c.keyMu.Lock()
	defer c.keyMu.Unlock()

	rows, err := c.store.ListCredentials(ctx)
	if err != nil || len(rows) > 0 {
		return hsm.Sealed{}, sealErr
	}

	c.logger.Warn("the token rejects the credential sealing key, which seals no stored "+
		"credential; generating it again", "key", SealingKey.String(), "error", sealErr)
	if err := c.token.DestroyKey(ctx, SealingKey); err != nil {
		return hsm.Sealed{}, fmt.Errorf("destroy rejected sealing key %s: %w", SealingKey, err)
	}
	if err := c.token.GenerateKey(ctx, SealingKey); err != nil {
		return hsm.Sealed{}, fmt.Errorf("generate credential sealing key %s: %w", SealingKey, err)
	}
	return seal()
}

// randomString returns n characters drawn uniformly from alphabet with the token RNG.
// Bytes at or above the largest multiple of len(alphabet) are rejected so that no
// character is more likely than another.
func (c *Credentials) randomString(ctx context.Context, alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	for len(out) < n {
		random, err := c.token.Random(ctx, 2*n)
		if err != nil {
			return "", fmt.Errorf("read token random: %w", err)
		}

		for _, b := range random {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// randomHex returns 2*n lower-case hex digits from n bytes of the token RNG.
func (c *Credentials) randomHex(ctx context.Context, n int) (string, error) {
	random, err := c.token.Random(ctx, n)
	if err != nil {
		return "", fmt.Errorf("read token random: %w", err)
	}
	return hex.EncodeToString(random), nil
}

// ErrSealingKeyMismatch means that the token's SealingKey does not open a sealed secret
// of the store: the token holds another key under that reference, such as the sealing key
// of another store's token.
var ErrSealingKeyMismatch = errors.New("the token's credential sealing key did not seal " +
	"the store's credentials")

// CheckSealingKey opens the sealed secret of row with token's SealingKey and discards it.
// It returns nil when the secret opens, an error wrapping ErrSealingKeyMismatch when the
// key does not authenticate it, and the token's other errors as they are.
func CheckSealingKey(ctx context.Context, token hsm.Token, row store.Credential) error {
	secret, err := openSealed(ctx, token, row.AccessKey, row.SealedSecret)
	if errors.Is(err, hsm.ErrDecrypt) {
		return fmt.Errorf("%w: %w", ErrSealingKeyMismatch, err)
	}
	clear(secret)
	return err
}
