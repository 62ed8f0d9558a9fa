package api

import (
	"io"
	stdlog "log"
	"log/slog"
	"sync"
	"time"
)

// errorLinesPerSecond is the budget of "request failed" lines of a Server. During an
// outage of the token or the store every request fails, and one line per request would
// flood the log, possibly on the very disk that is full. The metrics still count every
// failure.
const errorLinesPerSecond = 10

// newErrorLimiter returns the limiter of "request failed" lines. It writes its summary
// line to log.
func newErrorLimiter(log *slog.Logger) *summaryLimiter {
	return newSummaryLimiter(errorLinesPerSecond, func(suppressed int64) {
		log.Error("request failures not logged because they exceeded the log limit",
			"suppressed", suppressed, "limit_per_second", errorLinesPerSecond)
	})
}

// authFailureLinesPerSecond is the budget of "authentication failed" lines of a Server.
// Anyone who reaches the server can make every request fail authentication, so without
// a budget a flood of unsigned requests writes a log line for each.
const authFailureLinesPerSecond = 10

// summaryLimiter caps log lines at limit per second and reports the lines it suppressed
// in a summary once the second in which they were suppressed is over. The summary is
// written even when no line follows, as at the end of a flood. It is safe for concurrent
// use.
type summaryLimiter struct {
	limit int
	// summarize writes the summary line of suppressed lines.
	summarize func(suppressed int64)
	// now and afterFunc are time.Now and time.AfterFunc, replaced in tests.
	now       func() time.Time
	afterFunc func(d time.Duration, f func())

	mu          sync.Mutex
	windowStart time.Time
	logged      int
	suppressed  int64
	// summaryDue is set while a call of flush is scheduled.
	summaryDue bool
}

func newSummaryLimiter(limit int, summarize func(suppressed int64)) *summaryLimiter {
	return &summaryLimiter{
		limit:     limit,
		summarize: summarize,
		now:       time.Now,
		afterFunc: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
	}
}

// allow reports whether a line may be logged now. A line that may not is counted for
// the summary, which is scheduled for the end of the current second.
func (l *summaryLimiter) allow() bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	if now.Sub(l.windowStart) >= time.Second {
		l.windowStart, l.logged = now, 0
	}
	if l.logged < l.limit {
		l.logged++
		return true
	}

	l.suppressed++
	if !l.summaryDue {
		l.summaryDue = true
		l.afterFunc(l.windowStart.Add(time.Second).Sub(now), l.flush)
	}
	return false
}

// flush writes the summary of the lines suppressed since the last one.
func (l *summaryLimiter) flush() {
	l.mu.Lock()
	suppressed := l.suppressed
	l.suppressed, l.summaryDue = 0, false
	l.mu.Unlock()

	if suppressed > 0 {
		l.summarize(suppressed)
	}
}

// serverErrorLinesPerSecond is the budget of net/http's own error lines, such as TLS
// handshake failures. Any client can cause one per connection it opens.
const serverErrorLinesPerSecond = 10

// NewServerErrorLog returns a logger for http.Server.ErrorLog that writes net/http's lines
// to log at WARN, at most serverErrorLinesPerSecond a second, and a summary of the lines
// it dropped.
func NewServerErrorLog(log *slog.Logger) *stdlog.Logger {
	limiter := newSummaryLimiter(serverErrorLinesPerSecond, func(suppressed int64) {
		log.Warn("HTTP server errors not logged because they exceeded the log limit",
			"suppressed", suppressed, "limit_per_second", serverErrorLinesPerSecond)
	})
	lines := slog.NewLogLogger(log.Handler(), slog.LevelWarn).Writer()
	return stdlog.New(limitedWriter{limiter: limiter, w: lines}, "", 0)
}

// limitedWriter writes each line it gets to w while its limiter allows it, and drops the
// others.
type limitedWriter struct {
	limiter *summaryLimiter
	w       io.Writer
}

func (l limitedWriter) Write(p []byte) (int, error) {
	if !l.limiter.allow() {
		return len(p), nil
	}
	return l.w.Write(p)
}
