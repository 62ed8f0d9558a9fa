package api

import (
	"sync"
	"time"
)

// logLimiter caps the error lines of failed requests at limit per second. During an outage
// of the token or the store every request fails, and one line per request would flood the
// log, possibly on the very disk that is full. The metrics still count every failure.
type logLimiter struct {
	limit int

	mu          sync.Mutex
	windowStart time.Time
	logged      int
	suppressed  int64
}

// errorLinesPerSecond is the logLimiter budget of Server.
const errorLinesPerSecond = 10

// allow reports whether a line may be logged now, and how many lines were suppressed since
// the last one that was allowed, for that line to report.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if now.Sub(l.windowStart) >= time.Second {
		l.windowStart, l.logged = now, 0
	}
	if l.logged >= l.limit {
		l.suppressed++
		return false, 0
	}

	l.logged++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
