package softhsmsetup

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// lowSpaceBytes is the free space below which a failed token set-up names the free
// space. A new SoftHSM2 token writes a few KiB: its token file, generation file and
// lock file.
const lowSpaceBytes = 1 << 20

// withSpaceHint returns err with the free space of dir's file system added when that is
// below lowSpaceBytes, and err unchanged otherwise. SoftHSM2 reports a write that fails
// for want of space as CKR_DEVICE_ERROR, which does not say so.
func withSpaceHint(err error, dir string) error {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil {
		return err
	}

	free := fs.Bavail * uint64(fs.Bsize)
	if free >= lowSpaceBytes {
		return err
	}
	return fmt.Errorf("%w (the file system of %s has %d KiB free: free some space and "+
		"start again)", err, dir, free/1024)
}
