package softhsmsetup

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestRestoreTokenFiles(t *testing.T) {
	sound := bytes.Repeat([]byte("token file "), 29) // 319 bytes
	tests := []struct {
		name        string
		current     []byte // nil: no token file
		copyFile    func(t *testing.T, path string)
		wantRestore bool
	}{
		{"empty token file", []byte{}, writeCopyOf(sound), true},
		{"cut-short token file", sound[:100], writeCopyOf(sound), true},
		{"missing token file", nil, writeCopyOf(sound), true},
		{"token file as long as the copy", bytes.Repeat([]byte("x"), len(sound)),
			writeCopyOf(sound), false},
		{"no copy", sound[:100], func(*testing.T, string) {}, false},
		{"copy with bytes appended", sound[:100], func(t *testing.T, path string) {
			writeFile(t, path, append(encodeCopy(sound), 'x'))
		}, false},
		{"copy with a byte changed", sound[:100], func(t *testing.T, path string) {
			b := encodeCopy(sound)
			b[len(b)-1] ^= 1
			writeFile(t, path, b)
		}, false},
		{"copy without its header", sound[:100], func(t *testing.T, path string) {
			writeFile(t, path, sound)
		}, false},
		{"copy as a symbolic link to a sound copy", sound[:100], func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "elsewhere")
			writeFile(t, target, encodeCopy(sound))
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			folder := filepath.Join(dataDir, "tokens", "2d9f1668-2a04-ea46-3fa8-b2ca1153b906")
			if err := os.MkdirAll(folder, 0o700); err != nil {
				t.Fatal(err)
			}
			tokenFile := filepath.Join(folder, "token.object")
			if tt.current != nil {
				writeFile(t, tokenFile, tt.current)
			}
			if err := os.MkdirAll(filepath.Join(dataDir, tokenCopiesDir), 0o700); err != nil {
				t.Fatal(err)
			}
			tt.copyFile(t, filepath.Join(dataDir, tokenCopiesDir, filepath.Base(folder)))

			restored, err := restoreTokenFiles(dataDir)
			if err != nil {
				t.Fatal(err)
			}

			got, _ := os.ReadFile(tokenFile)
			if tt.wantRestore {
				if len(restored) != 1 || restored[0] != tokenFile {
					t.Errorf("restored = %q, want [%s]", restored, tokenFile)
				}
				if !bytes.Equal(got, sound) {
					t.Errorf("token file has %d bytes after the restore, want the copy's %d",
						len(got), len(sound))
				}
				return
			}
			if len(restored) != 0 {
				t.Errorf("restored = %q, want none", restored)
			}
			if !bytes.Equal(got, tt.current) {
				t.Errorf("token file changed to %d bytes, want it left at %d", len(got),
					len(tt.current))
			}
		})
	}
}

func TestSaveTokenFilesReplacesDamagedCopy(t *testing.T) {
	dataDir := t.TempDir()
	folder := filepath.Join(dataDir, "tokens", "2d9f1668-2a04-ea46-3fa8-b2ca1153b906")
	if err := os.MkdirAll(filepath.Join(dataDir, tokenCopiesDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	sound := bytes.Repeat([]byte("token file "), 29)
	writeFile(t, filepath.Join(folder, "token.object"), sound)
	copyPath := filepath.Join(dataDir, tokenCopiesDir, filepath.Base(folder))
	// Longer than the token file, which a sound copy would keep, but damaged.
	writeFile(t, copyPath, append(encodeCopy(sound), 'x'))

	if err := SaveTokenFiles(dataDir); err != nil {
		t.Fatal(err)
	}

	content, ok, err := readCopy(copyPath)
	if err != nil || !ok {
		t.Fatalf("copy after SaveTokenFiles: ok %v, error %v; want a sound copy", ok, err)
	}
	if !bytes.Equal(content, sound) {
		t.Errorf("copy holds %d bytes, want the token file's %d", len(content), len(sound))
	}
}

// writeCopyOf returns a function that writes a sound copy of content to a path.
func writeCopyOf(content []byte) func(*testing.T, string) {
	return func(t *testing.T, path string) { writeFile(t, path, encodeCopy(content)) }
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSaveTokenFilesReplacesLinkedCopy(t *testing.T) {
	dataDir := t.TempDir()
	folder := filepath.Join(dataDir, "tokens", "2d9f1668-2a04-ea46-3fa8-b2ca1153b906")
	if err := os.MkdirAll(filepath.Join(dataDir, tokenCopiesDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	sound := bytes.Repeat([]byte("token file "), 29)
	writeFile(t, filepath.Join(folder, "token.object"), sound)
	// A symbolic link, which restoreTokenFiles never follows, to a sound copy.
	target := filepath.Join(t.TempDir(), "elsewhere")
	writeFile(t, target, encodeCopy(sound))
	copyPath := filepath.Join(dataDir, tokenCopiesDir, filepath.Base(folder))
	if err := os.Symlink(target, copyPath); err != nil {
		t.Fatal(err)
	}

	if err := SaveTokenFiles(dataDir); err != nil {
		t.Fatal(err)
	}

	if _, ok, err := readCopy(copyPath); err != nil || !ok {
		t.Errorf("copy after SaveTokenFiles: ok %v, error %v; want a regular sound copy", ok,
			err)
	}
}
