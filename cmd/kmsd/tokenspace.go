package main

import (
	"context"
	"errors"
	"fmt"

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
type tokenSpace struct {
	hsm.Token
	dir string
	// free returns the bytes and the inodes that an unprivileged process may still use in
	// dir's volume.
	free func(dir string) (bytes, files uint64, err error)
}

func newTokenSpace(token hsm.Token, dir string) *tokenSpace {
	return &tokenSpace{Token: token, dir: dir, free: freeBytes}
}

// GenerateKey implements hsm.Token.
func (t *tokenSpace) GenerateKey(ctx context.Context, ref hsm.KeyRef) error {
	return t.checkSpace(t.Token.GenerateKey(ctx, ref))
}

// GenerateSigningKey implements hsm.Token.
func (t *tokenSpace) GenerateSigningKey(ctx context.Context, ref hsm.KeyRef) error {
	return t.checkSpace(t.Token.GenerateSigningKey(ctx, ref))
}

// checkSpace returns err wrapped with hsm.ErrUnavailable when the token folder's volume
// has less than minTokenSpace bytes or minTokenFiles inodes free, and err unchanged
// otherwise.
func (t *tokenSpace) checkSpace(err error) error {
	if err == nil || errors.Is(err, hsm.ErrUnavailable) {
		return err
	}

	bytes, files, statErr := t.free(t.dir)
	if statErr != nil || (bytes >= minTokenSpace && files >= minTokenFiles) {
		return err
	}
	return fmt.Errorf("%w: the volume of the token folder %s has %d bytes and %d inodes "+
		"free: %w", hsm.ErrUnavailable, t.dir, bytes, files, err)
}
