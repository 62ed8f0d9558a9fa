//go:build !linux

package main

// mallocTunables is empty outside Linux, where kmsd does not set GLIBC_TUNABLES.
const mallocTunables = ""

// execWithMallocTunables does nothing outside Linux, where glibc is not the C library.
func execWithMallocTunables([]string, func(string) (string, bool)) error { return nil }
