package service

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/hsmkms/kms/hsm"
)

// TestCiphertextVector is the fixed test vector of docs/ciphertext.md. A real CMK never
// leaves the token, so the vector uses a published test key with Go's AES-256-GCM, which
// computes what the token computes for the same key, IV, plaintext and AAD.
func TestCiphertextVector(t *testing.T) {
	key, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	iv, _ := hex.DecodeString("101112131415161718191a1b")
	dek := make([]byte, 64)
	ref := hsm.KeyRef{KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f", Version: 1}
	binding := Binding{Context: EncryptionContext{"Key1": "Value1"}}

	header := appendHeader(nil, FormatDataKey, ref, len(iv))
	aad := EncodeAAD(nil, header, binding)

	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	out := append(append(header, iv...), gcm.Seal(nil, iv, dek, aad)...)

	got := strings.ToUpper(hex.EncodeToString(out))
	if got != vectorDataKeyCiphertext {
		t.Fatalf("ciphertext =\n%s\nwant\n%s", got, vectorDataKeyCiphertext)
	}

	ct, err := ParseCiphertext(out)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := gcm.Open(nil, ct.IV, ct.Sealed, EncodeAAD(nil, ct.Header, binding))
	if err != nil || len(plain) != 64 {
		t.Fatalf("open: %v", err)
	}
}

// vectorDataKeyCiphertext is the expected output; docs/ciphertext.md shows it too.
const vectorDataKeyCiphertext = "0130643034363662302D653732372D346439632D623335642D66383462623437" +
	"3461333766000000010C101112131415161718191A1B7DFE981649C93AB3CA75" +
	"081D0F796953D7504E0E1BC257B1E7F9E2675E5454DB50E95703F5A66EEF7E36" +
	"92518A98131B13BC4773E38B59F2BC1E3A31F397A46B3CA1AC25AB8388426D0E" +
	"90B9952435C0"
