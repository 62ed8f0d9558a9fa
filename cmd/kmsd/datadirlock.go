package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	err = store.Flock(f, mode|unix.LOCK_NB)
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

// replicasDir, in the data directory, holds one mark file per running replica on
// PostgreSQL, named after its PID and containing its store's id (store.SQLStore.StoreID).
const replicasDir = "replicas"

// errOtherStoreReplica means that a replica of another store uses the data directory.
var errOtherStoreReplica = errors.New("the data directory is in use by a replica of " +
	"another store")

// markReplica records that this replica of the store storeID uses dataDir, after
// checking that no running replica of another store does, and returns the function that
// removes the mark. Replicas on PostgreSQL share the data directory's lock, which cannot
// tell their stores apart. So each one holds an exclusive flock on its own mark file, and
// a mark that another process can lock belongs to a replica that ended and is removed.
// The check and the new mark run under replicas/.lock, so that two replicas of different
// stores that start at one moment cannot both miss each other.
func markReplica(dataDir, storeID string) (remove func(), err error) {
	dir := filepath.Join(dataDir, replicasDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	scan, err := store.OpenLockFile(filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer scan.Close()
	if err := store.Flock(scan, unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", scan.Name(), err)
	}

	marks, err := filepath.Glob(filepath.Join(dir, "*.mark"))
	if err != nil {
		return nil, err
	}
	for _, path := range marks {
		other, alive := readLiveMark(path)
		if alive && other != storeID {
			return nil, fmt.Errorf("%w (mark file %s). Replicas of one PostgreSQL store may "+
				"share a data directory, replicas of two stores may not: give this kmsd "+
				"another --data-dir", errOtherStoreReplica, path)
		}
		if !alive {
			_ = os.Remove(path)
		}
	}

	path := filepath.Join(dir, strconv.Itoa(os.Getpid())+".mark")
	mark, err := store.OpenLockFile(path)
	if err != nil {
		return nil, err
	}
	if err := store.Flock(mark, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		mark.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := mark.Truncate(0); err == nil {
		_, err = mark.WriteAt([]byte(storeID+"\n"), 0)
	}
	if err != nil {
		mark.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return func() {
		_ = os.Remove(path)
		mark.Close()
	}, nil
}

// readLiveMark returns the store id in the mark file at path and whether its replica
// still runs, which it does while it holds its flock on the file.
func readLiveMark(path string) (storeID string, alive bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", false
	}
	defer f.Close()

	if err := store.Flock(f, unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return "", false
	}
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	return strings.TrimSpace(string(buf[:n])), true
}
