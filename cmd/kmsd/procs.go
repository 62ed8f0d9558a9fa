package main

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Timing of procGovernor: it checks the requests in progress every procsTick, and it
// lowers GOMAXPROCS after procsQuietTicks checks in a row that found at most one.
const (
	procsTick       = 250 * time.Millisecond
	procsQuietTicks = 4
)

// procsRunnable is the count of goroutines waiting for a P at which the governor raises
// GOMAXPROCS. On one P, handlers that never block run one after the other, so a second
// request is rarely in progress however many clients wait. The waiting shows as runnable
// goroutines instead. A lone client leaves at most about two runnable (its connection's
// goroutines), and kmsd's periodic jobs (audit flush, WAL checkpoint, this governor) one
// each, so 4 is above what a lone client and a coinciding job make.
const procsRunnable = 4

const runnableMetric = "/sched/goroutines/runnable:goroutines"

// runnableGoroutines returns the goroutines that are ready to run and wait for a P.
func runnableGoroutines() int {
	var sample [1]metrics.Sample
	sample[0].Name = runnableMetric
	metrics.Read(sample[:])
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int(sample[0].Value.Uint64())
}

// procGovernor runs the Go scheduler on one P (a processor's right to run Go code) while
// kmsd serves at most one request at a time. It goes back to high Ps as soon as a second
// request is in progress or goroutines queue for the P (procsRunnable).
//
// With several Ps and a single client, each request wakes idle threads. net/http starts
// a goroutine per request to watch the connection, and the runtime wakes the thread of
// an idle P to run it, which then spins looking for more work before it sleeps again. On
// a 2-core machine those threads take CPU from the client and from the handler. With one
// connection, one P cut kmsd's CPU time per decrypt-datakey call from 345-373 us to
// 239 us and its p50 latency by about a fifth (alternating kmsbench runs on a 2-core
// VM, 1 connection). At 64 connections one P halved the calls a second, so the
// governor raises GOMAXPROCS at the second request in progress, which costs one
// stop-the-world pause of 20-110 us on that VM.
//
// NOTE: on one P, a goroutine blocked in a system call or a cgo call holds back the
// request until the runtime's monitor takes the P back, which takes up to 10 ms in a
// mostly idle process. The periodic flush of audit chain files runs its fdatasync off
// the scheduler for that reason; SQLite's WAL checkpoints after metadata writes do not.
//
// begin and end are safe for concurrent use. run lowers GOMAXPROCS, and begin or run
// raise it, one change at a time.
type procGovernor struct {
	high     int
	setProcs func(int)  // runtime.GOMAXPROCS outside tests
	runnable func() int // runnableGoroutines outside tests
	log      *slog.Logger

	inFlight atomic.Int64
	peak     atomic.Int64 // highest inFlight since the last tick
	low      atomic.Bool  // GOMAXPROCS is 1

	mu    sync.Mutex // serializes changes of GOMAXPROCS and low
	quiet int        // ticks in a row with peak at most 1; used by tick only
}

func newProcGovernor(high int, log *slog.Logger) *procGovernor {
	return &procGovernor{
		high:     high,
		setProcs: func(n int) { runtime.GOMAXPROCS(n) },
		runnable: runnableGoroutines,
		log:      log,
	}
}

// handler counts the requests that next serves as in progress.
func (g *procGovernor) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.begin()
		defer g.end()
		next.ServeHTTP(w, r)
	})
}

// begin counts a request as in progress. On one P, it raises GOMAXPROCS if the request
// is the second in progress or if procsRunnable goroutines wait to run.
func (g *procGovernor) begin() {
	n := g.inFlight.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}

	if g.low.Load() && (n > 1 || g.runnable() >= procsRunnable) {
		g.raise()
	}
}

func (g *procGovernor) end() { g.inFlight.Add(-1) }

func (g *procGovernor) raise() {
	g.mu.Lock()
	defer g.mu.Unlock()

	if !g.low.Load() {
		return
	}
	g.setProcs(g.high)
	g.low.Store(false)
	g.log.Debug("Go processors raised", "gomaxprocs", g.high)
}

// lower sets GOMAXPROCS to 1 unless a second request is in progress. low is set before
// inFlight is read, so a begin that adds the second request is either counted here or
// finds low set and raises GOMAXPROCS again.
func (g *procGovernor) lower() {
	g.mu.Lock()
	defer g.mu.Unlock()

	if g.low.Load() {
		return
	}
	g.low.Store(true)
	if g.inFlight.Load() > 1 {
		g.low.Store(false)
		return
	}
	g.setProcs(1)
	g.log.Debug("Go processors lowered", "gomaxprocs", 1)
}

// tick takes the peak of requests in progress since the last tick, and lowers
// GOMAXPROCS after procsQuietTicks quiet ticks in a row. A tick is busy if it saw a
// second request in progress or procsRunnable goroutines waiting to run. A busy tick
// raises GOMAXPROCS if it is low, which catches a request that came in while it was being
// lowered.
func (g *procGovernor) tick() {
	peak := g.peak.Swap(g.inFlight.Load())
	if peak > 1 || g.runnable() >= procsRunnable {
		g.quiet = 0
		if g.low.Load() {
			g.raise()
		}
		return
	}

	g.quiet++
	if g.quiet >= procsQuietTicks {
		g.lower()
	}
}

// run calls tick every procsTick until ctx is done, then sets GOMAXPROCS back to high.
func (g *procGovernor) run(ctx context.Context) {
	ticker := time.NewTicker(procsTick)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			g.raise()
			return
		case <-ticker.C:
			g.tick()
		}
	}
}
