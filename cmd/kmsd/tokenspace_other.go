//go:build !linux

package main

import "errors"

// freeBytes is not measured outside Linux, so a failed key generation keeps its own
// error there.
func freeBytes(dir string) (bytes, files uint64, err error) {
	return 0, 0, errors.New("free space is measured on Linux only")
}

// canWrite is not checked outside Linux: a failed key generation keeps its own error.
func canWrite(string) error { return nil }
