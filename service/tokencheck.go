package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// ErrTokenBehindStore means the token lacks the object of an active key version that the
// store records, so it is an older copy of the live token, such as a backup put back in
// its place. A copy has the serial number and the keys of the token it was taken from, so
// the other token checks pass. A key created in the copy would be lost once the live
// token is back, so kmsd creates no key while this holds.
var ErrTokenBehindStore = errors.New("the token is older than the store")

// TokenBehindError is the error of CheckTokenCurrent for a token older than the store. It
// wraps ErrTokenBehindStore.
type TokenBehindError struct {
	// Missing is the newest active key version of the store, whose object the token lacks.
	Missing hsm.KeyRef
	// CreatedAt is when Missing was created, read from the clock of the replica that
	// created it, so it can be off by that clock's skew.
	CreatedAt time.Time
}

func (e *TokenBehindError) Error() string {
	return fmt.Sprintf("%v: it lacks key version %s, the newest that the store records "+
		"(created %s)", ErrTokenBehindStore, e.Missing, e.CreatedAt.UTC().Format(time.RFC3339))
}

func (e *TokenBehindError) Unwrap() error { return ErrTokenBehindStore }

// lookupRetries are the pauses before the second and later lookups of a key version
// that the token seems to lack. Another kmsd that shares a SoftHSM2 token folder may not
// see a key object for a moment after its creation: two replicas that each created a key
// a second saw a few such misses in a minute. A retry a little later finds the object.
//
// NOTE: under concurrent rotations on two replicas sharing a SoftHSM2 folder, one
// replica's SoftHSM2 once missed another's new object until that replica restarted, and
// the check reported the token behind the store all that time. kmsd has no way to make
// SoftHSM2 read its folder again short of closing the library under calls in progress.
var lookupRetries = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond,
	750 * time.Millisecond}

// deletionMargin is how far ahead of this process's clock another replica's clock may
// run. The deletion job destroys a key's objects once its deletion time has passed, so
// the checks below leave out keys whose deletion time is less than this far ahead.
//
// Deletion times are the only clock readings that the checks compare. When another
// replica's clock runs further ahead, its deletion job may destroy the objects of a key
// that this process still counts. Until that job marks the versions destroyed, the check
// reports the token behind, a false alarm that stops key creation but lets no older token
// pass. When this process's clock runs ahead, keys are left out earlier by the skew. A
// copy that lacks only versions of keys due for deletion within the margin plus the skew
// then passes, as one that lacks only versions due within the margin always does.
const deletionMargin = time.Minute

// CheckTokenCurrent returns a *TokenBehindError when the token lacks the object of the
// newest active key version in the store (store.KeyStore.ActiveVersions), and another
// error when the store or the token cannot be read. It makes one store query and one token
// lookup, and up to three more lookups over about a second when the object seems missing
// (lookupRetries). It is safe for concurrent use.
//
// Only the newest version is looked up: a copy taken before it lacks it, and a copy
// taken after it holds every key created so far. Newest is the version that the store
// recorded last, not the one with the latest CreatedAt, because replica clocks can
// disagree. now is the caller's clock: keys pending deletion count until deletionMargin
// before their deletion time.
//
// NOTE: two creations that overlap on two replicas may generate their objects in the
// reverse of the order in which the store recorded them, so a copy taken between the two generations
// lacks the version recorded first and still passes.
func CheckTokenCurrent(ctx context.Context, token hsm.Token, st store.KeyStore, now time.Time) error {
	newest, err := st.ActiveVersions(ctx, 1, now.Add(deletionMargin))
	if err != nil {
		return fmt.Errorf("read the newest key version: %w", err)
	}
	if len(newest) == 0 {
		return nil
	}

	v := newest[0]
	ref := hsm.KeyRef{KeyID: v.KeyID, Version: v.Version}
	exists, err := lookupWithRetries(ctx, token, ref)
	if err != nil {
		return fmt.Errorf("look up the newest key version %s: %w", ref, err)
	}
	if !exists {
		return &TokenBehindError{Missing: ref, CreatedAt: v.CreatedAt}
	}
	return nil
}

