//go:build !linux

package main

import "errors"

// mallocTunables is empty outside Linux, where kmsd does not set GLIBC_TUNABLES.
const mallocTunables = ""

// errSecureExecution is never returned outside Linux.
var errSecureExecution = errors.New("secure-execution mode")

// execWithMallocTunables does nothing outside Linux, where glibc is not the C library.
func execWithMallocTunables([]string, func(string) (string, bool)) error { return nil }
