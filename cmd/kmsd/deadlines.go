package main

import (
	"errors"
	"os"
	"sync"
	"time"
)

// net/http sets a connection's read and write deadlines about seven times per request
// for its header, read, write and idle timeouts, and each set moves a timer of the Go
// runtime. On a 2-core machine that took 2.6% of kmsd's CPU time under decrypt-datakey
// at 64 connections (docs/benchmarks.md). Most of those sets move the read deadline
// later, so lazyDeadline leaves the socket's earlier read deadline in place and remembers
// the requested one. When the socket's deadline passes first, the read that it fails
// sets the requested deadline on the socket and tries again (plainConn.Read). A deadline
// earlier than the socket's is set at once, so that net/http's deadline in the past still
// interrupts a blocked read at once. The result is the same as setting every deadline: a
// read fails with os.ErrDeadlineExceeded only after the requested deadline has passed.
//
// Write deadlines are set at once, and only their clearing after each response is left
// lazy. A write retried at a stale deadline can find room in the socket's buffer that did
// not wake the blocked write. With lazy write deadlines, a client that never read its
// responses kept its connection for up to twice net/http's WriteTimeout.

// lazyDeadline is one direction's deadline of a connection. It is safe for concurrent
// use: net/http sets the read deadline from one goroutine while another reads.
type lazyDeadline struct {
	// laterAtOnce makes set put every deadline other than none on the socket at once,
	// leaving only the clearing of a deadline lazy. The write deadline uses it.
	laterAtOnce bool

	mu sync.Mutex
	// requested is the deadline of the last set call; zero means none.
	requested time.Time
	// armed is the deadline set on the socket; zero means none.
	armed time.Time
}

// set records t as the deadline, zero for none. It calls arm to set t on the socket only
// when the socket would otherwise let a read or write run past t: when it has no
// deadline or a later one. With laterAtOnce, it sets every t other than zero.
func (d *lazyDeadline) set(t time.Time, arm func(time.Time) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	d.requested = t
	if t.IsZero() {
		return nil
	}
	if !d.laterAtOnce && !d.armed.IsZero() && !t.Before(d.armed) {
		return nil
	}

	d.armed = t
	return arm(t)
}

// rearm is called after a read or write failed with err. When err is the socket's
// deadline passing before the requested one, rearm sets the requested deadline on the
// socket and returns true, so that the caller tries again. Otherwise it returns false
// and the caller returns err.
func (d *lazyDeadline) rearm(err error, arm func(time.Time) error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}

	d.mu.Lock()
	defer d.mu.Unlock()

	if !d.requested.IsZero() && !d.requested.After(time.Now()) {
		return false
	}
	d.armed = d.requested
	return arm(d.requested) == nil
}
