package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store/storetest"
)

// TestKmsdSecondOnSameDataDirExits starts a second kmsd that shares the data directory
// or the SQLite file of a running one. The second must exit with status 1 within 30 s.
// Its last log line must be an error that names the first one's PID and the lock file
// it met. It must neither serve HTTP nor change a file of the first one, and the first
// must keep serving.
func TestKmsdSecondOnSameDataDirExits(t *testing.T) {
	tests := []struct {
		name string
		// args returns the second kmsd's flags, given the first one's data directory.
		args func(t *testing.T, dataDir string) []string
		// lockFile is the lock file that the error names, in the first one's directory.
		lockFile string
		want     []string
	}{
		{
			name:     "same data directory",
			args:     func(t *testing.T, dataDir string) []string { return []string{"--data-dir", dataDir} },
			lockFile: "kmsd.lock",
			want:     []string{"the data directory is in use by another kmsd process", "another --data-dir"},
		},
		{
			name: "same data directory, another SQLite file",
			args: func(t *testing.T, dataDir string) []string {
				return []string{"--data-dir", dataDir,
					"--database", filepath.Join(t.TempDir(), "other.db")}
			},
			lockFile: "kmsd.lock",
			want:     []string{"the data directory is in use by another kmsd process", "another --data-dir"},
		},
		{
			name: "same data directory, PostgreSQL",
			args: func(t *testing.T, dataDir string) []string {
				return []string{"--data-dir", dataDir, "--database", storetest.PostgresURL(t)}
			},
			lockFile: "kmsd.lock",
			want: []string{"the data directory is in use by another kmsd process",
				"Only replicas on one PostgreSQL store may share a data directory"},
		},
		{
			name: "another data directory, same SQLite file",
			args: func(t *testing.T, dataDir string) []string {
				return []string{"--data-dir", filepath.Join(t.TempDir(), "other-data"),
					"--database", filepath.Join(dataDir, "kms.db")}
			},
			lockFile: "kms.db-kmsd.lock",
			want:     []string{"is in use by another process", "--data-dir or --database"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "kms-data")
			first := startKmsd(t, dataDir)
			kmsctl(t, first, dataDir, "create-key", "--alias", "before")
			before := snapshotFiles(t, dataDir)

			bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			args := append(tc.args(t, dataDir), "--listen", freeAddr(t))
			second := exec.CommandContext(ctx, bin, args...)
			started := time.Now()
			out, err := second.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("the second kmsd did not exit within 30 s; output:\n%s", out)
			}
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
				t.Fatalf("the second kmsd exited with %v, want status 1; output:\n%s", err, out)
			}
			t.Logf("the second kmsd exited after %v", time.Since(started))

			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, `level=ERROR msg="kmsd stopped with an error"`) {
				t.Errorf("last log line of the second kmsd is %q, want its error line", last)
			}
			realDataDir, err := filepath.EvalSymlinks(dataDir)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]string{"PID " + strconv.Itoa(first.cmd.Process.Pid),
				filepath.Join(realDataDir, tc.lockFile)}, tc.want...)
			for _, w := range want {
				if !strings.Contains(last, w) {
					t.Errorf("the error line of the second kmsd lacks %q: %s", w, last)
				}
			}
			for _, unwanted := range []string{"kmsd serving", "store opened"} {
				if strings.Contains(string(out), unwanted) {
					t.Errorf("the second kmsd logged %q; output:\n%s", unwanted, out)
				}
			}

			after := snapshotFiles(t, dataDir)
			for path, state := range before {
				if after[path] != state {
					t.Errorf("the second kmsd changed %s", path)
				}
			}
			for path := range after {
				if _, ok := before[path]; !ok {
					t.Errorf("the second kmsd created %s", path)
				}
			}

			listed := decodeJSON(t, kmsctl(t, first, dataDir, "list-keys"))
			if keys, _ := listed["keys"].([]any); len(keys) != 1 {
				t.Errorf("list-keys on the first kmsd after the second one exited: %v, "+
					"want 1 key", listed)
			}
			kmsctl(t, first, dataDir, "create-key", "--alias", "after")
			first.stop(t)
		})
	}
}

// fileState is what snapshotFiles records of a file.
type fileState struct {
	size    int64
	modTime time.Time
	sum     [sha256.Size]byte
}

// snapshotFiles returns the state of every regular file under dir, by path, except the
// SQLite database and its -wal and -shm files, which a running kmsd may write while idle.
func snapshotFiles(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	skip := map[string]bool{"kms.db": true, "kms.db-wal": true, "kms.db-shm": true}
	files := map[string]fileState{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || skip[d.Name()] {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[path] = fileState{size: info.Size(), modTime: info.ModTime(),
			sum: sha256.Sum256(data)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
