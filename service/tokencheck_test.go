package service_test

import (
	"context"
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
			name: "the missing version belongs to a key pending deletion",
			prepare: func(t *testing.T, e *jobEnv) hsm.KeyRef {
				e.createKey(t, "first")
				k := e.createKey(t, "second")
				_, err := e.svc.ScheduleKeyDeletion(context.Background(), admin, k.ID, 7)
				if err != nil {
					t.Fatalf("ScheduleKeyDeletion: %v", err)
				}
				e.loseObject(t, k.ID, 1)
				return hsm.KeyRef{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newJobEnv(t, service.Config{})
			missing := tt.prepare(t, e)

			err := service.CheckTokenCurrent(context.Background(), e.raw, e.store)
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

	if _, err := service.MarkLostVersions(ctx, e.raw, e.store, discardLogger()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.TokenBehindStore(ctx); err != nil {
		t.Errorf("TokenBehindStore after the lost version was marked = %v, want nil", err)
	}
	e.createKey(t, "after-restore")
}

// TestMarkLostVersions marks the versions that a restored token lacks: the first version
// of one key and the current version of another, rotated, key. Both keys must be
// disabled; re-enabled, the rotated key must still open its first version's data keys,
// answer KMS.2203 for the lost version's, and seal again once rotated.
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
	e.loseObject(t, single.ID, 1)
	e.loseObject(t, rotated.ID, 2)

	marked, err := service.MarkLostVersions(ctx, e.raw, e.store, discardLogger())
	if err != nil || marked != 2 {
		t.Fatalf("MarkLostVersions = %d, %v, want 2 versions", marked, err)
	}
	if again, err := service.MarkLostVersions(ctx, e.raw, e.store, discardLogger()); err != nil ||
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

	if _, err := e.svc.EnableKey(ctx, admin, rotated.ID); err != nil {
		t.Fatal(err)
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
	e.rotate(t, rotated.ID)
	if _, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: rotated.ID}, false); err != nil {
		t.Errorf("CreateDataKey after rotating past the lost version: %v", err)
	}
}

// lateToken wraps the real token so that the first misses lookups of a key report it
// missing, as another process sharing a SoftHSM2 token folder sees a new key for a
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

			err := service.CheckTokenCurrent(context.Background(), token, e.store)
			behind := errors.Is(err, service.ErrTokenBehindStore)
			if behind != tt.wantBehind || (err != nil && !behind) {
				t.Errorf("CheckTokenCurrent = %v, want behind %t", err, tt.wantBehind)
			}
		})
	}

	// MarkLostVersions looks each version up again once after all the pauses.
	token := &lateToken{Token: e.raw}
	token.misses.Store(1)
	marked, err := service.MarkLostVersions(context.Background(), token, e.store, discardLogger())
	if err != nil || marked != 0 {
		t.Errorf("MarkLostVersions after one miss = %d, %v, want 0", marked, err)
	}
}
