package service_test

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/store"
)

// loseObject destroys the token object of ref behind the service's back, as a token
// copied before ref was created lacks it, while the store still records it active.
func (e *jobEnv) loseObject(t *testing.T, keyID string, version uint32) hsm.KeyRef {
	t.Helper()
	ref := hsm.KeyRef{KeyID: keyID, Version: version}
	if err := e.raw.DestroyKey(context.Background(), ref); err != nil {
		t.Fatalf("DestroyKey(%s): %v", ref, err)
	}
	return ref
}

// stampVersion sets the created_at of a version row to at, as a replica whose clock
// differs from this process's clock stamps it. The row keeps its place in the order in
// which the store recorded the versions.
func (e *jobEnv) stampVersion(t *testing.T, keyID string, version uint32, at time.Time) {
	t.Helper()
	db, err := sql.Open("sqlite3", e.dbPath)
	if err != nil {
		t.Fatalf("open %s: %v", e.dbPath, err)
	}
	defer db.Close()

	res, err := db.ExecContext(context.Background(),
		"UPDATE key_versions SET created_at = ? WHERE key_id = ? AND version = ?",
		at.UnixMilli(), keyID, version)
	if err != nil {
		t.Fatalf("set created_at of version %s/%d: %v", keyID, version, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("set created_at of version %s/%d: %d rows changed (%v), want 1", keyID,
			version, n, err)
	}
}

// scheduleDeletion schedules the key's deletion in 7 days.
func (e *jobEnv) scheduleDeletion(t *testing.T, keyID string) {
	t.Helper()
	if _, err := e.svc.ScheduleKeyDeletion(context.Background(), admin, keyID, 7); err != nil {
		t.Fatalf("ScheduleKeyDeletion(%s): %v", keyID, err)
	}
}

// codeOf returns the KMS code of err, or "" for nil.
func codeOf(err error) string {
	if err == nil {
		return ""
	}
	return service.CodeOf(err)
}

func TestCheckTokenCurrent(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond}))
	tests := []struct {
		name string
		// prepare creates keys and loses objects; it returns the version expected
		// missing, or a zero KeyRef for none.
		prepare func(t *testing.T, e *jobEnv) hsm.KeyRef
	}{
		{
			name:    "a store without keys",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef { return hsm.KeyRef{} },
		},
		{
			name: "every version in the token",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				k := e.createKey(t, "first")
				e.rotate(t, k.ID)
				e.createKey(t, "second")
				return hsm.KeyRef{}
			},
		},
		{
			name: "the newest version missing",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				e.createKey(t, "first")
				k := e.createKey(t, "second")
				return e.loseObject(t, k.ID, 1)
			},
		},
		{
			name: "the newest version of a rotated key missing",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				k := e.createKey(t, "first")
				e.createKey(t, "second")
				e.rotate(t, k.ID)
				return e.loseObject(t, k.ID, 2)
			},
		},
		{
			name: "the newest version missing, stamped by a clock behind",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				e.createKey(t, "first")
				k := e.createKey(t, "second")
				e.stampVersion(t, k.ID, 1, time.Now().Add(-time.Hour))
				return e.loseObject(t, k.ID, 1)
			},
		},
		{
			name: "the newest version missing, an older one stamped by a clock ahead",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				first := e.createKey(t, "first")
				e.stampVersion(t, first.ID, 1, time.Now().Add(time.Hour))
				k := e.createKey(t, "second")
				return e.loseObject(t, k.ID, 1)
			},
		},
		{
			name: "the newest version of a key pending deletion, not due yet",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				e.createKey(t, "first")
				k := e.createKey(t, "second")
				e.scheduleDeletion(t, k.ID)
				return e.loseObject(t, k.ID, 1)
			},
		},
		{
			name: "the missing version belongs to a key past its deletion time",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				e.createKey(t, "first")
				k := e.createKey(t, "second")
				e.scheduleDeletion(t, k.ID)
				e.advance(8 * 24 * time.Hour)
				e.loseObject(t, k.ID, 1)
				return hsm.KeyRef{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newJobEnv(t, service.Config{})
			missing := tt.prepare(t, e)

			err := service.CheckTokenCurrent(context.Background(), e.raw, e.store, e.clock())
			var behind *service.TokenBehindError
			switch {
			case missing == (hsm.KeyRef{}) && err != nil:
				t.Errorf("CheckTokenCurrent = %v, want nil", err)
			case missing == (hsm.KeyRef{}):
			case !errors.As(err, &behind) || !errors.Is(err, service.ErrTokenBehindStore):
				t.Errorf("CheckTokenCurrent = %v, want a TokenBehindError", err)
			case behind.Missing != missing:
				t.Errorf("CheckTokenCurrent names %s missing, want %s", behind.Missing, missing)
			}
		})
	}
}

