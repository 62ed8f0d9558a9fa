package hsm

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// syncBuffer is a log sink that tests read after the module logged to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig returns the Config of a fresh token and its user PIN.
func testConfig(t testing.TB) (Config, softhsmsetup.Setup) {
	t.Helper()

	setup := softhsmtest.NewTestToken(t)
	pin, err := setup.UserPIN()
	if err != nil {
		t.Fatal(err)
	}

	return Config{ModulePath: setup.ModulePath, TokenLabel: setup.TokenLabel, PIN: pin}, setup
}

// openTestModule opens a Module on a fresh token, closed when the test ends. edit may
// change the Config first.
func openTestModule(t testing.TB, edit func(*Config)) *Module {
	t.Helper()

	cfg, _ := testConfig(t)
	if edit != nil {
		edit(&cfg)
	}

	m, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })

	return m
}

// generateTestKey generates the AES key of ref and fails the test on error.
func generateTestKey(t testing.TB, m *Module, ref KeyRef) {
	t.Helper()

	if err := m.GenerateKey(context.Background(), ref); err != nil {
		t.Fatalf("GenerateKey(%s): %v", ref, err)
	}
}
