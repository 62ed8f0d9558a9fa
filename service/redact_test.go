package service

import (
	"strings"
	"testing"
)

func TestMaybeSecret(t *testing.T) {
	tests := []struct {
		name string
		s    string
		want bool
	}{
		{"key id", "0d0466b0-e727-4d9c-b35d-f84bb474a37f", false},
		{"upper-case key id", "0D0466B0-E727-4D9C-B35D-F84BB474A37F", false},
		{"alias of words", "alias/payments-service-production-encryption-key", false},
		{"alias in one case with underscores", "alias/backup_keys_for_the_archive_2024", false},
		{"hex data key of 120 bits", strings.Repeat("AB", 15), false},
		{"hex data key of 128 bits", strings.Repeat("AB", 16), true},
		{"hex data key as alias", "alias/" + strings.Repeat("DE8E1F51", 8), true},
		{"base64 data key", "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0+/8=", true},
		{"base64url data key", "MzMzMzMzM_v7-0REREREREREREREREREREREREREREQ=", true},
		{"base64url data key as alias", "alias/MzMzMzMzM_v7-0REREREREREREREREREREREREREREQ=", true},
		{"secret key", "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaybeSecret(tt.s); got != tt.want {
				t.Errorf("MaybeSecret(%q) = %t, want %t", tt.s, got, tt.want)
			}
		})
	}
}