// lookupWithRetries reports whether the token holds ref, looking again after each pause
// of lookupRetries while it does not.
func lookupWithRetries(ctx context.Context, token hsm.Token, ref hsm.KeyRef) (bool, error) {
	exists, err := token.KeyExists(ctx, ref)
	for _, pause := range lookupRetries {
		if err != nil || exists {
			break
		}

		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pause):
		}
		exists, err = token.KeyExists(ctx, ref)
	}
	return exists, err
}

// MarkLostVersions accepts a token restored from a backup after the live token was lost.
// Every active version whose object the token lacks is marked destroyed, and each enabled
// key whose current version is among them is disabled, so that calls get KMS.0209 (key
// disabled) instead of failing on a missing object. Each version and key is logged. It
// returns how many versions were marked, and stops at the first store or token failure.
// A second run with the same newest missing version goes on from there. now is as for
// CheckTokenCurrent.
//
// The token's objects are listed once (hsm.Token.ListKeys), and once more after the
// pauses of lookupRetries when versions seem missing.
func MarkLostVersions(
	ctx context.Context, token hsm.Token, st store.KeyStore, now time.Time, log *slog.Logger,
) (int, error) {
	versions, err := st.ActiveVersions(ctx, 0, now.Add(deletionMargin))
	if err != nil {
		return 0, fmt.Errorf("list active key versions: %w", err)
	}

	missing, err := missingVersions(ctx, token, versions)
	if err != nil || len(missing) == 0 {
		return 0, err
	}
	var wait time.Duration
	for _, pause := range lookupRetries {
		wait += pause
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(wait):
	}
	missing, err = missingVersions(ctx, token, missing)
	if err != nil {
		return 0, err
	}
	log.Warn("marking the key versions that the restored token lacks as lost",
		"active_key_versions", len(versions), "lost_key_versions", len(missing))

	// Oldest first, and each key disabled before its version is marked: a run cut short
	// leaves the newest missing version unmarked, so the same accept_restored_token value
	// goes on from there, and never an enabled key whose current version is marked.
	slices.Reverse(missing)
	for i, v := range missing {
		if err := disableIfCurrent(ctx, st, v, log); err != nil {
			return i, err
		}

		if err := st.MarkVersionDestroyed(ctx, v.KeyID, v.Version); err != nil {
			return i, fmt.Errorf("mark key version %s:%d destroyed: %w", v.KeyID, v.Version, err)
		}
		log.Error("key version lost: the restored token lacks its object, so data keys "+
			"sealed under it can no longer be decrypted", "key_id", v.KeyID,
			"key_version", v.Version, "project_id", v.ProjectID)
	}
	return len(missing), nil
}

// missingVersions returns the versions whose object the token lacks, in the given order.
func missingVersions(
	ctx context.Context, token hsm.Token, versions []store.KeyVersion,
) ([]store.KeyVersion, error) {
	refs, err := token.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the token's key objects: %w", err)
	}
	inToken := make(map[hsm.KeyRef]bool, len(refs))
	for _, ref := range refs {
		inToken[ref] = true
	}

	var missing []store.KeyVersion
	for _, v := range versions {
		if !inToken[hsm.KeyRef{KeyID: v.KeyID, Version: v.Version}] {
			missing = append(missing, v)
		}
	}
	return missing, nil
}

// disableIfCurrent disables the key of v when v is its current version and the key is
// enabled. A key pending deletion keeps its state: cancelling the deletion disables it.
func disableIfCurrent(ctx context.Context, st store.KeyStore, v store.KeyVersion, log *slog.Logger) error {
	k, err := st.GetKey(ctx, v.ProjectID, v.KeyID)
	if err != nil {
		return fmt.Errorf("read key %s: %w", v.KeyID, err)
	}
	if k.CurrentVersion != v.Version || k.State != store.KeyStateEnabled {
		return nil
	}

	k.State = store.KeyStateDisabled
	if _, err := st.UpdateKey(ctx, k); err != nil {
		return fmt.Errorf("disable key %s: %w", v.KeyID, err)
	}
	log.Error("key disabled: its current version was lost with the token", "key_id", v.KeyID,
		"project_id", v.ProjectID, "key_version", v.Version)
	return nil
}

