package jsonscan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestValidText(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"plain object", `{"a":"b"}`, true},
		{"non-ASCII", `{"a":"é€😀"}`, true},
		{"literal replacement character", `{"a":"` + "\uFFFD" + `"}`, true},
		{"escaped replacement character", `{"a":"\ufffd"}`, true},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, true},
		{"upper-case surrogate pair", `{"a":"\uD83D\uDE00"}`, true},
		{"escaped backslash before u", `{"a":"\\udcff"}`, true},
		{"two-character escapes", `{"a":"\"\\\/\b\f\n\r\t"}`, true},
		{"invalid byte", "{\"a\":\"\xff\"}", false},
		{"truncated sequence", "{\"a\":\"\xe2\x82\"}", false},
		{"overlong encoding", "{\"a\":\"\xc0\xaf\"}", false},
		{"encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", false},
		{"lone low surrogate", `{"a":"\udcff"}`, false},
		{"lone high surrogate at end", `{"a":"\ud800"}`, false},
		{"high surrogate before text", `{"a":"\ud800x"}`, false},
		{"high surrogate before non-surrogate escape", `{"a":"\ud800\u0041"}`, false},
		{"two high surrogates", `{"a":"\ud800\ud800"}`, false},
		{"backslash at end", `{"a":"\`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidText([]byte(tc.in)); got != tc.want {
				t.Errorf("ValidText(%q) = %t, want %t", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzValidText checks that encoding/json decodes a body that ValidText accepts without
// replacing anything with U+FFFD: a decoded U+FFFD must be in the input, literally or as
// an escape.
func FuzzValidText(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":"\udcff"}`, `{"a":"\ud83d\ude00"}`,
		"{\"a\":\"\xff\"}", `["\ufffd"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		if !ValidText(b) || json.Unmarshal(b, &v) != nil {
			return
		}
		decoded, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		replaced := bytes.Contains(decoded, []byte("\ufffd")) ||
			bytes.Contains(decoded, []byte("\uFFFD")) || bytes.ContainsRune(decoded, '\uFFFD')
		given := bytes.ContainsRune(b, '\uFFFD') ||
			strings.Contains(strings.ToLower(string(b)), "\\ufffd")
		if replaced && !given {
			t.Fatalf("ValidText accepted %q, which decodes with U+FFFD", b)
		}
	})
}
