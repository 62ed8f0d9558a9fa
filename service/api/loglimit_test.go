package api

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// manualClock is the clock and timer of a summaryLimiter under test: time moves only by
// advance, and a scheduled function runs only when advance passes its time.
type manualClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []scheduledCall
}

type scheduledCall struct {
	at time.Time
	f  func()
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, scheduledCall{at: c.now.Add(d), f: f})
}

// advance moves the clock by d and runs the functions that are due.
func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	notDue := c.pending[:0]
	for _, call := range c.pending {
		if call.at.After(c.now) {
			notDue = append(notDue, call)
			continue
		}
		due = append(due, call.f)
	}
	c.pending = notDue
	c.mu.Unlock()

	for _, f := range due {
		f()
	}
}

func TestSummaryLimiterReportsSuppressed(t *testing.T) {
	clock := &manualClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var summaries []int64
	l := newSummaryLimiter(2, func(n int64) { summaries = append(summaries, n) })
	l.now, l.afterFunc = clock.Now, clock.AfterFunc

	steps := []struct {
		name          string
		advance       time.Duration
		wantAllowed   bool
		wantSummaries []int64 // after the step
	}{
		{"first line", 0, true, nil},
		{"second line", 100 * time.Millisecond, true, nil},
		{"third line in the same second", 100 * time.Millisecond, false, nil},
		{"fourth line in the same second", 700 * time.Millisecond, false, nil},
		{"next second: summary of two, then a line", 100 * time.Millisecond, true, []int64{2}},
		{"second line of the new second", 0, true, []int64{2}},
		{"third line of the new second", 0, false, []int64{2}},
	}
	for _, step := range steps {
		clock.advance(step.advance)
		if got := l.allow(); got != step.wantAllowed {
			t.Errorf("%s: allowed = %v, want %v", step.name, got, step.wantAllowed)
		}
		if fmt.Sprint(summaries) != fmt.Sprint(step.wantSummaries) {
			t.Errorf("%s: summaries = %v, want %v", step.name, summaries, step.wantSummaries)
		}
	}

	// No line follows, and the summary of the last one still comes at the end of its
	// second.
	clock.advance(999 * time.Millisecond)
	if fmt.Sprint(summaries) != "[2]" {
		t.Errorf("summaries before the end of the second = %v, want [2]", summaries)
	}
	clock.advance(time.Millisecond)
	if fmt.Sprint(summaries) != "[2 1]" {
		t.Errorf("summaries after the end of the second = %v, want [2 1]", summaries)
	}
}

func TestLogFailureCapsServerErrors(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s := &Server{log: log, errorLog: newErrorLimiter(log)}
	clock := &manualClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.errorLog.now, s.errorLog.afterFunc = clock.Now, clock.AfterFunc
	st := &requestState{id: "0123456789abcdef0123456789abcdef", op: "create-datakey"}

	// Far more failures than the budget, within one second.
	for range 100 * errorLinesPerSecond {
		s.logFailure(st, 503, "KMS.0102", errors.New("audit store unavailable"))
	}
	if n := strings.Count(logs.String(), "request failed"); n != errorLinesPerSecond {
		t.Errorf("logged %d lines for 1000 failures, want %d", n, errorLinesPerSecond)
	}

	clock.advance(time.Second)
	want := fmt.Sprintf("suppressed=%d", 99*errorLinesPerSecond)
	if !strings.Contains(logs.String(), "request failures not logged") ||
		!strings.Contains(logs.String(), want) {
		t.Errorf("log %q has no summary line with %s", logs.String(), want)
	}
}

// TestServerErrorLogCapsLines checks that net/http's own error lines, which any client
// can cause one per connection, reach the log at WARN and at most
// serverErrorLinesPerSecond a second, and that a summary counts the rest. The summary
// comes from a timer, so the log is a syncBuffer and the test waits for it.
func TestServerErrorLogCapsLines(t *testing.T) {
	var buf syncBuffer
	logger := NewServerErrorLog(slog.New(slog.NewTextHandler(&buf, nil)))

	for i := range 3 * serverErrorLinesPerSecond {
		logger.Printf("http: TLS handshake error from 127.0.0.1:%d: EOF", 40000+i)
	}

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != serverErrorLinesPerSecond {
		t.Errorf("%d lines logged for %d errors in one burst, want %d", len(lines),
			3*serverErrorLinesPerSecond, serverErrorLinesPerSecond)
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "TLS handshake error") {
		t.Errorf("first line = %q, want a WARN line with net/http's message", lines[0])
	}

	want := fmt.Sprintf("suppressed=%d", 2*serverErrorLinesPerSecond)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), want) {
		t.Errorf("no summary with %s within 5 s; log:\n%s", want, buf.String())
	}
}
