package service_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// aliasOwner is the principal of the alias cache tests.
var aliasOwner = auth.Principal{AccessKey: "AK-ALIAS", UserID: "u-alias",
	ProjectID: "p-alias", DomainID: "d-alias", Role: auth.RoleAdmin}

// manualClock is a clock that moves only when Advance is called.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newReplicas returns two services over one real token and one SQLite file, as two
// replicas of one deployment, both with a key cache of ttl on clock.
func newReplicas(t *testing.T, clock *manualClock, ttl time.Duration) (*service.Service, *service.Service) {
	t.Helper()
	ctx := context.Background()

	setup := softhsmtest.NewTestToken(t)
	pin, err := setup.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	module, err := hsm.Open(ctx, hsm.Config{
		ModulePath: setup.ModulePath, TokenLabel: setup.TokenLabel, PIN: pin,
	}, nil)
	if err != nil {
		t.Fatalf("open token: %v", err)
	}
	t.Cleanup(func() { module.Close() })

	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	cfg := service.Config{Clock: clock.Now, KeyCacheTTL: ttl}
	log := slog.New(slog.DiscardHandler)
	return service.New(module, st, log, cfg), service.New(module, st, log, cfg)
}

func describeID(t *testing.T, svc *service.Service, ref string) string {
	t.Helper()
	k, err := svc.DescribeKey(context.Background(), aliasOwner, ref)
	if err != nil {
		return "error " + service.CodeOf(err)
	}
	return k.ID
}

func TestAliasCacheAcrossReplicas(t *testing.T) {
	clock := &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	local, remote := newReplicas(t, clock, time.Second)
	ctx := context.Background()

	first, err := local.CreateKey(ctx, aliasOwner, service.CreateKeyInput{Alias: "first"})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	second, err := local.CreateKey(ctx, aliasOwner, service.CreateKeyInput{Alias: "second"})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := local.CreateAlias(ctx, aliasOwner, first.ID, "alias/app"); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}

	// Both replicas resolve and cache alias/app.
	if got := describeID(t, remote, "alias/app"); got != first.ID {
		t.Fatalf("remote resolves alias/app to %s, want %s", got, first.ID)
	}
	if got := describeID(t, local, "alias/app"); got != first.ID {
		t.Fatalf("local resolves alias/app to %s, want %s", got, first.ID)
	}

	if _, err := local.AssociateAlias(ctx, aliasOwner, "alias/app", second.ID); err != nil {
		t.Fatalf("AssociateAlias: %v", err)
	}

	// The replica that made the change resolves the new key at once, and the other one
	// after its cache entry expires.
	if got := describeID(t, local, "alias/app"); got != second.ID {
		t.Errorf("local after associate = %s, want %s", got, second.ID)
	}
	if got := describeID(t, remote, "alias/app"); got != first.ID {
		t.Errorf("remote within the TTL = %s, want the cached %s", got, first.ID)
	}
	clock.Advance(time.Second)
	if got := describeID(t, remote, "alias/app"); got != second.ID {
		t.Errorf("remote after the TTL = %s, want %s", got, second.ID)
	}

	// An alias of the alias API wins over a key_alias of the same name.
	third, err := local.CreateKey(ctx, aliasOwner, service.CreateKeyInput{Alias: "app"})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if got := describeID(t, local, "alias/app"); got != second.ID {
		t.Errorf("alias/app with a key_alias app = %s, want the alias API's %s", got, second.ID)
	}

	if _, err := local.DeleteAliases(ctx, aliasOwner, second.ID, []string{"alias/app"}); err != nil {
		t.Fatalf("DeleteAliases: %v", err)
	}
	if got := describeID(t, local, "alias/app"); got != third.ID {
		t.Errorf("alias/app after delete = %s, want the key_alias key %s", got, third.ID)
	}
}
