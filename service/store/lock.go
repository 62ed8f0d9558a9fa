package store

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrStoreInUse means that another process, or another SQLStore of this process, holds
// the lock of a writable SQLite file store. Errors that wrap it are a *StoreInUseError.
var ErrStoreInUse = errors.New("the SQLite store is in use by another process")

// lockFileSuffix is appended to the database file's path to name its lock file.
const lockFileSuffix = "-kmsd.lock"

// lockFileMode is the mode of a new lock file.
const lockFileMode = 0o600

// maxPIDBytes bounds what is read from a lock file: a PID and a newline.
const maxPIDBytes = 32

// StoreInUseError is the error of Open and LockSQLite when the lock file of a SQLite
// file store is locked by another open file description: another process, or another
// SQLStore or FileLock of this process.
type StoreInUseError struct {
	DatabasePath string // absolute path of the database file
	LockPath     string // absolute path of the lock file
	// PID is the process ID that the lock file contains, or 0 when it contains none,
	// as when its holder has locked it but not written its PID yet.
	PID int
}

func (e *StoreInUseError) Error() string {
	switch {
	case e.PID == os.Getpid():
		return fmt.Sprintf("the SQLite store %s is already open for writing in this "+
			"process (PID %d, lock file %s)", e.DatabasePath, e.PID, e.LockPath)
	case e.PID > 0:
		return fmt.Sprintf("the SQLite store %s is in use by another process (PID %d, "+
			"lock file %s)", e.DatabasePath, e.PID, e.LockPath)
	default:
		return fmt.Sprintf("the SQLite store %s is in use by another process (lock file %s)",
			e.DatabasePath, e.LockPath)
	}
}

// Is reports whether target is ErrStoreInUse.
func (e *StoreInUseError) Is(target error) bool { return target == ErrStoreInUse }

// FileLock is an exclusive flock(2) on the lock file of a SQLite file store, which makes
// sure that one process at a time writes the database and its audit chain files. The
// kernel releases it when its file descriptor is closed, also when the process is
// killed, so a lock file left behind does not block the next Open. It is safe for
// concurrent use.
type FileLock struct {
	path string // absolute path of the lock file

	mu sync.Mutex
	f  *os.File // nil once released
}

// Path returns the absolute path of the lock file.
func (l *FileLock) Path() string { return l.path }

// held reports whether l is not released yet.
func (l *FileLock) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f != nil
}

// Release closes the lock file, which releases the lock. Calls after the first do
// nothing. It is safe on a nil *FileLock.
func (l *FileLock) Release() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("release the lock file %s: %w", l.path, err)
	}
	return nil
}

// LockSQLite takes the lock that Open takes on a SQLite file store opened for writing,
// without opening the database, so that a program can fail before it starts work that
// must not run next to another writer of the store. Pass the lock to OpenLocked, and
// release it after closing the store.
//
// It returns a nil lock and no error for a URL that takes no lock: a PostgreSQL URL,
// ":memory:", mode=memory and mode=ro. It rejects the URLs that Open rejects before it
// picks a backend. When another process holds the lock, the error wraps ErrStoreInUse.
func LockSQLite(databaseURL string) (*FileLock, error) {
	if err := checkDatabaseURL(databaseURL); err != nil {
		return nil, err
	}
	if IsPostgresURL(databaseURL) {
		return nil, nil
	}

	path, params, err := parseSQLiteURL(databaseURL)
	if err != nil {
		return nil, err
	}
	if !takesLock(path, params) {
		return nil, nil
	}
	if params.Get("mode") != "rw" {
		// Open would create the missing directory for the database file (see
		// prepareSQLiteFile), so it is created for the lock file now.
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create the database file's directory: %w", err)
		}
	}
	return lockSQLiteFile(path)
}

