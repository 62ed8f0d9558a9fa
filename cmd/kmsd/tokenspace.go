package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hsmkms/kms/hsm"
)

// minTokenSpace is the free space, in bytes, below which a failed key generation in the
// embedded token is taken for a full volume. minTokenFiles is the same for free inodes:
// each key takes two files, its object and its lock file. A key object file of SoftHSM2 2.6.1 holds
// under 1 KiB, so it fills one 4 KiB block on most file systems, and 1 MiB holds about
// 250 more keys.
const (
	minTokenSpace = 1 << 20
	minTokenFiles = 64
)

// tokenSpace wraps the embedded SoftHSM2 token so that a key generation that fails while
// the volume of the token folder is nearly full reports hsm.ErrUnavailable. SoftHSM2
// 2.6.1 returns CKR_FUNCTION_FAILED when it cannot write an object file, which would
// otherwise become 500 KMS.0101. With this wrapper the caller gets 503 KMS.0102 and may
// retry once space is freed, and the log names the folder and its free space.
//
// A token folder that cannot be written (a read-only volume, chattr +i, or a mode that
// denies kmsd) gets the same treatment, and CheckWritable reports it to /readyz.
type tokenSpace struct {
	hsm.Token
	dir string
	// free returns the bytes and the inodes that an unprivileged process may still use in
	// dir's volume.
	free func(dir string) (bytes, files uint64, err error)
	// writable returns nil when this process may write the file or folder at path.
	writable func(path string) error
}

func newTokenSpace(token hsm.Token, dir string) *tokenSpace {
	return &tokenSpace{Token: token, dir: dir, free: freeBytes, writable: canWrite}
}

// writableChecker is a token that can report whether it can store new objects.
type writableChecker interface {
	CheckWritable() error
}

// CheckWritable returns an error wrapping hsm.ErrUnavailable when a token folder under
// t.dir cannot take new objects: a folder that cannot be written, or a volume with less
// than minTokenSpace bytes or minTokenFiles inodes free. SoftHSM2 creates a file in the
// folder for each object and rewrites the folder's generation file, so both must be
// writable. Data keys need neither and keep working. A t.dir that cannot be read is left
// to the token's Ping, and a volume whose free space cannot be read counts as not full.
func (t *tokenSpace) CheckWritable() error {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil
	}
	if err := t.checkFolders(entries); err != nil {
		return err
	}

	bytes, files, err := t.free(t.dir)
	if err != nil || (bytes >= minTokenSpace && files >= minTokenFiles) {
		return nil
	}
	return fmt.Errorf("%w: the volume of the token folder %s has %d bytes and %d inodes "+
		"free, so no key can be created", hsm.ErrUnavailable, t.dir, bytes, files)
}

// checkFolders returns an error wrapping hsm.ErrUnavailable when a token folder among
// entries of t.dir, or its generation file, cannot be written.
func (t *tokenSpace) checkFolders(entries []os.DirEntry) error {
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		folder := filepath.Join(t.dir, e.Name())
		paths := []string{folder}
		if _, err := os.Stat(filepath.Join(folder, "generation")); err == nil {
			paths = append(paths, filepath.Join(folder, "generation"))
		}
		for _, path := range paths {
			if err := t.writable(path); err != nil {
				return fmt.Errorf("%w: the token folder cannot be written, so no key can be "+
					"created: %w", hsm.ErrUnavailable, err)
			}
		}
	}
	return nil
}

// GenerateKey implements hsm.Token.
func (t *tokenSpace) GenerateKey(ctx context.Context, ref hsm.KeyRef) error {
	return t.checkSpace(t.Token.GenerateKey(ctx, ref))
}

// GenerateSigningKey implements hsm.Token.
func (t *tokenSpace) GenerateSigningKey(ctx context.Context, ref hsm.KeyRef) error {
	return t.checkSpace(t.Token.GenerateSigningKey(ctx, ref))
}

// checkSpace returns err wrapped with hsm.ErrUnavailable when CheckWritable reports that
// the token folder cannot take new objects, and err unchanged otherwise.
func (t *tokenSpace) checkSpace(err error) error {
	if err == nil || errors.Is(err, hsm.ErrUnavailable) {
		return err
	}

	if writeErr := t.CheckWritable(); writeErr != nil {
		return fmt.Errorf("%w: %w", writeErr, err)
	}
	return err
}
