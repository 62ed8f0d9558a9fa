package auth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
)

const testSignature = "ebfbd647b99ae6d24164a861a37d6c2f7bca11a7660b4f173bc46e2efdfb8f7d"

func TestParseAuthorization(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		headers []string
	}{
		{
			name: "sdk form",
			value: "SDK-HMAC-SHA256 Access=AK123, " +
				"SignedHeaders=user-agent;x-project-id;x-sdk-date, Signature=" + testSignature,
			headers: []string{"user-agent", "x-project-id", "x-sdk-date"},
		},
		{
			name:    "no spaces after commas",
			value:   "SDK-HMAC-SHA256 Access=AK123,SignedHeaders=x-sdk-date,Signature=" + testSignature,
			headers: []string{"x-sdk-date"},
		},
		{
			name:    "parameters reordered",
			value:   "SDK-HMAC-SHA256 Signature=" + testSignature + ", SignedHeaders=host;x-sdk-date, Access=AK123",
			headers: []string{"host", "x-sdk-date"},
		},
		{
			name: "upper-case signature hex",
			value: "SDK-HMAC-SHA256 Access=AK123, SignedHeaders=x-sdk-date, Signature=" +
				strings.ToUpper(testSignature),
			headers: []string{"x-sdk-date"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth, err := ParseAuthorization(tt.value)
			if err != nil {
				t.Fatalf("ParseAuthorization: %v", err)
			}
			if auth.AccessKey != "AK123" {
				t.Errorf("AccessKey = %q, expected AK123", auth.AccessKey)
			}
			if !slices.Equal(auth.SignedHeaders, tt.headers) {
				t.Errorf("SignedHeaders = %v, expected %v", auth.SignedHeaders, tt.headers)
			}
			if len(auth.Signature) != 32 {
				t.Errorf("Signature is %d bytes, expected 32", len(auth.Signature))
			}
		})
	}
}

func TestParseAuthorizationRejects(t *testing.T) {
	valid := "SDK-HMAC-SHA256 Access=AK123, SignedHeaders=x-sdk-date, Signature=" + testSignature
	tests := []struct {
		name  string
		value string
	}{
		{name: "empty", value: ""},
		{name: "algorithm only", value: "SDK-HMAC-SHA256"},
		{name: "other algorithm", value: strings.Replace(valid, "SDK-HMAC-SHA256", "SDK-HMAC-SM3", 1)},
		{name: "lower-case algorithm", value: strings.Replace(valid, "SDK-HMAC-SHA256", "sdk-hmac-sha256", 1)},
		{
			name: "derived algorithm",
			value: "V11-HMAC-SHA256 Credential=AK/20240101/r/kms, SignedHeaders=x-sdk-date, " +
				"Signature=" + testSignature,
		},
		{name: "missing access", value: "SDK-HMAC-SHA256 SignedHeaders=x-sdk-date, Signature=" + testSignature},
		{name: "missing signed headers", value: "SDK-HMAC-SHA256 Access=AK123, Signature=" + testSignature},
		{name: "missing signature", value: "SDK-HMAC-SHA256 Access=AK123, SignedHeaders=x-sdk-date"},
		{name: "duplicate access", value: valid + ", Access=AK456"},
		{name: "unknown parameter", value: valid + ", Region=x"},
		{name: "parameter without equals", value: valid + ", junk"},
		{name: "empty access key", value: strings.Replace(valid, "Access=AK123", "Access=", 1)},
		{name: "access key with space", value: strings.Replace(valid, "Access=AK123", "Access=AK 123", 1)},
		{name: "access key too long", value: strings.Replace(valid, "AK123", strings.Repeat("A", 129), 1)},
		{name: "empty signed headers", value: strings.Replace(valid, "SignedHeaders=x-sdk-date", "SignedHeaders=", 1)},
		{name: "empty signed header name", value: strings.Replace(valid, "x-sdk-date", "host;;x-sdk-date", 1)},
		{name: "upper-case signed header", value: strings.Replace(valid, "x-sdk-date", "X-Sdk-Date", 1)},
		{name: "duplicate signed header", value: strings.Replace(valid, "x-sdk-date", "x-sdk-date;x-sdk-date", 1)},
		{name: "short signature", value: strings.TrimSuffix(valid, "7d")},
		{name: "non-hex signature", value: strings.Replace(valid, "ebfb", "zzzz", 1)},
		{name: "too long", value: valid + strings.Repeat(" ", maxAuthorizationLength)},
		{
			name: "too many signed headers",
			value: strings.Replace(valid, "x-sdk-date",
				strings.Repeat("a;", maxSignedHeaders)+"x-sdk-date", 1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAuthorization(tt.value)
			if !errors.Is(err, ErrMalformedHeader) {
				t.Errorf("ParseAuthorization(%q) error = %v, expected %v", tt.value, err, ErrMalformedHeader)
			}
		})
	}
}

// FuzzParseAuthorization checks that the parser never panics, that every error wraps
// ErrMalformedHeader, and that a parsed header formats back to a value that parses to
// the same fields.
func FuzzParseAuthorization(f *testing.F) {
	f.Add("SDK-HMAC-SHA256 Access=AK123, SignedHeaders=user-agent;x-project-id;x-sdk-date, " +
		"Signature=" + testSignature)
	f.Add("SDK-HMAC-SHA256 Access=AK123,SignedHeaders=x-sdk-date,Signature=" + testSignature)
	f.Add("SDK-HMAC-SHA256 Access=, SignedHeaders=, Signature=")

	f.Fuzz(func(t *testing.T, value string) {
		auth, err := ParseAuthorization(value)
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v does not wrap ErrMalformedHeader", err)
			}
			return
		}

		if !validAccessKey(auth.AccessKey) {
			t.Fatalf("parsed invalid access key %q", auth.AccessKey)
		}
		if len(auth.Signature) != 32 {
			t.Fatalf("parsed %d-byte signature", len(auth.Signature))
		}

		formatted := FormatAuthorization(auth.AccessKey, auth.SignedHeaders,
			hex.EncodeToString(auth.Signature))
		again, err := ParseAuthorization(formatted)
		if err != nil {
			t.Fatalf("formatted header %q does not parse: %v", formatted, err)
		}
		if again.AccessKey != auth.AccessKey || !slices.Equal(again.SignedHeaders, auth.SignedHeaders) ||
			!bytes.Equal(again.Signature, auth.Signature) {
			t.Fatalf("round trip changed %+v into %+v", auth, again)
		}
	})
}

// TestParseAuthorizationErrorsOmitParameterText sends malformed parameters that carry
// the signature: the error, which kmsd logs, must not repeat it.
func TestParseAuthorizationErrorsOmitParameterText(t *testing.T) {
	tests := []struct {
		name  string
		value string
	}{
		{"space for =", "SDK-HMAC-SHA256 Access=AB, SignedHeaders=x-sdk-date, Signature " +
			testSignature},
		{"colon for =", "SDK-HMAC-SHA256 Access=AB, SignedHeaders=x-sdk-date, Signature:" +
			testSignature},
		{"signature as a name", "SDK-HMAC-SHA256 Access=AB, SignedHeaders=x-sdk-date, " +
			testSignature + "=1"},
		{"signature as a name twice", "SDK-HMAC-SHA256 " + testSignature + "=1, " +
			testSignature + "=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAuthorization(tt.value)
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v, expected %v", err, ErrMalformedHeader)
			}
			if strings.Contains(err.Error(), testSignature[:16]) {
				t.Errorf("error %q repeats the signature", err)
			}
		})
	}
}
