package service

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/hsmkms/kms/service/internal/jsonscan"
)

// aadDomain starts every AAD this service builds, so that an AAD of this service can
// never equal an AAD built by another scheme for the same key.
const aadDomain = "hsmkms-aad-v1"

// Limits of the caller-supplied AAD inputs, from the Huawei Cloud KMS API v1.0:
// encryption_context is at most 8192 characters of JSON, additional_authenticated_data
// at most 128 bytes.
const (
	MaxEncryptionContextChars = 8192
	MaxAADBytes               = 128
)

// EncryptionContext is the legacy encryption_context: string keys to string values. A
// nil and an empty context are the same context.
type EncryptionContext map[string]string

// ParseEncryptionContext decodes the raw JSON of an encryption_context field. It accepts
// null, an object of string values, and rejects duplicate keys, non-string values,
// objects longer than MaxEncryptionContextChars characters, and text that is not valid
// UTF-8 or has an unpaired surrogate escape. Decoding would replace such text with
// U+FFFD, so two different contexts would bind the same ciphertext.
func ParseEncryptionContext(raw []byte) (EncryptionContext, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if !jsonscan.ValidText(raw) {
		return nil, Errorf(CodeInvalidContext,
			"encryption_context is not valid UTF-8 or has an unpaired surrogate escape")
	}

	if utf8.RuneCount(raw) > MaxEncryptionContextChars {
		return nil, Errorf(CodeInvalidContext,
			"encryption_context is longer than %d characters", MaxEncryptionContextChars)
	}

	ec := EncryptionContext{}
	err := jsonscan.Object(raw, func(key string, value []byte) error {
		if value[0] != '"' {
			return Errorf(CodeInvalidContext, "encryption_context values must be strings (key %q)", key)
		}
		if _, dup := ec[key]; dup {
			return Errorf(CodeInvalidContext, "encryption_context repeats the key %q", key)
		}
		v, err := jsonscan.String(value)
		ec[key] = v
		return err
	})
	if errors.Is(err, jsonscan.ErrSyntax) {
		return nil, Errorf(CodeInvalidContext, "encryption_context must be a JSON object of strings")
	}
	if err != nil {
		return nil, err
	}
	return ec, nil
}

// ValidateAAD checks additional_authenticated_data against MaxAADBytes.
func ValidateAAD(aad string) error {
	if len(aad) > MaxAADBytes {
		return Errorf(CodeInvalidParameter,
			"additional_authenticated_data is longer than %d bytes", MaxAADBytes)
	}
	return nil
}

// Binding is what a caller binds to a ciphertext: the legacy encryption_context, the
// current additional_authenticated_data, or both. The same binding must be given to
// decrypt as was given to encrypt.
type Binding struct {
	Context EncryptionContext
	AAD     string
}

// appendLengthPrefixed appends the 4-byte big-endian length of b, then b.
func appendLengthPrefixed(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// EncodeAAD returns the GCM AAD for a ciphertext header and a binding:
//
//	"hsmkms-aad-v1" || len32(header) || header
//	|| 0x01 || count32 || for each context pair in byte order of keys: len32(k) k len32(v) v
//	|| 0x02 || len32(aad) || aad
//
// Every variable part is length-prefixed, so no two different inputs give the same
// bytes, and the context is sorted, so the order of its keys in the request does not
// matter. An absent and an empty context encode the same, as do an absent and an empty
// additional_authenticated_data.
func EncodeAAD(dst, header []byte, b Binding) []byte {
	dst = append(dst, aadDomain...)
	dst = appendLengthPrefixed(dst, header)

	keys := make([]string, 0, len(b.Context))
	for k := range b.Context {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	dst = append(dst, 0x01)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		dst = appendLengthPrefixed(dst, []byte(k))
		dst = appendLengthPrefixed(dst, []byte(b.Context[k]))
	}

	dst = append(dst, 0x02)
	return appendLengthPrefixed(dst, []byte(b.AAD))
}

// String returns a short description for logs: the number of pairs, never their values.
func (ec EncryptionContext) String() string {
	return fmt.Sprintf("encryption context with %d pairs", len(ec))
}
