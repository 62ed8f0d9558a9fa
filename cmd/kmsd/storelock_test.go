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
)

// TestKmsdSecondOnSameDataDirExits starts a second kmsd on the data directory of a
// running one. The second must exit with status 1 within 30 s. Its last log line must be
// an error that names the first one's PID and the lock file. It must neither serve HTTP
// nor change a file of the first one, and the first must keep serving.
func TestKmsdSecondOnSameDataDirExits(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	first := startKmsd(t, dataDir)
	kmsctl(t, first, dataDir, "create-key", "--alias", "before")
	before := snapshotFiles(t, dataDir)

	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, bin, "--data-dir", dataDir, "--listen", freeAddr(t))
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
	t.Logf("last log line of the second kmsd: %s", last)
	if !strings.Contains(last, `level=ERROR msg="kmsd stopped with an error"`) {
		t.Errorf("last log line of the second kmsd is %q, want its error line", last)
	}
	realDataDir, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"is in use by another process",
		"PID " + strconv.Itoa(first.cmd.Process.Pid),
		filepath.Join(realDataDir, "kms.db-kmsd.lock"),
		"--data-dir or --database",
	} {
		if !strings.Contains(last, want) {
			t.Errorf("the error line of the second kmsd lacks %q: %s", want, last)
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
		t.Errorf("list-keys on the first kmsd after the second one exited: %v, want 1 key",
			listed)
	}
	kmsctl(t, first, dataDir, "create-key", "--alias", "after")
	first.stop(t)
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
