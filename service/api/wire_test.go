package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hsmkms/kms/service"
)

// TestAppendJSONMatchesEncodingJSON checks that the hand-written encoders write what
// encoding/json writes, so the fast path changes no byte of an answer.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	values := []jsonAppender{
		createDataKeyResponse{KeyID: "k", PlainText: []byte{0xab}, CipherText: []byte{0xcd, 0x01}},
		createDataKeyResponse{KeyID: "k", CipherText: []byte{0xcd}},
		createDataKeyResponse{KeyID: "k", PlainText: []byte{}, CipherText: nil},
		encryptDataKeyResponse{KeyID: "k", CipherText: []byte{0xcd}, DataKeyLength: "64"},
		decryptDataKeyResponse{DataKey: []byte{0x00, 0x9f}, DataKeyLength: "2",
			DataKeyDigest: []byte{0xf5}},
	}
	for _, v := range values {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := v.appendJSON(nil); string(got) != string(want) {
			t.Errorf("%T: appendJSON = %s, encoding/json = %s", v, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"b\\", "\x00\x1f\b\f\n\r\t", "<&>", "\u2028\u2029", "é\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, encoding/json = %s", s, got, want)
		}
	})
}

// FuzzFoldName checks that foldName maps two valid UTF-8 names to the same string
// exactly when strings.EqualFold matches them, as encoding/json matches member names.
func FuzzFoldName(f *testing.F) {
	pairs := [][2]string{{"key_id", "KEY_ID"}, {"k", "\u212a"}, {"s", "\u017f"},
		{"\u0130", "i"}, {"\u03c3", "\u03c2"}, {"limit", "limits"}, {"", ""}}
	for _, p := range pairs {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		if same, fold := foldName(a) == foldName(b), strings.EqualFold(a, b); same != fold {
			t.Fatalf("foldName(%q) == foldName(%q) is %t, strings.EqualFold is %t", a, b,
				same, fold)
		}
	})
}

func TestDecodeHexErrors(t *testing.T) {
	tests := []struct {
		name, value, wantCode, wantMessage string
	}{
		{"empty", "", service.CodeMissingParameter, "cipher_text is missing"},
		{"odd length", "ABC", service.CodeInvalidCipherText,
			"cipher_text must be an even number of hexadecimal digits"},
		{"letter past F", "ABCG", service.CodeInvalidCipherText,
			`cipher_text contains 'G', which is not a hexadecimal digit`},
		{"two invalid letters", "ZZ", service.CodeInvalidCipherText,
			`cipher_text contains 'Z', which is not a hexadecimal digit`},
		{"non-ASCII byte", "AB\xc3\xa9", service.CodeInvalidCipherText,
			"cipher_text contains the byte 0xC3, which is not a hexadecimal digit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeHex("cipher_text", service.CodeInvalidCipherText, tt.value)
			var se *service.Error
			if !errors.As(err, &se) {
				t.Fatalf("decodeHex(%q) = %v, want a *service.Error", tt.value, err)
			}
			if se.Code != tt.wantCode {
				t.Errorf("code %s, want %s", se.Code, tt.wantCode)
			}
			if se.Message != tt.wantMessage {
				t.Errorf("message %q, want %q", se.Message, tt.wantMessage)
			}
		})
	}
}
