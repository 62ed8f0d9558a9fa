package auth

import (
	"sync"
	"time"
)

// lockout counts consecutive verification failures per access key and locks a key for
// a fixed duration once the count reaches maxFailures. It tracks at most maxTracked
// keys; see evict for what is dropped first. It is safe for concurrent use.
type lockout struct {
	maxFailures int
	duration    time.Duration
	maxTracked  int

	mu      sync.Mutex
	entries map[string]*failureRecord
}

type failureRecord struct {
	failures    int
	lastFailure time.Time
	// lockedUntil is zero while the key is not locked.
	lockedUntil time.Time
}

func newLockout(maxFailures int, duration time.Duration, maxTracked int) *lockout {
	return &lockout{
		maxFailures: maxFailures,
		duration:    duration,
		maxTracked:  maxTracked,
		entries:     make(map[string]*failureRecord),
	}
}

// lockedUntil returns the end of the lock on ak when ak is locked at now. An expired
// lock is deleted, so the key starts again with no failures.
func (l *lockout) lockedUntil(ak string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()

	record := l.entries[ak]
	if record == nil || record.lockedUntil.IsZero() {
		return time.Time{}, false
	}
	if now.Before(record.lockedUntil) {
		return record.lockedUntil, true
	}

	delete(l.entries, ak)
	return time.Time{}, false
}

// recordFailure counts one failure of ak at now. It returns the end of the lock and
// true when this failure locks the key.
func (l *lockout) recordFailure(ak string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()

	record := l.entries[ak]
	if record == nil {
		if len(l.entries) >= l.maxTracked {
			l.evict(now)
		}
		record = &failureRecord{}
		l.entries[ak] = record
	}

	record.failures++
	record.lastFailure = now
	if record.failures < l.maxFailures {
		return time.Time{}, false
	}

	record.lockedUntil = now.Add(l.duration)
	return record.lockedUntil, true
}

// recordSuccess deletes the failure record of ak.
func (l *lockout) recordSuccess(ak string) {
	l.mu.Lock()
	defer l.mu.Unlock()

	delete(l.entries, ak)
}

// evict makes room for one record. It drops every expired lock, and when that frees
// nothing it drops the unlocked record with the oldest failure, or failing that the
// lock that ends first. Only access keys that exist are tracked, so the limit is reached
// only when more keys than maxTracked fail at once. l.mu must be held.
func (l *lockout) evict(now time.Time) {
	for ak, record := range l.entries {
		if !record.lockedUntil.IsZero() && !now.Before(record.lockedUntil) {
			delete(l.entries, ak)
		}
	}
	if len(l.entries) < l.maxTracked {
		return
	}

	var victim string
	var victimRecord *failureRecord
	for ak, record := range l.entries {
		if victimRecord == nil || evictsBefore(record, victimRecord) {
			victim, victimRecord = ak, record
		}
	}
	delete(l.entries, victim)
}

// evictsBefore orders records for eviction: unlocked before locked, then unlocked by
// oldest failure and locked by earliest end.
func evictsBefore(a, b *failureRecord) bool {
	aLocked, bLocked := !a.lockedUntil.IsZero(), !b.lockedUntil.IsZero()
	switch {
	case aLocked != bLocked:
		return !aLocked
	case aLocked:
		return a.lockedUntil.Before(b.lockedUntil)
	}
	return a.lastFailure.Before(b.lastFailure)
}

// tracked returns how many access keys have a record, for tests.
func (l *lockout) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()

	return len(l.entries)
}