// checkTokenCurrent runs CheckTokenCurrent and remembers the outcome for TokenBehindStore.
// The first check that finds the token behind logs it.
func (s *Service) checkTokenCurrent(ctx context.Context) error {
	err := CheckTokenCurrent(ctx, s.token, s.store, s.cfg.Clock())
	behind := errors.Is(err, ErrTokenBehindStore)
	if s.tokenBehind.Swap(behind) != behind && behind {
		s.log.Error("the token is older than the store: kmsd creates no key and reports "+
			"not ready until the live token is back", "error", err)
	}
	return err
}

// TokenBehindStore returns an error wrapping ErrTokenBehindStore while the token is
// older than the store, for /readyz. Once a check has found it so, each call checks
// again, so that readiness returns with the live token. Otherwise it returns nil without
// touching the token or the store. It is safe for concurrent use.
func (s *Service) TokenBehindStore(ctx context.Context) error {
	if !s.tokenBehind.Load() {
		return nil
	}
	err := s.checkTokenCurrent(ctx)
	if errors.Is(err, ErrTokenBehindStore) {
		return err
	}
	return nil
}

// requireCurrentToken returns an *Error unless the token holds the newest active key
// version, so that no key is created in an older copy of the token.
func (s *Service) requireCurrentToken(ctx context.Context, op string) error {
	err := s.checkTokenCurrent(ctx)
	if err == nil {
		return nil
	}
	return tokenCheckError(op, err)
}

// missingObject turns hsm.ErrKeyNotFound for ref, a version that the store records, into
// an *Error: 400 KMS.2203 for opening under a version marked destroyed (see
// MarkLostVersions), and a retryable 503 otherwise.
func (s *Service) missingObject(ctx context.Context, op string, ref hsm.KeyRef, opening bool, err error) error {
	// While a check has found the token behind, calls fail at once instead of each
	// waiting through lookupRetries; /readyz checks again (TokenBehindStore).
	if s.tokenBehind.Load() {
		return tokenCheckError(op, fmt.Errorf("%w: key version %s is missing", ErrTokenBehindStore, ref))
	}
	if checkErr := s.checkTokenCurrent(ctx); checkErr != nil {
		return tokenCheckError(op, checkErr)
	}

	if opening && s.versionDestroyed(ctx, ref) {
		return Errorf(CodeDecryptFailed, "cipher_text was made with a key version that no "+
			"longer exists")
	}
	// The store names the version and the token holds the newest one. A likely cause is
	// that another replica made the object a moment ago and this process's view of a
	// SoftHSM2 token has not caught up yet, so the caller may retry.
	return &Error{Code: CodeUnavailable, Message: "the key's token object was not found; retry later",
		Err: fmt.Errorf("%s: the token has no object for key version %s: %w", op, ref, err)}
}

// versionDestroyed reports whether the store marks ref destroyed. A store failure is
// logged and counts as not destroyed, so the caller returns 500.
func (s *Service) versionDestroyed(ctx context.Context, ref hsm.KeyRef) bool {
	versions, err := s.store.ListKeyVersions(ctx, ref.KeyID)
	if err != nil {
		s.log.Warn("reading the key versions failed", "key_id", ref.KeyID,
			"key_version", ref.Version, "error", err)
		return false
	}
	for _, v := range versions {
		if v.Version == ref.Version {
			return v.State == store.VersionDestroyed
		}
	}
	return false
}

// tokenCheckError turns a CheckTokenCurrent failure into an *Error: 503 KMS.0102 for a
// token older than the store or unavailable, and storeError's error otherwise. The caller
// sees only that the token is unavailable; the log gets the cause.
func tokenCheckError(op string, err error) error {
	if errors.Is(err, ErrTokenBehindStore) {
		err = fmt.Errorf("%w: %w", hsm.ErrUnavailable, err)
	}
	if errors.Is(err, hsm.ErrUnavailable) {
		return tokenError(op, err)
	}
	return storeError(op, err)
}
