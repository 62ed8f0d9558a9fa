//go:build unix

package store_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

// TestOpenSQLiteFileMode is not parallel because it sets the process umask, which SQLite
// applies to the files it creates. With umask 022 SQLite alone creates mode 0644 files.
func TestOpenSQLiteFileMode(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))

	path := filepath.Join(t.TempDir(), "kms.db")
	s := openStore(t, storetest.Backend{Name: storetest.SQLite, URL: path})
	createKey(t, s, newKey(t, "p1", "a")) // a write creates the -wal and -shm files

	for _, file := range []string{path, path + "-wal", path + "-shm"} {
		info, err := os.Stat(file)
		if err != nil {
			t.Errorf("stat: %v", err)
			continue
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", filepath.Base(file), perm)
		}
	}
}

func TestOpenSQLiteExistingFileMode(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		perm        os.FileMode
		wantWarning bool
	}{
		{"owner only", 0o600, false},
		{"readable by others", 0o644, true},
		{"writable by group", 0o620, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "kms.db")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}

			var logs bytes.Buffer
			s, err := store.Open(t.Context(), path, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}

			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Mode().Perm(); got != tt.perm {
				t.Errorf("mode changed from %#o to %#o", tt.perm, got)
			}
			warned := strings.Contains(logs.String(), "level=WARN") &&
				strings.Contains(logs.String(), "readable or writable by group or others")
			if warned != tt.wantWarning {
				t.Errorf("warning logged = %v, want %v; log:\n%s", warned, tt.wantWarning,
					logs.String())
			}
		})
	}
}
