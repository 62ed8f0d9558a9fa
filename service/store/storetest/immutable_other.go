//go:build !linux

package storetest

import "testing"

// SetImmutable skips t: the immutable flag is set with a Linux ioctl.
func SetImmutable(t testing.TB, path string) {
	t.Helper()
	t.Skipf("cannot make %s immutable: the test sets the flag with a Linux ioctl", path)
}

// ClearImmutable does nothing: SetImmutable skipped the test.
func ClearImmutable(testing.TB, string) {}
