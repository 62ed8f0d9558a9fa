package auth

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// Every test in this binary shares one SoftHSM2 token, made on first use, because a token
// per test would add a token initialisation and a login to each of them.
var (
	tokenOnce sync.Once
	token     *hsm.Module
)

func TestMain(m *testing.M) {
	code := m.Run()
	if token != nil {
		token.Close()
	}
	os.Exit(code)
}

// testToken returns the shared SoftHSM2 token, skipping the test when SoftHSM2 is not
// installed.
func testToken(t *testing.T) hsm.Token {
	t.Helper()

	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}

	tokenOnce.Do(func() {
		setup := softhsmtest.NewTestToken(t)
		pin, err := setup.UserPIN()
		if err != nil {
			t.Fatalf("read test token PIN: %v", err)
		}

		token, err = hsm.Open(context.Background(), hsm.Config{
			ModulePath: setup.ModulePath,
			TokenLabel: setup.TokenLabel,
			PIN:        pin,
		}, nil)
		if err != nil {
			t.Fatalf("open test token: %v", err)
		}
	})
	if token == nil {
		t.Fatal("the shared test token could not be set up, see the first failing test")
	}
	return token
}

// testStore opens a store on a new SQLite file in the test's temporary directory.
func testStore(t *testing.T) store.Store {
	t.Helper()

	return openStore(t, storetest.SQLiteURL(t))
}

// openStore opens the store at databaseURL and closes it when t ends.
func openStore(t *testing.T, databaseURL string) store.Store {
	t.Helper()

	st, err := store.Open(context.Background(), databaseURL, nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
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

// storeCredential stores the pair (ak, sk) with the crypto-user role without the checks
// of Create, for the signature reference vectors, whose secret keys Create rejects as
// too weak.
func storeCredential(t *testing.T, creds *Credentials, ak, sk string) Credential {
	t.Helper()

	ctx := context.Background()
	sealed, err := creds.seal(ctx, ak, []byte(sk))
	if err != nil {
		t.Fatalf("seal secret key of %s: %v", ak, err)
	}
	now := creds.clock().UTC()
	row := store.Credential{
		AccessKey:    ak,
		SealedSecret: sealed,
		UserID:       "user" + ak,
		ProjectID:    "pid",
		DomainID:     "did",
		Role:         RoleCryptoUser,
		CreatedAt:    now,
		UpdatedAt:    now,
	}
	if err := creds.store.PutCredential(ctx, row); err != nil {
		t.Fatalf("store credential %s: %v", ak, err)
	}
	return credentialFromRow(row)
}
