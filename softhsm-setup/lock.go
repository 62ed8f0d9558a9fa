package softhsmsetup

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// setupLockFile, in the data directory, is the file whose flock makes Ensure calls of
// several processes on one data directory run one after the other. Replicas on
// PostgreSQL may share a data directory, and two first starts at one moment would
// otherwise each write their own PINs and remove each other's staging token directory.
const setupLockFile = "setup.lock"

// lockSetup creates dataDir with mode 0700 when it is missing, then waits for an
// exclusive flock on dataDir/setup.lock (created with mode 0600), and returns the
// function that releases it. The kernel also releases the lock when the process ends,
// so a lock file left by a killed process blocks no other process.
//
// NOTE: the wait has no time limit, because Ensure takes no context: a process that
// hangs inside Ensure holding the lock makes every other Ensure on dataDir wait until
// it ends.
func lockSetup(dataDir string) (unlock func(), err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the data directory: %w", err)
	}
	path := filepath.Join(dataDir, setupLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the set-up lock file: %w", err)
	}

	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}