// TestTokenBehindStoreCreatesNoKey loses the newest key's object, as in a token copied
// before that key. Key creation and rotation must fail with 503 without creating anything,
// readiness must report the token, and a data key under the lost key must get 503, not
// 500. Keys that the token holds keep working.
func TestTokenBehindStoreCreatesNoKey(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond}))
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	heldKey := e.createKey(t, "held")
	sealed, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: heldKey.ID}, true)
	if err != nil {
		t.Fatal(err)
	}
	lost := e.createKey(t, "lost")
	e.loseObject(t, lost.ID, 1)

	_, err = e.svc.CreateKey(ctx, admin, service.CreateKeyInput{Alias: "in-older-token"})
	if got := codeOf(err); got != service.CodeUnavailable {
		t.Errorf("CreateKey with the token behind: %v, want %s", err, service.CodeUnavailable)
	}
	_, err = e.svc.RotateOnDemand(ctx, admin, heldKey.ID)
	if got := codeOf(err); got != service.CodeUnavailable {
		t.Errorf("RotateOnDemand with the token behind: %v, want %s", err, service.CodeUnavailable)
	}
	keys, err := e.svc.ListKeys(ctx, admin, service.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	if keys.Total != 2 {
		t.Errorf("the store has %d keys after the refused calls, want 2", keys.Total)
	}
	versions, err := e.store.ListKeyVersions(ctx, heldKey.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != 1 {
		t.Errorf("the held key has versions %v after the refused rotation, want 1", versions)
	}
	if err := e.svc.TokenBehindStore(ctx); !errors.Is(err, service.ErrTokenBehindStore) {
		t.Errorf("TokenBehindStore = %v, want ErrTokenBehindStore", err)
	}

	_, err = e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: lost.ID}, true)
	if got := codeOf(err); got != service.CodeUnavailable {
		t.Errorf("CreateDataKey under the lost key: %v, want %s", err, service.CodeUnavailable)
	}
	out, err := e.svc.DecryptDataKey(ctx, admin, service.DecryptDataKeyInput{
		KeyRef: heldKey.ID, Ciphertext: sealed.Ciphertext, DataKeyLen: len(sealed.Plaintext),
	})
	if err != nil || string(out.Plaintext) != string(sealed.Plaintext) {
		t.Errorf("DecryptDataKey under the held key: %v", err)
	}

	if _, err := service.MarkLostVersions(ctx, e.raw, e.store, e.clock(), discardLogger()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.TokenBehindStore(ctx); err != nil {
		t.Errorf("TokenBehindStore after the lost version was marked = %v, want nil", err)
	}
	e.createKey(t, "after-restore")
}

