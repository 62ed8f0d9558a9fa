package storetest

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// fsImmutableFlag is FS_IMMUTABLE_FL of linux/fs.h, the inode flag that chattr +i sets.
const fsImmutableFlag = 0x00000010

// SetImmutable makes the file at path immutable, as chattr +i does, until ClearImmutable
// or the end of t. It skips t when the file system does not support the flag or the
// process lacks CAP_LINUX_IMMUTABLE.
func SetImmutable(t testing.TB, path string) {
	t.Helper()
	err := setInodeFlag(path, fsImmutableFlag, true)
	switch {
	case errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) ||
		errors.Is(err, unix.EINVAL):
		var fs unix.Statfs_t
		_ = unix.Statfs(path, &fs)
		t.Skipf("the file system of %s (magic number %#x) does not support the immutable "+
			"flag (chattr +i): %v", path, fs.Type, err)
	case errors.Is(err, unix.EPERM):
		t.Skipf("setting the immutable flag (chattr +i) of %s needs CAP_LINUX_IMMUTABLE, "+
			"which root has: %v", path, err)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = setInodeFlag(path, fsImmutableFlag, false) })
}

// ClearImmutable makes the file at path writable again, as chattr -i does.
func ClearImmutable(t testing.TB, path string) {
	t.Helper()
	if err := setInodeFlag(path, fsImmutableFlag, false); err != nil {
		t.Fatal(err)
	}
}

// setInodeFlag sets or clears flag among the inode flags of the file at path
// (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS).
func setInodeFlag(path string, flag uint32, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return &os.PathError{Op: "read inode flags", Path: path, Err: err}
	}
	if on {
		flags |= flag
	} else {
		flags &^= flag
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags))
	if err != nil {
		return &os.PathError{Op: "set inode flags", Path: path, Err: err}
	}
	return nil
}
