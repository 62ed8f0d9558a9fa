//go:build unix

package store_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
)

// lockHolderPath names the database file that the child process of startLockHolder
// opens for writing.
const lockHolderPath = "KMS_STORE_TEST_LOCK_HOLDER_PATH"

// TestLockHolderProcess is the child process of startLockHolder, and passes at once when
// run by itself. It opens the store, writes "opened" to stdout, and closes the store when
// its stdin ends.
func TestLockHolderProcess(t *testing.T) {
	path := os.Getenv(lockHolderPath)
	if path == "" {
		return
	}
	s, err := store.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	fmt.Println("opened")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // returns when stdin ends
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// lockHolder is a child process that holds the store at a path open for writing.
type lockHolder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startLockHolder starts a child process that opens the SQLite store at path for
// writing, and returns once the store is open. The child ends with t.
func startLockHolder(t *testing.T, path string) *lockHolder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHolderProcess$")
	cmd.Env = append(os.Environ(), lockHolderPath+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &lockHolder{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = stdin.Close()
			_ = cmd.Wait()
		}
	})

	opened := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		opened <- line
	}()
	select {
	case line := <-opened:
		if line != "opened\n" {
			t.Fatalf("the lock holder process wrote %q, want \"opened\"", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the lock holder process did not open the store within 30 s")
	}
	return h
}

// kill ends the holder with SIGKILL, so that it cannot release the lock itself.
func (h *lockHolder) kill(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
}

// openAndClose opens the store at databaseURL and closes it again.
func openAndClose(t *testing.T, databaseURL string) error {
	t.Helper()
	s, err := store.Open(t.Context(), databaseURL, nil)
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	return nil
}

// holdFlock takes an exclusive flock on the file at path, which it creates with content,
// as a process that locks the file but writes no PID would. It is released with t.
func holdFlock(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSQLiteStoreInUse(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// hold makes the store at path busy, and returns the PID that the error must name,
		// or 0 when it must name none.
		hold func(t *testing.T, path string) int
		// second returns the URL of the second Open of the file at path.
		second func(t *testing.T, path string) string
		// wantInUse is whether the second Open fails with ErrStoreInUse.
		wantInUse bool
	}{
		{
			name:      "writer in another process",
			hold:      func(t *testing.T, path string) int { return startLockHolder(t, path).pid() },
			second:    samePath,
			wantInUse: true,
		},
		{
			name:      "writer in this process",
			hold:      holdInThisProcess,
			second:    samePath,
			wantInUse: true,
		},
		{
			name:      "writer through another spelling of the path",
			hold:      func(t *testing.T, path string) int { return startLockHolder(t, path).pid() },
			second:    sameFileThroughSymlink,
			wantInUse: true,
		},
		{
			name: "writer with sqlite: prefix and parameters",
			hold: holdInThisProcess,
			second: func(t *testing.T, path string) string {
				return "sqlite:" + path + "?_busy_timeout=100"
			},
			wantInUse: true,
		},
		{
			name: "writer through a symbolic link followed by ..",
			hold: holdInThisProcess,
			second: func(t *testing.T, path string) string {
				// link/.. is the parent of the link's target, inner/.., for the kernel,
				// and the link's own directory for filepath.Clean.
				inner := filepath.Join(filepath.Dir(path), "inner")
				if err := os.Mkdir(inner, 0o700); err != nil {
					t.Fatal(err)
				}
				link := filepath.Join(t.TempDir(), "link")
				if err := os.Symlink(inner, link); err != nil {
					t.Fatal(err)
				}
				return link + "/../" + filepath.Base(path)
			},
			wantInUse: true,
		},
		{
			name: "writer through a file://localhost URL",
			hold: holdInThisProcess,
			second: func(t *testing.T, path string) string {
				return "file://localhost" + path
			},
			wantInUse: true,
		},
		{
			name: "writer through a file:/// URL",
			hold: holdInThisProcess,
			second: func(t *testing.T, path string) string {
				return "file://" + path
			},
			wantInUse: true,
		},
		{
			name: "lock file without a PID",
			hold: func(t *testing.T, path string) int {
				holdFlock(t, path+"-kmsd.lock", "not a PID: secret-looking text\n")
				return 0
			},
			second:    samePath,
			wantInUse: true,
		},
		{
			name: "read-only opener next to a writer",
			hold: func(t *testing.T, path string) int { return startLockHolder(t, path).pid() },
			second: func(t *testing.T, path string) string {
				return "file:" + path + "?mode=ro"
			},
			wantInUse: false,
		},
		{
			name: "writer next to a read-only opener",
			hold: func(t *testing.T, path string) int {
				if err := openAndClose(t, path); err != nil { // creates the file
					t.Fatal(err)
				}
				s, err := store.Open(t.Context(), "file:"+path+"?mode=ro", nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return 0
			},
			second:    samePath,
			wantInUse: false,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(realTempDir(t), "kms.db")
			pid := tt.hold(t, path)

			err := openAndClose(t, tt.second(t, path))
			if !tt.wantInUse {
				if err != nil {
					t.Fatalf("second Open failed: %v", err)
				}
				return
			}
			checkStoreInUse(t, err, path, pid)
		})
	}
}

// holdInThisProcess opens the store at path for writing in this process until t ends.
func holdInThisProcess(t *testing.T, path string) int {
	s, err := store.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return os.Getpid()
}

func samePath(t *testing.T, path string) string { return path }

// sameFileThroughSymlink returns a path of the file at path through a symbolic link to
// its directory.
func sameFileThroughSymlink(t *testing.T, path string) string {
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Dir(path), link); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(link, filepath.Base(path))
}

