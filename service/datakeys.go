package service

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Limits of data keys, from the Huawei Cloud KMS API v1.0. create-datakey makes 8 to
// 8192 bits in whole bytes, and encrypt-datakey and decrypt-datakey take 1 to 1024 bytes.
const (
	MinDataKeyBits     = 8
	MaxDataKeyBits     = 8192
	DefaultDataKeyBits = 256
	MaxDataKeyBytes    = 1024
)

// DataKeyInput is a create-datakey or create-datakey-without-plaintext request.
type DataKeyInput struct {
	KeyRef string // key id or "alias/<key_alias>"
	// Bits is datakey_length, used when BitsSet, and it wins over Spec when both are
	// given. An explicit 0 is out of range, not a request for the default size.
	Bits    int
	BitsSet bool
	// Spec is the data key key_spec: AES_128, AES_256, HMAC_256, HMAC_384, HMAC_512, or
	// empty.
	Spec    string
	Binding Binding
}

// DataKeyOutput is a sealed data key and, for create-datakey, its plaintext.
type DataKeyOutput struct {
	KeyID   string
	Version uint32
	// Plaintext is the data key; nil for create-datakey-without-plaintext and
	// encrypt-datakey. Callers clear it after use.
	Plaintext []byte
	// Ciphertext is the binary ciphertext (see ParseCiphertext); the API sends it as hex.
	Ciphertext []byte
}

// dataKeySpecBits maps the data key key_spec values this service supports to bits.
var dataKeySpecBits = map[string]int{
	"AES_128":  128,
	"AES_256":  256,
	"HMAC_256": 256,
	"HMAC_384": 384,
	"HMAC_512": 512,
}

// DataKeyBits resolves datakey_length and key_spec into a size in bits.
func DataKeyBits(bits int, bitsSet bool, spec string) (int, error) {
	if bitsSet {
		if bits < MinDataKeyBits || bits > MaxDataKeyBits || bits%8 != 0 {
			return 0, Errorf(CodeInvalidDataKeyBits,
				"datakey_length must be a multiple of 8 from 8 to 8192 bits")
		}
		return bits, nil
	}

	if spec == "" {
		return DefaultDataKeyBits, nil
	}
	if b, ok := dataKeySpecBits[spec]; ok {
		return b, nil
	}
	return 0, Errorf(CodeInvalidParameter,
		"key_spec %q is not supported; use AES_128, AES_256, HMAC_256, HMAC_384 or HMAC_512", spec)
}

// CreateDataKey generates a data key in the token's RNG and seals it with the CMK.
// Without withPlaintext the plaintext is cleared before returning.
func (s *Service) CreateDataKey(ctx context.Context, p auth.Principal, in DataKeyInput, withPlaintext bool) (DataKeyOutput, error) {
	op := "create-datakey"
	if !withPlaintext {
		op = "create-datakey-without-plaintext"
	}

	bits, err := DataKeyBits(in.Bits, in.BitsSet, in.Spec)
	if err != nil {
		return DataKeyOutput{}, err
	}

	k, err := s.usableKeyFor(ctx, p, op, in.KeyRef)
	if err != nil {
		return DataKeyOutput{}, err
	}

	var dek []byte
	out, err := s.sealWith(ctx, k, FormatDataKey, bits/8, in.Binding,
		func(ref hsm.KeyRef, aad []byte) (hsm.Sealed, error) {
			var sealed hsm.Sealed
			var err error
			dek, sealed, err = s.token.SealRandom(ctx, ref, bits/8, aad)
			return sealed, err
		})
	if err != nil {
		clear(dek)
		return DataKeyOutput{}, err
	}

	if withPlaintext {
		out.Plaintext = dek
	} else {
		clear(dek)
	}
	return out, nil
}

