package service

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func TestParseEncryptionContext(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    EncryptionContext
		wantErr bool
	}{
		{name: "absent", raw: "", want: nil},
		{name: "null", raw: "null", want: nil},
		{name: "empty object", raw: "{}", want: EncryptionContext{}},
		{name: "two pairs", raw: `{"a":"1","b":"2"}`, want: EncryptionContext{"a": "1", "b": "2"}},
		{name: "non-ASCII key", raw: `{"schlüssel":"wert","键":"值"}`,
			want: EncryptionContext{"schlüssel": "wert", "键": "值"}},
		{name: "number value", raw: `{"a":1}`, wantErr: true},
		{name: "object value", raw: `{"a":{}}`, wantErr: true},
		{name: "array", raw: `["a"]`, wantErr: true},
		{name: "string", raw: `"a"`, wantErr: true},
		{name: "duplicate key", raw: `{"a":"1","a":"2"}`, wantErr: true},
		{name: "truncated", raw: `{"a":"1"`, wantErr: true},
		{name: "too long", raw: `{"a":"` + string(bytes.Repeat([]byte("x"), 8190)) + `"}`,
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEncryptionContext([]byte(tt.raw))
			if tt.wantErr {
				if !errors.Is(err, &Error{Code: CodeInvalidContext}) {
					t.Fatalf("error = %v, want code %s", err, CodeInvalidContext)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d pairs, want %d", len(got), len(tt.want))
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("got[%q] = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestEncodeAADOrderIndependent(t *testing.T) {
	a, err := ParseEncryptionContext([]byte(`{"x":"1","y":"2","é":"3"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseEncryptionContext([]byte(`{"é":"3","y":"2","x":"1"}`))
	if err != nil {
		t.Fatal(err)
	}

	header := []byte("header")
	if !bytes.Equal(EncodeAAD(nil, header, Binding{Context: a}), EncodeAAD(nil, header, Binding{Context: b})) {
		t.Fatal("the same context in another key order gave another AAD")
	}
}

func TestEncodeAADUnambiguous(t *testing.T) {
	header := []byte("h")
	distinct := []struct {
		name string
		b    Binding
	}{
		{"empty", Binding{}},
		{"ab=c", Binding{Context: EncryptionContext{"ab": "c"}}},
		{"a=bc", Binding{Context: EncryptionContext{"a": "bc"}}},
		{"a=b,c=d", Binding{Context: EncryptionContext{"a": "b", "c": "d"}}},
		{"a=b and c=d as one value", Binding{Context: EncryptionContext{"a": "b\x00\x00\x00\x01c"}}},
		{"aad only", Binding{AAD: "ab=c"}},
		{"context and aad", Binding{Context: EncryptionContext{"ab": "c"}, AAD: "x"}},
		{"empty key", Binding{Context: EncryptionContext{"": ""}}},
	}

	seen := map[string]string{}
	for _, d := range distinct {
		enc := hex.EncodeToString(EncodeAAD(nil, header, d.b))
		if other, dup := seen[enc]; dup {
			t.Errorf("%s and %s give the same AAD", d.name, other)
		}
		seen[enc] = d.name
	}
}

func TestEncodeAADAbsentEqualsEmpty(t *testing.T) {
	header := []byte("h")
	absent := EncodeAAD(nil, header, Binding{})
	empty := EncodeAAD(nil, header, Binding{Context: EncryptionContext{}, AAD: ""})
	if !bytes.Equal(absent, empty) {
		t.Fatal("an absent and an empty binding gave different AADs")
	}
}

// TestEncodeAADGolden pins the encoding: changing it would make every stored ciphertext
// undecryptable.
func TestEncodeAADGolden(t *testing.T) {
	header := []byte{0x01, 0x02}
	b := Binding{Context: EncryptionContext{"b": "2", "a": "1"}, AAD: "x"}

	got := hex.EncodeToString(EncodeAAD(nil, header, b))
	const want = "68736d6b6d732d6161642d7631" + // "hsmkms-aad-v1"
		"00000002" + "0102" + // header
		"01" + "00000002" + // context with two pairs
		"00000001" + "61" + "00000001" + "31" + // "a" = "1"
		"00000001" + "62" + "00000001" + "32" + // "b" = "2"
		"02" + "00000001" + "78" // additional_authenticated_data "x"
	if got != want {
		t.Fatalf("AAD = %s\nwant  %s", got, want)
	}
}

func TestValidateAAD(t *testing.T) {
	if err := ValidateAAD(string(bytes.Repeat([]byte("a"), 128))); err != nil {
		t.Errorf("128 bytes rejected: %v", err)
	}
	if err := ValidateAAD(string(bytes.Repeat([]byte("a"), 129))); err == nil {
		t.Error("129 bytes accepted")
	}
}
