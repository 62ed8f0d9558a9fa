//go:build !linux

package store

import "os"

// mapFileRegion is not implemented here: chain files are appended with write(2).
func mapFileRegion(*os.File, int64, int) ([]byte, error) { return nil, errMapUnsupported }

func mapAllocatedRegion(*os.File, int64, int) ([]byte, error) { return nil, errMapUnsupported }

func unmapFileRegion([]byte) error { return nil }

// notWritableCause returns "": the cause is not looked up here.
func notWritableCause(*os.File) string { return "" }
