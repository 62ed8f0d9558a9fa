package service

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/hsmkms/kms/hsm"
)

// vectorCiphertext is the fixed test vector of the data key ciphertext format: key
// 0d0466b0-e727-4d9c-b35d-f84bb474a37f version 1, IV 000102030405060708090a0b, a 4-byte
// sealed data key and a 16-byte tag (the sealed bytes are arbitrary here: the layout,
// not the cryptography, is under test).
const vectorCiphertext = "01" +
	"30643034363662302d653732372d346439632d623335642d663834626234373461333766" +
	"00000001" + "0c" + "000102030405060708090a0b" +
	"deadbeef" + "00112233445566778899aabbccddeeff"

func TestParseCiphertextVector(t *testing.T) {
	raw, err := hex.DecodeString(vectorCiphertext)
	if err != nil {
		t.Fatal(err)
	}

	ct, err := ParseCiphertext(raw)
	if err != nil {
		t.Fatalf("ParseCiphertext: %v", err)
	}
	if ct.Format != FormatDataKey {
		t.Errorf("format = %d, want %d", ct.Format, FormatDataKey)
	}
	if ct.KeyID != "0d0466b0-e727-4d9c-b35d-f84bb474a37f" {
		t.Errorf("key id = %q", ct.KeyID)
	}
	if ct.Version != 1 {
		t.Errorf("version = %d, want 1", ct.Version)
	}
	if hex.EncodeToString(ct.IV) != "000102030405060708090a0b" {
		t.Errorf("iv = %x", ct.IV)
	}
	if ct.PlaintextLen() != 4 {
		t.Errorf("plaintext length = %d, want 4", ct.PlaintextLen())
	}
	if len(ct.Header) != 42 || !bytes.Equal(ct.Header, raw[:42]) {
		t.Errorf("header = %x, want the first 42 bytes", ct.Header)
	}

	built := appendHeader(nil, FormatDataKey,
		hsm.KeyRef{KeyID: "0d0466b0-e727-4d9c-b35d-f84bb474a37f", Version: 1}, 12)
	if !bytes.Equal(built, ct.Header) {
		t.Errorf("appendHeader = %x, want %x", built, ct.Header)
	}
}

func TestParseCiphertextRejects(t *testing.T) {
	valid, _ := hex.DecodeString(vectorCiphertext)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(valid))
	}

	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"header only", valid[:42]},
		{"no tag", valid[:len(valid)-16]},
		{"cut by 1", valid[:54+16]},
		{"unknown format", mutate(func(b []byte) []byte { b[0] = 9; return b })},
		{"upper-case key id", mutate(func(b []byte) []byte { b[1] = 'D'; return b })},
		{"version zero", mutate(func(b []byte) []byte { b[40] = 0; return b })},
		{"IV length zero", mutate(func(b []byte) []byte { b[41] = 0; return b })},
		{"IV length too large", mutate(func(b []byte) []byte { b[41] = 200; return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCiphertext(tt.in)
			if !errors.Is(err, &Error{Code: CodeInvalidCipherText}) {
				t.Fatalf("error = %v, want code %s", err, CodeInvalidCipherText)
			}
		})
	}
}

func FuzzParseCiphertext(f *testing.F) {
	valid, _ := hex.DecodeString(vectorCiphertext)
	f.Add(valid)
	f.Add(valid[:42])
	f.Add([]byte{})
	f.Add([]byte{0x02})

	f.Fuzz(func(t *testing.T, b []byte) {
		ct, err := ParseCiphertext(b)
		if err != nil {
			if CodeOf(err) != CodeInvalidCipherText {
				t.Fatalf("error code %s, want %s", CodeOf(err), CodeInvalidCipherText)
			}
			return
		}
		if ct.PlaintextLen() < 1 || len(ct.IV) == 0 || len(ct.Header) != headerFixedSize {
			t.Fatalf("accepted an inconsistent ciphertext: %+v", ct)
		}
	})
}