// TestMarkLostVersions marks the versions that a restored token lacks: the first version
// of one key, the current version of another, rotated, key, and the version of a key
// pending deletion. The first two keys must be disabled and the third must stay pending
// deletion. Re-enabled, the rotated key must be rotated past the lost version, open its
// first version's data keys, return KMS.2203 for the lost version's, and seal again.
func TestMarkLostVersions(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond}))
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	single := e.createKey(t, "single")
	rotated := e.createKey(t, "rotated")
	keptDataKey, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: rotated.ID}, true)
	if err != nil {
		t.Fatal(err)
	}
	e.rotate(t, rotated.ID)
	lostDataKey, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: rotated.ID}, true)
	if err != nil {
		t.Fatal(err)
	}
	untouched := e.createKey(t, "untouched")
	pending := e.createKey(t, "pending")
	e.scheduleDeletion(t, pending.ID)
	e.loseObject(t, single.ID, 1)
	e.loseObject(t, rotated.ID, 2)
	e.loseObject(t, pending.ID, 1)

	marked, err := service.MarkLostVersions(ctx, e.raw, e.store, e.clock(), discardLogger())
	if err != nil || marked != 3 {
		t.Fatalf("MarkLostVersions = %d, %v, want 3 versions", marked, err)
	}
	if again, err := service.MarkLostVersions(ctx, e.raw, e.store, e.clock(), discardLogger()); err != nil ||
		again != 0 {
		t.Errorf("a second MarkLostVersions = %d, %v, want 0", again, err)
	}
	for _, tt := range []struct {
		key   store.Key
		state string
	}{
		{single, store.KeyStateDisabled},
		{rotated, store.KeyStateDisabled},
		{untouched, store.KeyStateEnabled},
		{pending, store.KeyStatePendingDeletion},
	} {
		k, err := e.store.GetKey(ctx, admin.ProjectID, tt.key.ID)
		if err != nil {
			t.Fatal(err)
		}
		if k.State != tt.state {
			t.Errorf("key %s has state %s after MarkLostVersions, want %s", k.Alias, k.State,
				tt.state)
		}
	}

	e.token.failGenerate.Store(true)
	if _, err := e.svc.EnableKey(ctx, admin, rotated.ID); codeOf(err) != service.CodeUnavailable {
		t.Errorf("EnableKey while the rotation fails: %v, want %s", err, service.CodeUnavailable)
	}
	if k, err := e.store.GetKey(ctx, admin.ProjectID, rotated.ID); err != nil ||
		k.State != store.KeyStateDisabled {
		t.Errorf("after a failed rotation the key has state %s (%v), want disabled", k.State, err)
	}
	e.token.failGenerate.Store(false)

	enabled, err := e.svc.EnableKey(ctx, admin, rotated.ID)
	if err != nil {
		t.Fatal(err)
	}
	if enabled.CurrentVersion != 3 || enabled.State != store.KeyStateEnabled {
		t.Errorf("EnableKey = version %d, state %s, want version 3, enabled",
			enabled.CurrentVersion, enabled.State)
	}
	decrypt := func(sealed service.DataKeyOutput) error {
		out, err := e.svc.DecryptDataKey(ctx, admin, service.DecryptDataKeyInput{
			KeyRef: rotated.ID, Ciphertext: sealed.Ciphertext, DataKeyLen: len(sealed.Plaintext),
		})
		if err == nil && string(out.Plaintext) != string(sealed.Plaintext) {
			return errors.New("decrypts to another data key")
		}
		return err
	}
	if err := decrypt(keptDataKey); err != nil {
		t.Errorf("DecryptDataKey under the kept version: %v", err)
	}
	if got := codeOf(decrypt(lostDataKey)); got != service.CodeDecryptFailed {
		t.Errorf("DecryptDataKey under the lost version: %s, want %s", got,
			service.CodeDecryptFailed)
	}
	if _, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: rotated.ID}, false); err != nil {
		t.Errorf("CreateDataKey after enabling the key: %v", err)
	}
}

// lateToken wraps the real token so that the first misses lookups of a key report it
// missing, as another process sharing a SoftHSM2 token folder may miss a new key for a
// moment after its creation. That timing cannot be produced on demand.
type lateToken struct {
	hsm.Token
	misses atomic.Int64
}

func (l *lateToken) KeyExists(ctx context.Context, ref hsm.KeyRef) (bool, error) {
	if l.misses.Add(-1) >= 0 {
		return false, nil
	}
	return l.Token.KeyExists(ctx, ref)
}

func (l *lateToken) ListKeys(ctx context.Context) ([]hsm.KeyRef, error) {
	if l.misses.Add(-1) >= 0 {
		return nil, nil
	}
	return l.Token.ListKeys(ctx)
}

