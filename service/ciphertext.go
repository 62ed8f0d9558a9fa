package service

import (
	"encoding/binary"

	"github.com/hsmkms/kms/hsm"
)

// Ciphertext formats. The first byte of every ciphertext names its format, so that a
// later format can be added while every earlier ciphertext keeps decrypting.
const (
	// FormatDataKey is a data key sealed by create-datakey or encrypt-datakey; it
	// travels as upper-case hex.
	FormatDataKey byte = 0x01
	// FormatData is data sealed by encrypt-data; it travels as base64.
	FormatData byte = 0x02
)

// Ciphertext layout, offsets in bytes:
//
//	0       format (FormatDataKey or FormatData)
//	1..36   key id, 36 ASCII characters
//	37..40  key version, big-endian uint32
//	41      IV length n (1 to MaxIVSize; 12 when the service chooses the IV)
//	42..    IV (n bytes), then the encrypted data, then the 16-byte GCM tag
//
// Bytes 0 to 41 are the header. The header is bound into the GCM AAD (EncodeAAD), so
// changing the format, key id or version of a ciphertext makes it fail authentication;
// GCM authenticates the IV itself. The IV stays out of the AAD because HSMs in FIPS mode
// choose the IV during the seal, after the AAD is fixed.
const (
	keyIDSize        = 36
	headerFixedSize  = 1 + keyIDSize + 4 + 1
	MaxIVSize        = 32
	minSealedDataLen = 1 + hsm.GCMTagSize
)

// Ciphertext is a parsed ciphertext.
type Ciphertext struct {
	Format  byte
	KeyID   string
	Version uint32
	IV      []byte
	// Sealed is the encrypted data followed by the GCM tag.
	Sealed []byte
	// Header is the header bytes (offsets 0 to 41), a sub-slice of the parsed input.
	Header []byte
}

// PlaintextLen returns the length of the data that Sealed decrypts to.
func (c Ciphertext) PlaintextLen() int { return len(c.Sealed) - hsm.GCMTagSize }

// appendHeader appends the header of a ciphertext to dst.
func appendHeader(dst []byte, format byte, ref hsm.KeyRef, ivLen int) []byte {
	dst = append(dst, format)
	dst = append(dst, ref.KeyID...)
	dst = binary.BigEndian.AppendUint32(dst, ref.Version)
	return append(dst, byte(ivLen))
}

// ParseCiphertext parses b without copying. Every malformed input returns an *Error
// with CodeInvalidCipherText; it never panics (a fuzz target checks this).
func ParseCiphertext(b []byte) (Ciphertext, error) {
	if len(b) < headerFixedSize {
		return Ciphertext{}, errCipherText("cipher_text is too short")
	}

	format := b[0]
	if format != FormatDataKey && format != FormatData {
		return Ciphertext{}, errCipherText("cipher_text has an unknown format")
	}

	keyID := b[1 : 1+keyIDSize]
	if !isKeyID(string(keyID)) {
		return Ciphertext{}, errCipherText("cipher_text names an invalid key id")
	}

	version := binary.BigEndian.Uint32(b[1+keyIDSize:])
	if version == 0 {
		return Ciphertext{}, errCipherText("cipher_text names key version 0")
	}

	ivLen := int(b[headerFixedSize-1])
	if ivLen == 0 || ivLen > MaxIVSize {
		return Ciphertext{}, errCipherText("cipher_text has an invalid IV length")
	}

	headerLen := headerFixedSize + ivLen
	if len(b) < headerLen+minSealedDataLen {
		return Ciphertext{}, errCipherText("cipher_text is too short")
	}

	return Ciphertext{
		Format:  format,
		KeyID:   string(keyID),
		Version: version,
		IV:      b[headerFixedSize:headerLen],
		Sealed:  b[headerLen:],
		Header:  b[:headerFixedSize],
	}, nil
}

func errCipherText(msg string) *Error {
	return &Error{Code: CodeInvalidCipherText, Message: msg}
}
