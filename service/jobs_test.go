package service_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var admin = auth.Principal{
	AccessKey: "AKTEST", UserID: "user-1", ProjectID: "project-1", DomainID: "domain-1",
	Role: auth.RoleAdmin,
}

// faultToken wraps the real token to count calls and to fail the Nth DestroyKey, a fault
// that SoftHSM2 cannot be made to produce on demand.
type faultToken struct {
	hsm.Token
	failDestroyAt atomic.Int64 // 1-based call number to fail; 0 for none
	destroyCalls  atomic.Int64
	openCalls     atomic.Int64
	// failGenerate makes GenerateKey fail as SoftHSM2 does on a full volume.
	failGenerate atomic.Bool
}

func (f *faultToken) GenerateKey(ctx context.Context, ref hsm.KeyRef) error {
	if f.failGenerate.Load() {
		return fmt.Errorf("%w: injected GenerateKey failure", hsm.ErrUnavailable)
	}
	return f.Token.GenerateKey(ctx, ref)
}

var errInjected = fmt.Errorf("%w: injected DestroyKey failure", hsm.ErrUnavailable)

func (f *faultToken) DestroyKey(ctx context.Context, ref hsm.KeyRef) error {
	if n := f.destroyCalls.Add(1); n == f.failDestroyAt.Load() {
		return errInjected
	}
	return f.Token.DestroyKey(ctx, ref)
}

func (f *faultToken) Open(ctx context.Context, ref hsm.KeyRef, iv, ciphertext, aad []byte) ([]byte, error) {
	f.openCalls.Add(1)
	return f.Token.Open(ctx, ref, iv, ciphertext, aad)
}

// countingStore wraps the real store to count the calls that would betray work per key
// version on the decrypt path.
type countingStore struct {
	store.Store
	getKeyCalls       atomic.Int64
	listVersionsCalls atomic.Int64
}

func (c *countingStore) GetKey(ctx context.Context, projectID, keyID string) (store.Key, error) {
	c.getKeyCalls.Add(1)
	return c.Store.GetKey(ctx, projectID, keyID)
}

func (c *countingStore) ListKeyVersions(ctx context.Context, keyID string) ([]store.KeyVersion, error) {
	c.listVersionsCalls.Add(1)
	return c.Store.ListKeyVersions(ctx, keyID)
}

// jobEnv is a service on a real SoftHSM2 token and a real SQLite file, with a settable
// clock.
type jobEnv struct {
	svc   *service.Service
	token *faultToken
	store *countingStore
	raw   *hsm.Module
	// dbPath is the SQLite file of store.
	dbPath string

	mu  sync.Mutex
	now time.Time
}

func newJobEnv(t *testing.T, cfg service.Config) *jobEnv {
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

	dbPath := filepath.Join(t.TempDir(), "kms.db")
	st, err := store.Open(ctx, dbPath, nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	e := &jobEnv{token: &faultToken{Token: module}, store: &countingStore{Store: st}, raw: module,
		dbPath: dbPath, now: time.Now().UTC()}
	cfg.Clock = e.clock
	cfg.KeyCacheTTL = -1
	e.svc = service.New(e.token, e.store, discardLogger(), cfg)
	return e
}

func (e *jobEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *jobEnv) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

func (e *jobEnv) createKey(t *testing.T, alias string) store.Key {
	t.Helper()
	k, err := e.svc.CreateKey(context.Background(), admin, service.CreateKeyInput{Alias: alias})
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", alias, err)
	}
	return k
}

func (e *jobEnv) rotate(t *testing.T, keyID string) {
	t.Helper()
	if _, err := e.svc.RotateOnDemand(context.Background(), admin, keyID); err != nil {
		t.Fatalf("RotateOnDemand(%s): %v", keyID, err)
	}
}

// tokenVersions returns the versions of keyID that have a token object, sorted.
func (e *jobEnv) tokenVersions(t *testing.T, keyID string) []uint32 {
	t.Helper()
	refs, err := e.raw.ListKeys(context.Background())
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	var versions []uint32
	for _, r := range refs {
		if r.KeyID == keyID {
			versions = append(versions, r.Version)
		}
	}
	slices.Sort(versions)
	return versions
}

func TestDeletionRetriesAfterTokenFailure(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "deletion-fault")
	e.rotate(t, k.ID)
	e.rotate(t, k.ID)
	if _, err := e.svc.ScheduleKeyDeletion(ctx, admin, k.ID, 7); err != nil {
		t.Fatalf("ScheduleKeyDeletion: %v", err)
	}
	e.advance(7 * 24 * time.Hour)

	e.token.failDestroyAt.Store(2)
	n, err := e.svc.RunDeletion(ctx)
	if err != nil || n != 0 {
		t.Fatalf("RunDeletion with the second DestroyKey failing = %d, %v; want 0, nil", n, err)
	}

	got, err := e.store.GetKey(ctx, admin.ProjectID, k.ID)
	if err != nil {
		t.Fatalf("GetKey after the failed run: %v (the metadata must stay)", err)
	}
	if got.State != store.KeyStatePendingDeletion {
		t.Errorf("key_state after the failed run = %s, want 4", got.State)
	}
	versions, err := e.store.ListKeyVersions(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantStates := []string{store.VersionDestroyed, store.VersionActive, store.VersionActive}
	for i, v := range versions {
		if i >= len(wantStates) || v.State != wantStates[i] {
			t.Errorf("version %d is %s after the failed run, want %v", v.Version, v.State, wantStates)
		}
	}
	if got := e.tokenVersions(t, k.ID); !slices.Equal(got, []uint32{2, 3}) {
		t.Errorf("token objects after the failed run = %v, want [2 3]", got)
	}

	n, err = e.svc.RunDeletion(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RunDeletion retry = %d, %v; want 1, nil", n, err)
	}
	if _, err := e.store.GetKey(ctx, admin.ProjectID, k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetKey after the retry: %v, want ErrNotFound", err)
	}
	if got := e.tokenVersions(t, k.ID); len(got) != 0 {
		t.Errorf("token objects after the retry = %v, want none", got)
	}
}