// EncryptDataKeyInput is an encrypt-datakey request.
type EncryptDataKeyInput struct {
	KeyRef string
	// PlainText is the data key followed by its SHA-256 digest.
	PlainText []byte
	// DataKeyLen is datakey_plain_length: the length of the data key alone, in bytes.
	DataKeyLen int
	Binding    Binding
}

// EncryptDataKey checks the digest that follows the data key and seals the data key.
func (s *Service) EncryptDataKey(ctx context.Context, p auth.Principal, in EncryptDataKeyInput) (DataKeyOutput, error) {
	if in.DataKeyLen < 1 || in.DataKeyLen > MaxDataKeyBytes {
		return DataKeyOutput{}, Errorf(CodeInvalidPlainLength,
			"datakey_plain_length must be 1 to %d bytes", MaxDataKeyBytes)
	}
	if len(in.PlainText) != in.DataKeyLen+sha256.Size {
		return DataKeyOutput{}, Errorf(CodeInvalidPlainText,
			"plain_text must be the data key followed by its SHA-256 digest: %d bytes in all "+
				"for datakey_plain_length %d", in.DataKeyLen+sha256.Size, in.DataKeyLen)
	}

	dek, digest := in.PlainText[:in.DataKeyLen], in.PlainText[in.DataKeyLen:]
	sum := sha256.Sum256(dek)
	if subtle.ConstantTimeCompare(sum[:], digest) != 1 {
		return DataKeyOutput{}, Errorf(CodeDigestMismatch,
			"the SHA-256 digest in plain_text does not match the data key")
	}

	k, err := s.usableKeyFor(ctx, p, "encrypt-datakey", in.KeyRef)
	if err != nil {
		return DataKeyOutput{}, err
	}

	return s.seal(ctx, k, FormatDataKey, dek, in.Binding)
}

// DecryptDataKeyInput is a decrypt-datakey request.
type DecryptDataKeyInput struct {
	KeyRef     string
	Ciphertext []byte
	// DataKeyLen is datakey_cipher_length: the length of the plaintext data key, in bytes.
	DataKeyLen int
	Binding    Binding
}

// DecryptDataKey opens a data key sealed by CreateDataKey or EncryptDataKey. The caller
// clears the returned plaintext after use.
func (s *Service) DecryptDataKey(ctx context.Context, p auth.Principal, in DecryptDataKeyInput) (DataKeyOutput, error) {
	if in.DataKeyLen < 1 || in.DataKeyLen > MaxDataKeyBytes {
		return DataKeyOutput{}, Errorf(CodeInvalidCipherLength,
			"datakey_cipher_length must be 1 to %d bytes", MaxDataKeyBytes)
	}

	ct, err := ParseCiphertext(in.Ciphertext)
	if err != nil {
		return DataKeyOutput{}, err
	}
	if ct.Format != FormatDataKey {
		return DataKeyOutput{}, errCipherText("cipher_text is not a data key ciphertext")
	}
	if ct.PlaintextLen() != in.DataKeyLen {
		return DataKeyOutput{}, Errorf(CodeInvalidCipherLength,
			"datakey_cipher_length does not match the length of the data key in cipher_text")
	}

	k, err := s.usableKeyFor(ctx, p, "decrypt-datakey", in.KeyRef)
	if err != nil {
		return DataKeyOutput{}, err
	}

	dek, err := s.open(ctx, k, ct, in.Binding)
	if err != nil {
		return DataKeyOutput{}, err
	}
	return DataKeyOutput{KeyID: k.ID, Version: ct.Version, Plaintext: dek}, nil
}

// usableKeyFor looks the key up, authorizes op on it and checks it is enabled.
func (s *Service) usableKeyFor(ctx context.Context, p auth.Principal, op, keyRef string) (store.Key, error) {
	k, err := s.lookupKey(ctx, p.ProjectID, keyRef)
	if err != nil {
		return store.Key{}, err
	}
	if err := s.authorize(ctx, p, op, &k); err != nil {
		return store.Key{}, err
	}
	if err := usableKey(k); err != nil {
		return store.Key{}, err
	}
	return k, nil
}

