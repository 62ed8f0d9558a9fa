package service

import (
	"regexp"
	"strings"
	"testing"
)

func TestIsKeyID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"lower-case uuid", "0d0466b0-e727-4d9c-b35d-f84bb474a37f", true},
		{"letters past f", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", true},
		{"upper-case letter", "0D0466b0-e727-4d9c-b35d-f84bb474a37f", false},
		{"hyphen moved", "0d0466b0e-727-4d9c-b35d-f84bb474a37f", false},
		{"hyphen as last character", "0d0466b0-e727-4d9c-b35d-f84bb474a37-", false},
		{"underscore in a group", "0d0466b0-e727-4d9c-b35d-f84bb474a3_f", false},
		{"one character short", "0d0466b0-e727-4d9c-b35d-f84bb474a37", false},
		{"one character long", "0d0466b0-e727-4d9c-b35d-f84bb474a37f0", false},
		{"multi-byte character", "0d0466b0-e727-4d9c-b35d-f84bb474a3é", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isKeyID(tc.id); got != tc.want {
				t.Errorf("isKeyID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

// FuzzIsKeyID checks isKeyID against the regular expression of the key_id format.
func FuzzIsKeyID(f *testing.F) {
	pattern := regexp.MustCompile(`^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`)
	f.Add("0d0466b0-e727-4d9c-b35d-f84bb474a37f")
	f.Add(strings.Repeat("-", 36))
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := isKeyID(id), pattern.MatchString(id); got != want {
			t.Errorf("isKeyID(%q) = %v, the pattern says %v", id, got, want)
		}
	})
}