func TestDeletionNeverBeforeWindow(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "deletion-early")
	if _, err := e.svc.ScheduleKeyDeletion(ctx, admin, k.ID, 30); err != nil {
		t.Fatal(err)
	}

	for _, step := range []time.Duration{0, 29 * 24 * time.Hour, 24*time.Hour - time.Millisecond} {
		e.advance(step)
		if n, err := e.svc.RunDeletion(ctx); err != nil || n != 0 {
			t.Fatalf("RunDeletion at %v = %d, %v; want 0, nil", e.clock(), n, err)
		}
	}
	if got := e.tokenVersions(t, k.ID); !slices.Equal(got, []uint32{1}) {
		t.Errorf("token objects before the window ends = %v, want [1]", got)
	}
	if e.token.destroyCalls.Load() != 0 {
		t.Errorf("DestroyKey was called %d times before the window ended", e.token.destroyCalls.Load())
	}

}

// TestCancelNearWindowEnd cancels deletions at several times before and after the end of
// the deletion window. In its last minute the token check no longer counts the key, and
// a replica with a faster clock may be destroying it, so cancelling is rejected.
func TestCancelNearWindowEnd(t *testing.T) {
	tests := []struct {
		name     string
		before   time.Duration // how long before the window ends the cancel comes
		wantCode string        // "" for a cancel that succeeds
	}{
		{"two minutes before", 2 * time.Minute, ""},
		{"61 seconds before", 61 * time.Second, ""},
		{"59 seconds before", 59 * time.Second, service.CodeNotPendingDeletion},
		{"1 ms before", time.Millisecond, service.CodeNotPendingDeletion},
		{"at the end", 0, service.CodeNotPendingDeletion},
		{"a day after", -24 * time.Hour, service.CodeNotPendingDeletion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newJobEnv(t, service.Config{})
			ctx := context.Background()
			k := e.createKey(t, "cancel-late")
			if _, err := e.svc.ScheduleKeyDeletion(ctx, admin, k.ID, 7); err != nil {
				t.Fatal(err)
			}
			e.advance(7*24*time.Hour - tt.before)

			_, err := e.svc.CancelKeyDeletion(ctx, admin, k.ID)
			if got := codeOf(err); got != tt.wantCode {
				t.Errorf("CancelKeyDeletion %s the window ends: %v, want code %q", tt.name, err,
					tt.wantCode)
			}
		})
	}
}

func TestReconcileRemovesStaleVersions(t *testing.T) {
	e := newJobEnv(t, service.Config{StaleVersionAge: time.Minute})
	ctx := context.Background()

	// A crash after GenerateKey: the creating row and its object, no key row.
	withObject := hsm.KeyRef{KeyID: "11111111-1111-1111-1111-111111111111", Version: 1}
	// A crash before GenerateKey: the creating row alone.
	withoutObject := hsm.KeyRef{KeyID: "22222222-2222-2222-2222-222222222222", Version: 1}
	for _, ref := range []hsm.KeyRef{withObject, withoutObject} {
		if err := e.store.BeginKeyVersion(ctx, ref.KeyID, ref.Version); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.raw.GenerateKey(ctx, withObject); err != nil {
		t.Fatal(err)
	}

	// The rows are stamped with the real time, so the service clock must pass it.
	if n, err := e.svc.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("Reconcile of fresh rows = %d, %v; want 0, nil", n, err)
	}
	e.advance(2 * time.Minute)
	if n, err := e.svc.Reconcile(ctx); err != nil || n != 2 {
		t.Fatalf("Reconcile of stale rows = %d, %v; want 2, nil", n, err)
	}

	for _, ref := range []hsm.KeyRef{withObject, withoutObject} {
		versions, err := e.store.ListKeyVersions(ctx, ref.KeyID)
		if err != nil || len(versions) != 0 {
			t.Errorf("version rows of %s after Reconcile = %v, %v; want none", ref.KeyID, versions, err)
		}
		if got := e.tokenVersions(t, ref.KeyID); len(got) != 0 {
			t.Errorf("token objects of %s after Reconcile = %v, want none", ref.KeyID, got)
		}
	}
}

func TestSealCountsFlushToStore(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "seal-count")

	for range 3 {
		if _, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: k.ID}, false); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.store.SealCount(ctx, k.ID, 1); err != nil || n != 0 {
		t.Errorf("stored seal count before a flush = %d, %v; want 0 (no write per request)", n, err)
	}

	if err := e.svc.FlushSealCounts(ctx); err != nil {
		t.Fatalf("FlushSealCounts: %v", err)
	}
	if n, err := e.store.SealCount(ctx, k.ID, 1); err != nil || n != 3 {
		t.Errorf("stored seal count after a flush = %d, %v; want 3", n, err)
	}
	if err := e.svc.FlushSealCounts(ctx); err != nil {
		t.Fatalf("second FlushSealCounts: %v", err)
	}
	if n, _ := e.store.SealCount(ctx, k.ID, 1); n != 3 {
		t.Errorf("stored seal count after a second flush = %d, want 3 (counted once)", n)
	}
}
