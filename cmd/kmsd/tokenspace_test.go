package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store/storetest"
)

// failingToken fails every key generation with err, as SoftHSM2 fails when it cannot write
// an object file: a full volume that a test cannot fill safely.
type failingToken struct {
	hsm.Token
	err error
}

func (f failingToken) GenerateKey(context.Context, hsm.KeyRef) error        { return f.err }
func (f failingToken) GenerateSigningKey(context.Context, hsm.KeyRef) error { return f.err }

func TestTokenSpace(t *testing.T) {
	errFailed := errors.New("C_GenerateKey: CKR_FUNCTION_FAILED")
	errGone := errors.Join(hsm.ErrUnavailable, errors.New("token removed"))

	tests := []struct {
		name            string
		generateErr     error
		free, files     uint64
		statErr         error
		writeErr        error
		wantUnavailable bool
	}{
		{name: "generation succeeds", generateErr: nil},
		{name: "fails with space left", generateErr: errFailed, free: 10 << 20, files: 1000},
		{name: "fails on a full volume", generateErr: errFailed, free: 4096, files: 1000,
			wantUnavailable: true},
		{name: "fails without free inodes", generateErr: errFailed, free: 10 << 20, files: 3,
			wantUnavailable: true},
		{name: "fails and statfs fails", generateErr: errFailed, statErr: errors.New("EACCES")},
		{name: "fails in a folder that cannot be written", generateErr: errFailed,
			free: 10 << 20, files: 1000, writeErr: syscall.EPERM, wantUnavailable: true},
		{name: "already unavailable", generateErr: errGone, wantUnavailable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "token"), 0o700); err != nil {
				t.Fatal(err)
			}
			space := newTokenSpace(failingToken{err: tt.generateErr}, dir)
			space.free = func(string) (uint64, uint64, error) { return tt.free, tt.files, tt.statErr }
			space.writable = func(string) error { return tt.writeErr }

			for op, generate := range map[string]func(context.Context, hsm.KeyRef) error{
				"GenerateKey":        space.GenerateKey,
				"GenerateSigningKey": space.GenerateSigningKey,
			} {
				err := generate(context.Background(), hsm.KeyRef{KeyID: "k", Version: 1})
				if !errors.Is(err, tt.generateErr) {
					t.Errorf("%s = %v, want it to wrap %v", op, err, tt.generateErr)
				}
				if got := errors.Is(err, hsm.ErrUnavailable); got != tt.wantUnavailable {
					t.Errorf("%s = %v, unavailable %t, want %t", op, err, got, tt.wantUnavailable)
				}
			}
		})
	}
}

func TestFreeBytes(t *testing.T) {
	free, files, err := freeBytes(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if free == 0 || files == 0 {
		t.Errorf("freeBytes of a temporary folder = %d bytes, %d inodes, want the space "+
			"left in its volume", free, files)
	}

	if _, _, err := freeBytes("/nonexistent/kms-tokens"); err == nil {
		t.Error("freeBytes of a missing folder succeeded, want an error")
	}
}

// TestCheckWritableImmutableFolder makes a token folder immutable, as a read-only volume
// would leave it for root too, and checks that CheckWritable reports it until the flag
// is cleared.
func TestCheckWritableImmutableFolder(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "token")
	if err := os.Mkdir(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(folder, "generation"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	space := newTokenSpace(nil, dir)
	if err := space.CheckWritable(); err != nil {
		t.Fatalf("CheckWritable on a writable folder: %v", err)
	}

	for _, path := range []string{folder, filepath.Join(folder, "generation")} {
		storetest.SetImmutable(t, path)
		if err := space.CheckWritable(); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("CheckWritable with %s immutable = %v, want %v", path, err,
				hsm.ErrUnavailable)
		}
		storetest.ClearImmutable(t, path)
	}

	if err := space.CheckWritable(); err != nil {
		t.Errorf("CheckWritable after the flags were cleared: %v", err)
	}
}

// TestCheckWritableFullVolume checks that /readyz's check reports a token volume that is
// nearly out of space or inodes, where key creation fails while data keys work.
func TestCheckWritableFullVolume(t *testing.T) {
	tests := []struct {
		name            string
		free, files     uint64
		statErr         error
		wantUnavailable bool
	}{
		{name: "space left", free: 10 << 20, files: 1000},
		{name: "nearly no bytes", free: 4096, files: 1000, wantUnavailable: true},
		{name: "nearly no inodes", free: 10 << 20, files: 3, wantUnavailable: true},
		{name: "statfs fails", statErr: errors.New("EACCES")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "token"), 0o700); err != nil {
				t.Fatal(err)
			}
			space := newTokenSpace(failingToken{}, dir)
			space.free = func(string) (uint64, uint64, error) { return tt.free, tt.files, tt.statErr }
			space.writable = func(string) error { return nil }

			err := space.CheckWritable()
			if got := errors.Is(err, hsm.ErrUnavailable); got != tt.wantUnavailable {
				t.Errorf("CheckWritable = %v, unavailable %t, want %t", err, got, tt.wantUnavailable)
			}
		})
	}
}
