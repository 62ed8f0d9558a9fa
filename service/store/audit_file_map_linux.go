package store

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// mapFileRegion allocates the blocks of the region [off, off+length) of f, growing the
// file to cover it, and maps the region into memory for writing. Allocating first means
// a store to the mapping never needs a block that the disk cannot give: a full disk
// fails here with ENOSPC instead of killing the process with SIGBUS on a later store.
// off must be a multiple of the page size.
func mapFileRegion(f *os.File, off int64, length int) ([]byte, error) {
	fd := int(f.Fd())
	for {
		err := syscall.Fallocate(fd, 0, off, int64(length))
		if err == nil {
			break
		}
		if errors.Is(err, syscall.EOPNOTSUPP) {
			return nil, errMapUnsupported
		}
		if !errors.Is(err, syscall.EINTR) {
			return nil, err
		}
	}
	return mapAllocatedRegion(f, off, length)
}

// mapAllocatedRegion maps the region [off, off+length) of f, which mapFileRegion
// allocated before, into memory for writing. off must be a multiple of the page size.
func mapAllocatedRegion(f *os.File, off int64, length int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), off, length, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_SHARED)
}

// unmapFileRegion removes a mapping made by mapFileRegion.
func unmapFileRegion(m []byte) error { return syscall.Munmap(m) }

// notWritableCause returns why f cannot be written, as far as its attributes and the
// mount flags of its file system show, or "" when they show no cause.
func notWritableCause(f *os.File) string {
	fd := int(f.Fd())
	var stat unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, &stat)
	switch {
	case err == nil && stat.Attributes&unix.STATX_ATTR_IMMUTABLE != 0:
		return "the file is immutable; chattr -i clears the flag"
	case err == nil && stat.Attributes&unix.STATX_ATTR_APPEND != 0:
		return "the file is append-only, which a mapped file cannot be; chattr -a clears " +
			"the flag"
	}

	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) == nil && fs.Flags&unix.ST_RDONLY != 0 {
		return "the file system is read-only"
	}
	return ""
}