// seal encrypts plaintext under the key's current version and returns the ciphertext.
func (s *Service) seal(ctx context.Context, k store.Key, format byte, plaintext []byte, b Binding) (DataKeyOutput, error) {
	return s.sealWith(ctx, k, format, len(plaintext), b,
		func(ref hsm.KeyRef, aad []byte) (hsm.Sealed, error) {
			return s.token.Seal(ctx, ref, plaintext, aad)
		})
}

// sealWith builds the header and the AAD of a plaintext of size bytes, seals it with
// tokenSeal, counts the seal and returns the ciphertext.
func (s *Service) sealWith(
	ctx context.Context,
	k store.Key,
	format byte,
	size int,
	b Binding,
	tokenSeal func(ref hsm.KeyRef, aad []byte) (hsm.Sealed, error),
) (DataKeyOutput, error) {
	ref := hsm.KeyRef{KeyID: k.ID, Version: k.CurrentVersion}

	out := make([]byte, 0, headerFixedSize+hsm.GCMIVSize+size+hsm.GCMTagSize)
	out = appendHeader(out, format, ref, hsm.GCMIVSize)
	aad := EncodeAAD(make([]byte, 0, 64+len(b.AAD)), out, b)

	sealed, err := tokenSeal(ref, aad)
	if err != nil {
		if errors.Is(err, hsm.ErrKeyNotFound) && !errors.Is(err, hsm.ErrUnavailable) {
			return DataKeyOutput{}, s.missingObject(ctx, "seal", ref, false, err)
		}
		return DataKeyOutput{}, tokenError("seal", err)
	}
	s.countSeal(ctx, k, ref)
	if len(sealed.IV) != hsm.GCMIVSize {
		return DataKeyOutput{}, &Error{Code: CodeInternal, Message: "internal error",
			Err: errors.New("the token returned an IV that is not 12 bytes")}
	}

	out = append(out, sealed.IV...)
	out = append(out, sealed.Ciphertext...)
	return DataKeyOutput{KeyID: k.ID, Version: ref.Version, Ciphertext: out}, nil
}

// open authenticates and decrypts a parsed ciphertext that must belong to key k.
func (s *Service) open(ctx context.Context, k store.Key, ct Ciphertext, b Binding) ([]byte, error) {
	if ct.KeyID != k.ID {
		return nil, errCipherText("cipher_text was not made with this key")
	}
	if ct.Version > k.CurrentVersion {
		// k may come from the key cache, from before another replica rotated the key.
		fresh, err := s.freshKey(ctx, k.ProjectID, k.ID)
		if err != nil {
			return nil, err
		}
		s.dropCached(k.ProjectID, k.ID)
		if ct.Version > fresh.CurrentVersion {
			return nil, errCipherText("cipher_text names a key version that does not exist")
		}
	}

	aad := EncodeAAD(make([]byte, 0, 64+len(b.AAD)), ct.Header, b)
	ref := hsm.KeyRef{KeyID: k.ID, Version: ct.Version}

	pt, err := s.token.Open(ctx, ref, ct.IV, ct.Sealed, aad)
	switch {
	case err == nil:
		return pt, nil
	case errors.Is(err, hsm.ErrUnavailable):
		// First, because a token fault can hide key objects: the caller retries.
		return nil, tokenError("open", err)
	case errors.Is(err, hsm.ErrDecrypt):
		return nil, Errorf(CodeDecryptFailed, "cipher_text failed authentication: it was changed, "+
			"or the encryption_context or additional_authenticated_data differs from encryption")
	case errors.Is(err, hsm.ErrKeyNotFound):
		// The token layer reports a missing object of a key it used before only after a
		// reconnect, so the store names a key version that this token does not hold.
		return nil, s.missingObject(ctx, "open", ref, true, err)
	default:
		return nil, tokenError("open", err)
	}
}
