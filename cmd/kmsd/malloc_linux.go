//go:build linux

package main

import (
	"fmt"
	"os"
	"syscall"
)

// mallocTunables is the GLIBC_TUNABLES value kmsd runs with unless the environment sets
// GLIBC_TUNABLES. glibc's malloc keeps up to tcache_count freed chunks of each size class
// in a lock-free cache per thread, 7 by default (glibc 2.26 and later). SoftHSM2 and
// OpenSSL allocate and free many small chunks in each token call, on whichever thread
// the Go runtime runs the call, and past 7 chunks malloc and free take the arena's
// locked paths. With 1024, decrypt-datakey at 64 connections served 2 to 6% more requests
// a second (alternating kmsbench rounds, SoftHSM2 2.6.1 and glibc 2.36, docs/benchmarks.md).
// The caches hold only freed chunks of up to 1032 bytes. kmsd's resident set stayed at 51
// to 55 MiB over a 10-minute run of that load (scripts/soak.sh). Other C libraries ignore
// the variable.
const mallocTunables = "glibc.malloc.tcache_count=1024"

// execWithMallocTunables replaces the kmsd process image with a new one of the same
// binary, arguments and environment plus GLIBC_TUNABLES=mallocTunables, because glibc
// reads its tunables only when a process starts. The process keeps its PID, open files
// and parent, so supervisors and socket activation see no change.
//
// It returns nil without doing anything when GLIBC_TUNABLES is set, whether by the
// operator, whose value wins, or by an earlier call. It returns only an error otherwise.
func execWithMallocTunables(environ []string, lookupEnv func(string) (string, bool)) error {
	if _, set := lookupEnv("GLIBC_TUNABLES"); set {
		return nil
	}

	// The binary's own path, not /proc/self/exe, because the kernel names the process
	// (its comm, which pgrep and ps -C match) after the file that was executed.
	path, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the kmsd binary to re-execute: %w", err)
	}
	env := append(environ[:len(environ):len(environ)], "GLIBC_TUNABLES="+mallocTunables)
	if err := syscall.Exec(path, os.Args, env); err != nil {
		return fmt.Errorf("re-executing kmsd with GLIBC_TUNABLES=%s: %w", mallocTunables, err)
	}
	return nil
}