// takesLock reports whether a SQLite store at path opened with params takes a FileLock:
// a file opened for writing does, an in-memory or read-only (mode=ro) database does not.
func takesLock(path string, params url.Values) bool {
	mode := params.Get("mode")
	return path != ":memory:" && mode != "memory" && mode != "ro"
}

// lockPath returns the absolute paths of the database file at path and of its lock file,
// beside it. Symbolic links in the path are resolved, as far as they exist, so that two
// paths of one database file name one lock file.
func lockPath(path string) (dbPath, lockFile string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", fmt.Errorf("resolve the database file's path: %w", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	} else if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		// The database file does not exist yet, which LockSQLite allows.
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	return abs, abs + lockFileSuffix, nil
}

// lockSQLiteFile takes an exclusive, non-blocking flock on the lock file of the database
// file at path, creating the lock file with lockFileMode, and writes this process's PID
// into it. When the lock is held elsewhere, the error is a *StoreInUseError.
func lockSQLiteFile(path string) (*FileLock, error) {
	dbPath, lockFile, err := lockPath(path)
	if err != nil {
		return nil, err
	}

	f, err := OpenLockFile(lockFile)
	if err != nil {
		return nil, err
	}

	if err := Flock(f, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		pid := ReadLockPID(f)
		f.Close()
		return nil, &StoreInUseError{DatabasePath: dbPath, LockPath: lockFile, PID: pid}
	} else if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", lockFile, err)
	}

	if err := writeLockPID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the PID into %s: %w", lockFile, err)
	}
	return &FileLock{path: lockFile, f: f}, nil
}

// Flock applies the flock(2) operation op (unix.LOCK_EX, unix.LOCK_SH, with or without
// unix.LOCK_NB) to f, trying again when a signal interrupts it. With unix.LOCK_NB it
// fails with unix.EWOULDBLOCK while another open file description holds a conflicting
// lock.
func Flock(f *os.File, op int) error {
	for {
		err := unix.Flock(int(f.Fd()), op)
		if err != unix.EINTR {
			return err
		}
	}
}

// writeLockPID replaces the content of the lock file f with this process's PID.
func writeLockPID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// ReadLockPID returns the PID in the lock file f, or 0 when its content is not a
// positive integer. Nothing else of the file should reach a message, because another
// program may have written anything there.
func ReadLockPID(f *os.File) int {
	buf := make([]byte, maxPIDBytes)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// SQLiteModes reports whether databaseURL names a SQLite database that lives only in
// memory (":memory:" or mode=memory), and whether it opens the file read-only (mode=ro,
// or immutable set to a true value, which SQLite takes as a file no one writes). Both
// are false for a PostgreSQL URL and for a URL that Open rejects.
func SQLiteModes(databaseURL string) (inMemory, readOnly bool) {
	if IsPostgresURL(databaseURL) || checkDatabaseURL(databaseURL) != nil {
		return false, false
	}
	path, params, err := parseSQLiteURL(databaseURL)
	if err != nil {
		return false, false
	}
	mode := params.Get("mode")
	immutable := false
	switch strings.ToLower(params.Get("immutable")) {
	case "1", "true", "yes", "on":
		immutable = true
	}
	return path == ":memory:" || mode == "memory", mode == "ro" || immutable
}

// OpenLockFile opens the lock file at path for reading and writing, creating it with
// lockFileMode, without following a symbolic link in its place: the PID written into it
// must not reach another file. Its errors name the fix for a symbolic link, a
// directory or a file that this user may not write.
func OpenLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, lockFileMode)
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("the lock file %s is a symbolic link, which kmsd does not "+
			"follow: remove it", path)
	case errors.Is(err, unix.EISDIR):
		return nil, fmt.Errorf("the lock file %s is a directory: remove it", path)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return nil, fmt.Errorf("open the lock file %s: %w; check its owner, mode and "+
			"attributes (lsattr)", path, err)
	}
	return nil, fmt.Errorf("open the lock file %s: %w", path, err)
}