func TestCheckTokenCurrentRetries(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond, time.Millisecond}))
	e := newJobEnv(t, service.Config{})
	e.createKey(t, "newest")

	tests := []struct {
		name       string
		misses     int64
		wantBehind bool
	}{
		{name: "found at once", misses: 0, wantBehind: false},
		{name: "found at the last retry", misses: 2, wantBehind: false},
		{name: "missing after every retry", misses: 3, wantBehind: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := &lateToken{Token: e.raw}
			token.misses.Store(tt.misses)

			err := service.CheckTokenCurrent(context.Background(), token, e.store, e.clock())
			behind := errors.Is(err, service.ErrTokenBehindStore)
			if behind != tt.wantBehind || (err != nil && !behind) {
				t.Errorf("CheckTokenCurrent = %v, want behind %t", err, tt.wantBehind)
			}
		})
	}

	// MarkLostVersions looks each version up again once after all the pauses.
	token := &lateToken{Token: e.raw}
	token.misses.Store(1)
	marked, err := service.MarkLostVersions(context.Background(), token, e.store, e.clock(),
		discardLogger())
	if err != nil || marked != 0 {
		t.Errorf("MarkLostVersions after one miss = %d, %v, want 0", marked, err)
	}
}

// failingMarkStore fails MarkVersionDestroyed from the failAt-th call on, as a process
// killed in the middle of MarkLostVersions stops.
type failingMarkStore struct {
	store.Store
	calls, failAt int
}

func (f *failingMarkStore) MarkVersionDestroyed(ctx context.Context, keyID string, version uint32) error {
	f.calls++
	if f.calls >= f.failAt {
		return errors.New("injected failure")
	}
	return f.Store.MarkVersionDestroyed(ctx, keyID, version)
}

// TestMarkLostVersionsResumes cuts MarkLostVersions short after its first version. The
// newest missing version must stay the same, so the same accept value resumes, no key may
// be left enabled with a lost current version, and a second run must mark the rest.
func TestMarkLostVersionsResumes(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond}))
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	var keys []store.Key
	for _, alias := range []string{"first", "second", "third"} {
		keys = append(keys, e.createKey(t, alias))
	}
	for _, k := range keys {
		e.loseObject(t, k.ID, 1)
	}
	before := service.CheckTokenCurrent(ctx, e.raw, e.store, e.clock())

	cut := &failingMarkStore{Store: e.store, failAt: 2}
	if marked, err := service.MarkLostVersions(ctx, e.raw, cut, e.clock(), discardLogger()); err == nil ||
		marked != 1 {
		t.Fatalf("MarkLostVersions cut short = %d, %v, want 1 and an error", marked, err)
	}
	after := service.CheckTokenCurrent(ctx, e.raw, e.store, e.clock())
	if before == nil || after == nil || before.Error() != after.Error() {
		t.Errorf("the newest missing version changed from %v to %v", before, after)
	}
	for _, k := range keys {
		got, err := e.store.GetKey(ctx, admin.ProjectID, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		versions, err := e.store.ListKeyVersions(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == store.KeyStateEnabled && versions[0].State == store.VersionDestroyed {
			t.Errorf("key %s is enabled with its current version marked lost", k.Alias)
		}
	}

	marked, err := service.MarkLostVersions(ctx, e.raw, e.store, e.clock(), discardLogger())
	if err != nil || marked != 2 {
		t.Errorf("the second MarkLostVersions = %d, %v, want the 2 versions left", marked, err)
	}
	if err := service.CheckTokenCurrent(ctx, e.raw, e.store, e.clock()); err != nil {
		t.Errorf("CheckTokenCurrent after the second run = %v, want nil", err)
	}
}

// TestMissingOlderObjectRetryable loses the object of a key that is not the newest, as on
// a replica whose token view lags a key that another replica created a moment ago. The
// token check passes, and a data key under that key must get a retryable 503, not 500.
func TestMissingOlderObjectRetryable(t *testing.T) {
	t.Cleanup(service.SetLookupRetries([]time.Duration{time.Millisecond}))
	e := newJobEnv(t, service.Config{})
	lost := e.createKey(t, "older")
	e.createKey(t, "newest")
	e.loseObject(t, lost.ID, 1)

	_, err := e.svc.CreateDataKey(context.Background(), admin,
		service.DataKeyInput{KeyRef: lost.ID}, true)
	if got := codeOf(err); got != service.CodeUnavailable {
		t.Errorf("CreateDataKey under a key whose object is missing: %v, want %s", err,
			service.CodeUnavailable)
	}
}
