package api

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimiterBudget(t *testing.T) {
	l := logLimiter{limit: 2}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	steps := []struct {
		name           string
		at             time.Duration
		wantOK         bool
		wantSuppressed int64
	}{
		{"first line", 0, true, 0},
		{"second line", 100 * time.Millisecond, true, 0},
		{"third line in the same second", 200 * time.Millisecond, false, 0},
		{"fourth line in the same second", 900 * time.Millisecond, false, 0},
		{"next second reports two suppressed", time.Second, true, 2},
		{"then counts from zero again", 1100 * time.Millisecond, true, 0},
	}
	for _, step := range steps {
		ok, suppressed := l.allow(start.Add(step.at))
		if ok != step.wantOK {
			t.Errorf("%s: allowed = %v, want %v", step.name, ok, step.wantOK)
		}
		if suppressed != step.wantSuppressed {
			t.Errorf("%s: suppressed = %d, want %d", step.name, suppressed, step.wantSuppressed)
		}
	}
}

func TestLogFailureCapsServerErrors(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil)),
		errorLog: logLimiter{limit: errorLinesPerSecond}}
	st := &requestState{id: "0123456789abcdef0123456789abcdef", op: "create-datakey"}

	// Far more failures than the budget, well within one second of each other.
	for range 100 * errorLinesPerSecond {
		s.logFailure(st, 503, "KMS.0102", errors.New("audit store unavailable"))
	}

	if n := strings.Count(logs.String(), "request failed"); n != errorLinesPerSecond {
		t.Errorf("logged %d lines for 1000 failures, want %d", n, errorLinesPerSecond)
	}
}