// realTempDir returns t.TempDir() without symbolic links, as lock file paths are.
func realTempDir(t *testing.T) string {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func (h *lockHolder) pid() int { return h.cmd.Process.Pid }

// checkStoreInUse checks that err wraps ErrStoreInUse and names the lock file of the
// database at path and the PID pid, or no PID when pid is 0.
func checkStoreInUse(t *testing.T, err error, path string, pid int) {
	t.Helper()
	if !errors.Is(err, store.ErrStoreInUse) {
		t.Fatalf("second Open: %v, want an error wrapping ErrStoreInUse", err)
	}
	var inUse *store.StoreInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second Open: %T is not a *StoreInUseError", err)
	}

	lockFile := path + "-kmsd.lock"
	msg := err.Error()
	if !strings.Contains(msg, lockFile) {
		t.Errorf("error %q does not name the lock file %s", msg, lockFile)
	}
	if inUse.LockPath != lockFile {
		t.Errorf("LockPath = %q, want %q", inUse.LockPath, lockFile)
	}
	if inUse.PID != pid {
		t.Errorf("PID = %d, want %d", inUse.PID, pid)
	}
	if pid > 0 && !strings.Contains(msg, "(PID "+strconv.Itoa(pid)+",") {
		t.Errorf("error %q does not name PID %d", msg, pid)
	}
	if pid == 0 && strings.Contains(msg, "(PID") {
		t.Errorf("error %q names a PID, want none", msg)
	}
	if strings.Contains(msg, "secret-looking") {
		t.Errorf("error %q contains text of the lock file other than a PID", msg)
	}
}

func TestOpenSQLiteCloseReleasesLock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kms.db")

	s, err := store.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := openAndClose(t, path); !errors.Is(err, store.ErrStoreInUse) {
		t.Fatalf("Open next to an open store: %v, want ErrStoreInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := openAndClose(t, path); err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
}

func TestOpenSQLiteLockFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kms.db")

	s, err := store.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	lockFile := path + "-kmsd.lock"
	info, err := os.Stat(lockFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("lock file has mode %#o, want 0600", perm)
	}
	content, err := os.ReadFile(lockFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(os.Getpid()) + "\n"; string(content) != want {
		t.Errorf("lock file contains %q, want this process's PID %q", content, want)
	}
}

func TestOpenSQLiteNoLockFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "kms.db")
	if err := openAndClose(t, path); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + "-kmsd.lock"); err != nil {
		t.Fatal(err)
	}

	for _, databaseURL := range []string{":memory:", "file:" + path + "?mode=ro"} {
		s, err := store.Open(t.Context(), databaseURL, nil)
		if err != nil {
			t.Fatalf("Open(%s): %v", databaseURL, err)
		}
		s.Close()
		if _, err := os.Stat(path + "-kmsd.lock"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%s) created a lock file: %v", databaseURL, err)
		}
	}
}

func TestOpenSQLiteStaleLockFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kms.db")

	holder := startLockHolder(t, path)
	if err := openAndClose(t, path); !errors.Is(err, store.ErrStoreInUse) {
		t.Fatalf("Open next to the holder: %v, want ErrStoreInUse", err)
	}
	holder.kill(t)

	content, err := os.ReadFile(path + "-kmsd.lock")
	if err != nil {
		t.Fatalf("the killed holder left no lock file: %v", err)
	}
	if want := strconv.Itoa(holder.pid()) + "\n"; string(content) != want {
		t.Errorf("lock file contains %q, want the killed holder's PID %q", content, want)
	}
	if err := openAndClose(t, path); err != nil {
		t.Fatalf("Open after the holder was killed: %v", err)
	}
}

func TestLockSQLiteThenOpenLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new", "kms.db")

	lock, err := store.LockSQLite(path)
	if err != nil {
		t.Fatalf("LockSQLite: %v", err)
	}
	defer lock.Release()
	if err := openAndClose(t, path); !errors.Is(err, store.ErrStoreInUse) {
		t.Fatalf("Open next to the lock: %v, want ErrStoreInUse", err)
	}

	s, err := store.OpenLocked(t.Context(), path, lock, nil)
	if err != nil {
		t.Fatalf("OpenLocked with the lock: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := openAndClose(t, path); !errors.Is(err, store.ErrStoreInUse) {
		t.Errorf("Open after closing a store opened with OpenLocked: %v, want "+
			"ErrStoreInUse, because the caller still holds the lock", err)
	}

	other := filepath.Join(t.TempDir(), "other.db")
	if _, err := store.OpenLocked(t.Context(), other, lock, nil); err == nil {
		t.Error("OpenLocked accepted the lock of another database file")
	}

	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenLocked(t.Context(), path, lock, nil); err == nil {
		t.Error("OpenLocked accepted a released lock")
	}
	if err := openAndClose(t, path); err != nil {
		t.Errorf("Open after Release: %v", err)
	}
}

func TestLockSQLiteWithoutLock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kms.db")

	for _, databaseURL := range []string{
		":memory:",
		"file:" + path + "?mode=ro",
		"file:" + path + "?mode=memory",
		"postgres://kms@127.0.0.1:5432/kms",
	} {
		lock, err := store.LockSQLite(databaseURL)
		if err != nil || lock != nil {
			t.Errorf("LockSQLite(%s) = %v, %v; want no lock and no error", databaseURL,
				lock, err)
		}
	}
	if _, err := os.Stat(path + "-kmsd.lock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LockSQLite created a lock file: %v", err)
	}
}

func TestOpenLockFileErrors(t *testing.T) {
	tests := []struct {
		name  string
		plant func(t *testing.T, path string)
		want  string
	}{
		{
			name: "symbolic link",
			plant: func(t *testing.T, path string) {
				target := filepath.Join(t.TempDir(), "target")
				if err := os.WriteFile(target, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
			},
			want: "is a symbolic link, which kmsd does not follow: remove it",
		},
		{
			name: "directory",
			plant: func(t *testing.T, path string) {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			},
			want: "is a directory: remove it",
		},
		{
			name: "immutable file",
			plant: func(t *testing.T, path string) {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
					t.Skipf("chattr +i: %v: %s", err, out)
				}
				t.Cleanup(func() { _ = exec.Command("chattr", "-i", path).Run() })
			},
			want: "check its owner, mode and attributes (lsattr)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kms.db-kmsd.lock")
			tc.plant(t, path)

			f, err := store.OpenLockFile(path)
			if err == nil {
				f.Close()
				t.Fatal("OpenLockFile succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q, want one naming %s and containing %q", err, path, tc.want)
			}
		})
	}
}
