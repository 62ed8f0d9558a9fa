//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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

// errSecureExecution reports that kmsd runs in secure-execution mode (set-user-ID,
// set-group-ID or file capabilities), where glibc ignores GLIBC_TUNABLES.
var errSecureExecution = errors.New("glibc ignores GLIBC_TUNABLES in secure-execution " +
	"mode (set-user-ID, set-group-ID or file capabilities)")

// execWithMallocTunables replaces the kmsd process image with a new one of the same
// binary, arguments and environment plus GLIBC_TUNABLES=mallocTunables, because glibc
// reads its tunables only when a process starts. The process keeps its PID, open files
// and parent, so supervisors and socket activation see no change. It executes
// /proc/self/exe, the file this process started from even if its path now names another
// file or none, and restoreProcessName gives the new image its name back.
//
// It returns nil without doing anything when GLIBC_TUNABLES is set, whether by the
// operator, whose value wins, or by an earlier call, and errSecureExecution when glibc
// would ignore the variable. It returns only an error otherwise.
func execWithMallocTunables(environ []string, lookupEnv func(string) (string, bool)) error {
	if auxv, err := os.ReadFile("/proc/self/auxv"); err == nil && secureExecution(auxv) {
		return errSecureExecution
	}
	if _, set := lookupEnv("GLIBC_TUNABLES"); set {
		return nil
	}

	env := append(environ[:len(environ):len(environ)], "GLIBC_TUNABLES="+mallocTunables)
	if comm, err := os.ReadFile("/proc/self/comm"); err == nil {
		env = append(env, execNameVar+"="+string(bytes.TrimSpace(comm)))
	}
	if err := syscall.Exec("/proc/self/exe", os.Args, env); err != nil {
		return fmt.Errorf("re-executing kmsd with GLIBC_TUNABLES=%s: %w", mallocTunables, err)
	}
	return nil
}

// Types of auxiliary vector entries, from Linux's include/uapi/linux/auxvec.h.
const (
	atNull   = 0  // AT_NULL, the end of the vector
	atSecure = 23 // AT_SECURE, non-zero in secure-execution mode
)

// secureExecution reports whether the auxiliary vector auxv, as /proc/self/auxv holds it,
// has a non-zero AT_SECURE entry.
func secureExecution(auxv []byte) bool {
	const word = int(unsafe.Sizeof(uintptr(0)))
	for i := 0; i+2*word <= len(auxv); i += 2 * word {
		key, value := auxvWord(auxv[i:], word), auxvWord(auxv[i+word:], word)
		if key == atNull {
			return false
		}
		if key == atSecure {
			return value != 0
		}
	}
	return false
}

func auxvWord(b []byte, word int) uint64 {
	if word == 4 {
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return binary.NativeEndian.Uint64(b)
}

// init runs on the main thread, whose name ps -C and pgrep match, because Go's runtime
// locks the main goroutine to it while packages initialise (runtime/proc.go, main).
func init() {
	restoreProcessName()
}

// execNameVar carries the process name that the kernel gave kmsd, after the file it
// executed, to the image that execWithMallocTunables starts from /proc/self/exe.
const execNameVar = "KMSD_EXEC_NAME"

// restoreProcessName names the process and its threads as the kernel named them before
// execWithMallocTunables executed /proc/self/exe, which the kernel names "exe": after the
// file first executed (execNameVar), or else after the first argument. The Go runtime
// starts threads before init, and each new thread takes the name of the thread that
// starts it, so every thread still named "exe" is renamed too (top -H and perf show
// thread names).
func restoreProcessName() {
	name, passed := os.LookupEnv(execNameVar)
	if passed {
		_ = os.Unsetenv(execNameVar)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil || string(bytes.TrimSpace(comm)) != "exe" {
		return
	}
	if !passed {
		name = filepath.Base(os.Args[0])
	}
	if name == "" || name == "exe" || name == "." || name == "/" {
		return
	}

	// The kernel keeps at most 15 bytes of a name.
	name = name[:min(len(name), 15)]
	namePtr, err := unix.BytePtrFromString(name)
	if err != nil {
		return // a NUL in the first argument
	}
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(namePtr)), 0, 0, 0)

	// A second pass renames a thread started by one that the first pass had not reached.
	for range 2 {
		renameThreads("exe", name)
	}
}

// renameThreads gives the name to every thread of the process named from. It ignores
// threads that end while it runs.
func renameThreads(from, name string) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, task := range tasks {
		path := filepath.Join("/proc/self/task", task.Name(), "comm")
		comm, err := os.ReadFile(path)
		if err != nil || string(bytes.TrimSpace(comm)) != from {
			continue
		}
		_ = os.WriteFile(path, []byte(name), 0)
	}
}
