package main

import (
	"fmt"
	"math"
	"syscall"

	"golang.org/x/sys/unix"
)

// freeBytes returns the bytes available to an unprivileged user in the volume of dir, and
// its free inodes. The blocks that the file system reserves for root do not count, even
// when kmsd runs as root. statfs counts as free some blocks that not even root can use
// (ext4's reserved clusters), and only the unprivileged figure leaves them out. A file system without an inode limit, such as btrfs, reports no inodes at
// all, and gets math.MaxUint64 free inodes.
func freeBytes(dir string) (bytes, files uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}

	files = st.Ffree
	if st.Files == 0 {
		files = math.MaxUint64
	}
	return st.Bavail * uint64(st.Bsize), files, nil
}

// canWrite returns nil when this process may write path. access(2) also refuses root
// a file or folder with the immutable flag, or on a read-only mount.
func canWrite(path string) error {
	if err := unix.Access(path, unix.W_OK); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
