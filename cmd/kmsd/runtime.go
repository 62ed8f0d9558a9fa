package main

import (
	"os"
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
