package store

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestAppendFileTime(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		at   time.Time
	}{
		{"zero time", time.Time{}},
		{"ordinary", time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"milliseconds", time.Date(2026, 12, 5, 6, 7, 8, 9_000_000, time.UTC)},
		{"leap day, last millisecond", time.Date(2024, 2, 29, 23, 59, 59, 999_000_000, time.UTC)},
		{"year 0", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)},
		{"year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"negative year", time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC)},
		{"other location", time.Date(2025, 3, 1, 12, 0, 0, 0, cet)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.at.Format(fileTimeLayout)
			if got := string(appendFileTime([]byte("x"), tt.at)); got != "x"+want {
				t.Errorf("appendFileTime = %q, want %q", got, "x"+want)
			}
		})
	}
}

// TestAppendFileTimeRandom compares appendFileTime with time.Time.Format over random
// stored times from year 0 to 9999.
func TestAppendFileTimeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	first := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	last := time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC).UnixMilli()
	for range 100_000 {
		at := storedTime(time.UnixMilli(first + rng.Int64N(last-first+1)))
		want := at.Format(fileTimeLayout)
		if got := string(appendFileTime(nil, at)); got != want {
			t.Fatalf("appendFileTime(%v) = %q, want %q", at, got, want)
		}
	}
}
