package service

import (
	"encoding/hex"
	"testing"
)

func BenchmarkEncodeAAD(b *testing.B) {
	header := make([]byte, headerFixedSize)
	binding := Binding{Context: EncryptionContext{"tenant": "t-1", "bench": "kmsbench"}, AAD: "x"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = EncodeAAD(buf[:0], header, binding)
	}
}

func BenchmarkParseEncryptionContext(b *testing.B) {
	raw := []byte(`{"tenant":"t-1","bench":"kmsbench"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEncryptionContext(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCiphertext(b *testing.B) {
	raw, err := hex.DecodeString(vectorDataKeyCiphertext)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCiphertext(raw); err != nil {
			b.Fatal(err)
		}
	}
}
