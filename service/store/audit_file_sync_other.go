//go:build !linux || !cgo

package store

import "os"

// fdatasyncInBackground is fdatasync here: only the Linux build with cgo runs it on a
// thread of its own.
func fdatasyncInBackground(f *os.File) error { return fdatasync(f) }
