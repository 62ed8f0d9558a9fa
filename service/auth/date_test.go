package auth

import (
	"testing"
	"time"
)

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"20060102T150405Z", "20241301T000000Z", "20240230T000000Z",
		"20240101T246000Z", "2024-01-01T000Z", "20240101t000000z", "", "99991231T235959Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, wantErr := time.Parse(DateFormat, s)
		got, err := parseDate(s)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("parseDate(%q) error %v, time.Parse error %v", s, err, wantErr)
		}
		if err == nil && !got.Equal(want) {
			t.Fatalf("parseDate(%q) = %v, time.Parse = %v", s, got, want)
		}
	})
}
