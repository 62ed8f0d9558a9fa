package auth

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

const (
	softHSMLibrary = "/usr/lib/softhsm/libsofthsm2.so"
	testTokenLabel = "auth-test"
	testPIN        = "1234"
)

// The PKCS#11 library reads SOFTHSM2_CONF once per process, so every test in this
// binary shares one SoftHSM2 token in a temporary directory, made on first use.
var (
	tokenOnce sync.Once
	token     *hsm.Module
	tokenDir  string
	tokenErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if token != nil {
		token.Close()
	}
	if tokenDir != "" {
		os.RemoveAll(tokenDir)
	}
	os.Exit(code)
}

// testToken returns the shared SoftHSM2 token, skipping the test when SoftHSM2 is not
// installed.
func testToken(t *testing.T) hsm.Token {
	t.Helper()

	if _, err := os.Stat(softHSMLibrary); err != nil {
		t.Skipf("SoftHSM2 is not installed at %s: %v", softHSMLibrary, err)
	}

	tokenOnce.Do(func() {
		tokenDir, tokenErr = os.MkdirTemp("", "auth-softhsm-")
		if tokenErr != nil {
			return
		}
		tokenErr = initSoftHSMToken(tokenDir)
		if tokenErr != nil {
			return
		}
		token, tokenErr = hsm.Open(context.Background(), hsm.Config{
			ModulePath: softHSMLibrary,
			TokenLabel: testTokenLabel,
			PIN:        testPIN,
		}, nil)
	})
	if tokenErr != nil {
		t.Fatalf("set up SoftHSM2 token: %v", tokenErr)
	}
	return token
}

func initSoftHSMToken(dir string) error {
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return err
	}

	conf := filepath.Join(dir, "softhsm2.conf")
	content := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
		tokens)
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		return err
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return err
	}

	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", testTokenLabel,
		"--pin", testPIN, "--so-pin", "5678").CombinedOutput()
	if err != nil {
		return fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return nil
}

// testStore opens a SQLite store in a file of the test's temporary directory.
func testStore(t *testing.T) store.Store {
	t.Helper()

	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatalf("open SQLite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fakeClock is a settable clock for Verifier and Credentials.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestCredentials returns Credentials over a fresh SQLite store and the shared token.
func newTestCredentials(t *testing.T, clock *fakeClock) (*Credentials, store.Store) {
	t.Helper()

	st := testStore(t)
	cfg := CredentialsConfig{Logger: slog.New(slog.DiscardHandler)}
	if clock != nil {
		cfg.Clock = clock.Now
	}
	return NewCredentials(st, testToken(t), cfg), st
}

// importCredential stores the pair (ak, sk) with the crypto-user role.
func importCredential(t *testing.T, creds *Credentials, ak, sk string) Credential {
	t.Helper()

	created, _, err := creds.Create(context.Background(), CreateRequest{
		UserID:    "user" + ak,
		ProjectID: "pid",
		DomainID:  "did",
		Role:      RoleCryptoUser,
		AccessKey: ak,
		SecretKey: sk,
	})
	if err != nil {
		t.Fatalf("create credential %s: %v", ak, err)
	}
	return created
}
