package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/hsmkms/kms/service/store"
)

// dataDirLockFile, in the data directory, is the file whose flock keeps a data directory
// to the kmsd processes of one store. The directory holds one embedded token and one
// admin credentials file, which two stores must not share.
const dataDirLockFile = "kmsd.lock"

// errDataDirInUse means that another kmsd process holds the data directory's lock in a
// way that this one cannot share.
var errDataDirInUse = errors.New("the data directory is in use by another kmsd process")

// lockDataDir takes a non-blocking flock on dataDir/kmsd.lock (created with mode 0600)
// and returns the function that releases it. A kmsd on a SQLite store takes it
// exclusively and writes its PID into the file. Replicas on PostgreSQL (shared true) take
// it shared, so they can share a data directory with each other but not with a kmsd on a
// SQLite store. They empty the file, so that it names no PID of a past holder. The kernel
// releases the lock when the process ends.
func lockDataDir(dataDir string, shared bool) (release func() error, err error) {
	path, err := filepath.Abs(filepath.Join(dataDir, dataDirLockFile))
	if err != nil {
		return nil, fmt.Errorf("resolve the data directory's lock file: %w", err)
	}
	f, err := store.OpenLockFile(path)
	if err != nil {
		return nil, err
	}

	mode := unix.LOCK_EX
	if shared {
		mode = unix.LOCK_SH
	}
	for {
		err = unix.Flock(int(f.Fd()), mode|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := ""
		if pid := store.ReadLockPID(f); pid > 0 {
			holder = fmt.Sprintf("PID %d, ", pid)
		}
		f.Close()
		return nil, fmt.Errorf("%w: %s (%slock file %s). Only replicas on one PostgreSQL "+
			"store may share a data directory: stop the other process, or give this kmsd "+
			"another --data-dir", errDataDirInUse, filepath.Dir(path), holder, path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}

	content := ""
	if !shared {
		content = strconv.Itoa(os.Getpid()) + "\n"
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close, nil
}
