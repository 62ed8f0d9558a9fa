package main

import (
	"testing"
	"time"
)

func TestParseHistogram(t *testing.T) {
	tests := []struct {
		name    string
		list    string
		want    latencyHistogram
		wantErr bool
	}{
		{"two values", " 120:3 450:1", latencyHistogram{120: 3, 450: 1}, false},
		{"repeated value adds up", "120:3 120:2", latencyHistogram{120: 5}, false},
		{"empty list", "", latencyHistogram{}, false},
		{"missing count", "120", nil, true},
		{"invalid value", "x:3", nil, true},
		{"invalid count", "120:y", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseHistogram(tc.list)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parseHistogram(%q) returned no error", tc.list)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseHistogram(%q): %v", tc.list, err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("parseHistogram(%q) = %v, want %v", tc.list, got, tc.want)
			}
			for v, c := range tc.want {
				if got[v] != c {
					t.Errorf("count of %d = %d, want %d", v, got[v], c)
				}
			}
		})
	}
}

func TestHistogramPercentile(t *testing.T) {
	// 100 samples: 1..90 once each, then 1000 ten times.
	h := latencyHistogram{1000: 10}
	for v := int64(1); v <= 90; v++ {
		h[v] = 1
	}

	tests := []struct {
		p    float64
		want float64
	}{
		{0, 1},       // rank round(0.5) = 1
		{50, 51},     // rank round(50.5) = 51
		{90, 1000},   // rank round(90.5) = 91, past the 90 single samples
		{99, 1000},   // rank 100
		{99.9, 1000}, // rank round(100.4) = 100
	}
	for _, tc := range tests {
		if got := h.percentile(tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := (latencyHistogram{}).percentile(50); got != 0 {
		t.Errorf("percentile of an empty histogram = %v, want 0", got)
	}
}

func TestCombine(t *testing.T) {
	runs := []result{
		{Requests: 100, DurationUS: 5_000_000, Failures: 1, Checked: 100, Status: 2,
			latency: latencyHistogram{100: 99, 5000: 1}},
		{Requests: 300, DurationUS: 4_000_000, Checked: 300, Timeout: 1,
			latency: latencyHistogram{200: 300}},
	}

	sequential := combine(runs, false)
	if sequential.Requests != 400 {
		t.Errorf("requests = %d, want 400", sequential.Requests)
	}
	if sequential.DurationUS != 9_000_000 {
		t.Errorf("sequential duration = %d us, want 9000000", sequential.DurationUS)
	}
	if sequential.failed() != 4 {
		t.Errorf("failed = %d, want 4", sequential.failed())
	}
	if sequential.Checked != 400 {
		t.Errorf("checked = %d, want 400", sequential.Checked)
	}
	if sequential.P50 != 200 {
		t.Errorf("merged p50 = %v, want 200", sequential.P50)
	}
	if sequential.P999 != 5000 {
		t.Errorf("merged p99.9 = %v, want 5000", sequential.P999)
	}
	if runs[0].latency[200] != 0 {
		t.Error("combine changed the histogram of a run")
	}

	concurrent := combine(runs, true)
	if concurrent.DurationUS != 5_000_000 {
		t.Errorf("concurrent duration = %d us, want 5000000", concurrent.DurationUS)
	}
	if concurrent.rps() != 80 {
		t.Errorf("concurrent req/s = %v, want 80", concurrent.rps())
	}
}

func TestRoundLength(t *testing.T) {
	tests := []struct {
		total  time.Duration
		rounds int
		want   time.Duration
	}{
		{15 * time.Second, 3, 5 * time.Second},
		{8 * time.Second, 3, 2 * time.Second},
		{2 * time.Second, 3, time.Second},
		{10 * time.Minute, 1, 10 * time.Minute},
	}
	for _, tc := range tests {
		if got := roundLength(tc.total, tc.rounds); got != tc.want {
			t.Errorf("roundLength(%v, %d) = %v, want %v", tc.total, tc.rounds, got, tc.want)
		}
	}
}
