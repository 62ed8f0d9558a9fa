package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// gcPercent is the GOGC value kmsd runs with unless GOGC is set. Profiles of the
// data-key calls under load showed about a fifth of the CPU in the garbage collector
// at the default of 100, with a live heap of a few MiB; 400 trades some MiB of memory
// for that CPU. memoryLimit keeps the heap bounded all the same: near it, the collector
// runs as often as needed whatever GOGC says.
const (
	gcPercent   = 400
	memoryLimit = 256 << 20
)

// tuneGC applies gcPercent and memoryLimit, leaving GOGC and GOMEMLIMIT set in the
// environment as they are.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}

// runtimeProcs is GOMAXPROCS as the runtime chose it at start.
var runtimeProcs = runtime.GOMAXPROCS(0)

// addTokenProcs sets GOMAXPROCS to the runtime's choice plus tokenCalls, the token calls
// that can be in progress at once, but to at most twice the runtime's choice. It leaves
// GOMAXPROCS alone when the environment sets it. It returns the value in force.
//
// A goroutine in a token call is in a cgo call, and its P (a processor's right to run Go
// code) stays with it. The runtime's monitor takes the P back only from a call that has
// run for more than one of its ticks, at least 20 us (Go's runtime/proc.go, retake). A
// SoftHSM2 call takes about 10 us, so while the embedded token serves a call, one P
// fewer runs Go code. One P more gave 4 to 8% more decrypt-datakey calls a second at 64
// connections on a 2-core machine, and a p99 of 9 to 12 ms instead of 15 ms (alternating
// kmsbench runs with GOMAXPROCS 2, 3 and 4).
//
// NOTE: measured with the embedded SoftHSM2 token only. A network HSM's calls take
// milliseconds, so the monitor retakes their Ps, and the extra Ps (up to max_sessions)
// may only add context switches there. Set GOMAXPROCS to opt out.
func addTokenProcs(tokenCalls int, getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	procs := runtimeProcs + min(max(tokenCalls, 0), runtimeProcs)
	runtime.GOMAXPROCS(procs)
	return procs
}
