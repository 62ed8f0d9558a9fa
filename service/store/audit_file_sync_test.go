package store

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func TestFdatasyncInBackground(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "chain"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteString("line\n"); err != nil {
		t.Fatal(err)
	}
	pipeRead, pipeWrite, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeRead.Close()
	defer pipeWrite.Close()

	tests := []struct {
		name string
		file *os.File
		want error
	}{
		{"regular file", file, nil},
		{"pipe", pipeWrite, syscall.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fdatasyncInBackground(tc.file)
			if tc.want == nil && err != nil {
				t.Fatalf("fdatasyncInBackground: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("fdatasyncInBackground error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFdatasyncInBackgroundConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for range 20 {
				if _, err := f.WriteString("line\n"); err != nil {
					t.Error(err)
					return
				}
				if err := fdatasyncInBackground(f); err != nil {
					t.Errorf("fdatasyncInBackground: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
