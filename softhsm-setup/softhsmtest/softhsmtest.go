// Package softhsmtest creates SoftHSM2 tokens for tests of other packages.
//
// All tokens of a test process share one token directory, because SoftHSM2 reads
// SOFTHSM2_CONF once per process at C_Initialize. Call NewTestToken before hsm.Open: a
// token created while the library is initialised in the process is visible at once, but
// only if the library was initialised with the same configuration, which NewTestToken
// guarantees by setting SOFTHSM2_CONF on its first call.
package softhsmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error
	counter atomic.Int64
)

// tokenDir returns the process-wide directory holding softhsm2.conf, tokens and PIN files.
// The directory stays in os.TempDir after the process exits because no test owns it.
func tokenDir() (string, error) {
	dirOnce.Do(func() {
		dir, dirErr = os.MkdirTemp("", "softhsmtest-")
	})

	return dir, dirErr
}

// NewTestToken initialises a fresh token with a label unique in the process and random
// PINs, and returns its Setup. It skips the test when SoftHSM2 is not installed.
func NewTestToken(t testing.TB) softhsmsetup.Setup {
	t.Helper()

	module, err := softhsmsetup.FindModule()
	if err != nil {
		t.Skip(err)
	}

	base, err := tokenDir()
	if err != nil {
		t.Fatalf("create token directory: %v", err)
	}

	label := fmt.Sprintf("test-%d-%d", os.Getpid(), counter.Add(1))
	setup, err := CreateToken(base, label)
	if err != nil {
		t.Fatalf("create test token: %v", err)
	}
	setup.ModulePath = module

	return setup
}

// CreateToken initialises a token labelled label in the SoftHSM2 data directory base, as
// Ensure lays it out, writing its user PIN to base/<label>.user-pin.
func CreateToken(base, label string) (softhsmsetup.Setup, error) {
	if err := os.MkdirAll(filepath.Join(base, "tokens"), 0o700); err != nil {
		return softhsmsetup.Setup{}, fmt.Errorf("create token directory: %w", err)
	}

	conf := filepath.Join(base, "softhsm2.conf")
	if _, err := os.Stat(conf); err != nil {
		text := "directories.tokendir = " + filepath.Join(base, "tokens") + "\n" +
			"objectstore.backend = file\nlog.level = ERROR\n"
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return softhsmsetup.Setup{}, fmt.Errorf("write %s: %w", conf, err)
		}
	}

	soPIN, err := softhsmsetup.NewPIN()
	if err != nil {
		return softhsmsetup.Setup{}, err
	}
	userPIN, err := softhsmsetup.NewPIN()
	if err != nil {
		return softhsmsetup.Setup{}, err
	}

	pinFile := filepath.Join(base, label+".user-pin")
	if err := os.WriteFile(pinFile, []byte(userPIN+"\n"), 0o600); err != nil {
		return softhsmsetup.Setup{}, fmt.Errorf("write PIN file: %w", err)
	}

	if err := softhsmsetup.InitToken(conf, label, soPIN, userPIN); err != nil {
		return softhsmsetup.Setup{}, err
	}

	module, _ := softhsmsetup.FindModule()
	return softhsmsetup.Setup{
		ModulePath: module,
		ConfPath:   conf,
		TokenLabel: label,
		PINFile:    pinFile,
	}, nil
}

// InitTokenWithPIN initialises one more token labelled label, with user PIN pin, in the
// data directory of like, a Setup from NewTestToken. Tests use it to add a token after a
// Module was opened.
func InitTokenWithPIN(like softhsmsetup.Setup, label, pin string) error {
	soPIN, err := softhsmsetup.NewPIN()
	if err != nil {
		return err
	}

	return softhsmsetup.InitToken(like.ConfPath, label, soPIN, pin)
}
