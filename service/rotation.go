package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Limits of rotation_interval, in days, from the Huawei Cloud KMS API v1.0. Enabling
// rotation on a key without an interval sets the default.
const (
	MinRotationInterval     = 30
	MaxRotationInterval     = 365
	DefaultRotationInterval = 365
)

// EnableKeyRotation turns automatic rotation on, with the default interval of 365 days
// when none was set. The key must not be pending deletion.
func (s *Service) EnableKeyRotation(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	return s.changeKey(ctx, p, auth.OpEnableKeyRotation, keyID, func(k *store.Key, _ time.Time) error {
		if err := rotatable(*k); err != nil {
			return err
		}
		k.RotationEnabled = true
		if k.RotationInterval == 0 {
			k.RotationInterval = DefaultRotationInterval
		}
		return nil
	})
}

// DisableKeyRotation turns automatic rotation off. Turning it off twice is not an error.
func (s *Service) DisableKeyRotation(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	return s.changeKey(ctx, p, auth.OpDisableKeyRotation, keyID, func(k *store.Key, _ time.Time) error {
		if k.State == store.KeyStatePendingDeletion {
			return Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
		}
		k.RotationEnabled = false
		return nil
	})
}

// UpdateKeyRotationInterval sets the rotation interval in days, 30 to 365. Rotation must
// be on (KMS.0313 otherwise).
func (s *Service) UpdateKeyRotationInterval(
	ctx context.Context,
	p auth.Principal,
	keyID string,
	days int,
) (store.Key, error) {
	if days < MinRotationInterval || days > MaxRotationInterval {
		return store.Key{}, Errorf(CodeInvalidParameter,
			"rotation_interval must be %d to %d days", MinRotationInterval, MaxRotationInterval)
	}

	return s.changeKey(ctx, p, auth.OpUpdateKeyRotationInterval, keyID,
		func(k *store.Key, _ time.Time) error {
			if err := rotatable(*k); err != nil {
				return err
			}
			if !k.RotationEnabled {
				return Errorf(CodeRotationDisabled, "key rotation is not enabled for the key")
			}
			k.RotationInterval = days
			return nil
		})
}

// RotationStatus is the result of get-key-rotation-status.
type RotationStatus struct {
	Key store.Key
	// Versions are the key versions whose token objects exist, oldest first.
	Versions []store.KeyVersion
}

// KeyRotationStatus returns the rotation settings and the live versions of a key.
func (s *Service) KeyRotationStatus(ctx context.Context, p auth.Principal, keyID string) (RotationStatus, error) {
	if err := s.authorize(ctx, p, auth.OpGetKeyRotationStatus, nil); err != nil {
		return RotationStatus{}, err
	}
	k, err := s.freshKey(ctx, p.ProjectID, keyID)
	if err != nil {
		return RotationStatus{}, err
	}

	versions, err := s.store.ListKeyVersions(ctx, k.ID)
	if err != nil {
		return RotationStatus{}, storeError("list key versions", err)
	}
	live := versions[:0]
	for _, v := range versions {
		if v.State == store.VersionActive {
			live = append(live, v)
		}
	}
	return RotationStatus{Key: k, Versions: live}, nil
}

// RotateOnDemand rotates an enabled key now, whether or not automatic rotation is on.
// Concurrent calls for one key wait for each other, in this process and, on PostgreSQL,
// across replicas (withRotationLocks), and each adds a version. A rotation that loses to
// another change of the key, such as a description update, is retried up to
// maxKeyChangeAttempts times.
func (s *Service) RotateOnDemand(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	if err := s.authorize(ctx, p, auth.OpRotateOnDemand, nil); err != nil {
		return store.Key{}, err
	}
	if _, err := s.freshKey(ctx, p.ProjectID, keyID); err != nil {
		return store.Key{}, err
	}

	var rotated store.Key
	err := s.withRotationLocks(ctx, keyID, func(ctx context.Context) error {
		for attempt := 1; ; attempt++ {
			k, err := s.freshKey(ctx, p.ProjectID, keyID)
			if err != nil {
				return err
			}
			if err := rotatable(k); err != nil {
				return err
			}
			if err := usableKey(k); err != nil {
				return err
			}
			if int(k.CurrentVersion) >= s.cfg.MaxOnDemandVersion {
				return Errorf(CodeKeyQuota, "key %s is at version %d, and rotate-on-demand "+
					"creates versions only up to %d on this service (max_on_demand_version). "+
					"Scheduled rotation still runs", k.ID, k.CurrentVersion,
					s.cfg.MaxOnDemandVersion)
			}

			rotated, err = s.rotateKey(ctx, k)
			if !errors.Is(err, store.ErrConflict) || attempt == maxKeyChangeAttempts {
				return err
			}
			s.log.Info("rotation lost to a concurrent change of the key; retrying",
				"key_id", keyID, "attempt", attempt)
		}
	})
	if err != nil {
		return store.Key{}, err
	}
	return rotated, nil
}

// withRotationLocks runs fn while holding this process's rotation lock of keyID and then
// the key's job lock in the store, waiting for both (store.JobStore.WaitKeyLock).
// RunRotation takes them in the same order, so no two rotations of one key can each hold
// the lock that the other waits for. It returns fn's error, or an *Error when a lock
// could not be taken.
func (s *Service) withRotationLocks(ctx context.Context, keyID string, fn func(ctx context.Context) error) error {
	unlock, err := s.lockRotation(ctx, keyID)
	if err != nil {
		return err
	}
	defer unlock()

	ran := false
	var fnErr error
	err = s.store.WaitKeyLock(ctx, keyID, func(ctx context.Context) error {
		ran = true
		fnErr = fn(ctx)
		return fnErr
	})
	switch {
	case ran:
		return fnErr
	case errors.Is(err, store.ErrKeyLocked):
		return errRotationInProgress(err)
	default:
		return storeError("lock key "+keyID, err)
	}
}

// errRotationInProgress is the retryable error of a rotation that did not get a lock of
// its key because another rotation or job holds it.
func errRotationInProgress(err error) error {
	return &Error{Code: CodeUnavailable,
		Message: "another rotation of the key is in progress; retry", Err: err}
}

// rotationLockWait bounds how long a rotation waits for this process's rotation lock of
// its key. With store.KeyLockWait after it, a rotate-on-demand call queued behind others
// still gets its response within kmsd's 30 s HTTP write timeout.
var rotationLockWait = 15 * time.Second

// lockRotation takes this process's rotation lock of keyID (Service.rotations) and
// returns the function that releases it. When ctx ends first or rotationLockWait
// passes, the error is a retryable KMS.0102 that wraps the context's error.
func (s *Service) lockRotation(ctx context.Context, keyID string) (unlock func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, rotationLockWait)
	defer cancel()

	unlock, err = s.rotations.lock(ctx, keyID)
	if err != nil {
		return nil, errRotationInProgress(
			fmt.Errorf("wait for the rotation lock of key %s: %w", keyID, err))
	}
	return unlock, nil
}

// RunRotation rotates every enabled key with rotation on whose interval has passed, each
// under the key's job lock. Disabled keys and keys pending deletion are never rotated.
// It returns how many keys it rotated; a failure on one key is logged and the others
// go on.
func (s *Service) RunRotation(ctx context.Context) (int, error) {
	now := s.cfg.Clock().UTC()
	due, err := s.store.ListKeysDueForRotation(ctx, now)
	if err != nil {
		return 0, storeError("list keys due for rotation", err)
	}

	rotated := 0
	for _, k := range due {
		if err := ctx.Err(); err != nil {
			return rotated, err
		}

		locked, err := s.rotateIfDueLocked(ctx, k, now)
		switch {
		case err != nil:
			s.log.Warn("scheduled rotation failed; the next run retries", "key_id", k.ID,
				"error", err)
		case locked:
			rotated++
		}
	}
	return rotated, nil
}

// rotateIfDueLocked runs rotateIfDue for k under this process's rotation lock and then
// the key's job lock, in withRotationLocks' order. It reports false without rotating when
// another replica holds the job lock.
func (s *Service) rotateIfDueLocked(ctx context.Context, k store.Key, now time.Time) (bool, error) {
	unlock, err := s.lockRotation(ctx, k.ID)
	if err != nil {
		return false, err
	}
	defer unlock()

	return s.store.WithKeyLock(ctx, k.ID, func(ctx context.Context) error {
		return s.rotateIfDue(ctx, k.ProjectID, k.ID, now)
	})
}

// rotateIfDue re-reads the key, whose locks the caller holds, and rotates it if it is
// still due.
func (s *Service) rotateIfDue(ctx context.Context, projectID, keyID string, now time.Time) error {
	k, err := s.store.GetKey(ctx, projectID, keyID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if k.State != store.KeyStateEnabled || !k.RotationEnabled || k.RotationInterval <= 0 {
		return nil
	}

	last := k.LastRotationAt
	if last.IsZero() {
		last = k.CreatedAt
	}
	if now.Before(last.Add(time.Duration(k.RotationInterval) * 24 * time.Hour)) {
		return nil
	}

	_, err = s.rotateKey(ctx, k)
	return err
}

// rotateIfCurrent rotates the key if version is still its current version and the key
// is enabled, as the seal limit requires. It runs in the request whose seal reached the
// limit, whose data key is already sealed, so it takes the key's locks only when they
// are free, in withRotationLocks' order, and otherwise returns errRotationInProgress for
// a later seal to retry.
func (s *Service) rotateIfCurrent(ctx context.Context, projectID, keyID string, version uint32) error {
	unlock, ok := s.rotations.tryLock(keyID)
	if !ok {
		return errRotationInProgress(fmt.Errorf("key %s is being rotated in this process", keyID))
	}
	defer unlock()

	locked, err := s.store.WithKeyLock(ctx, keyID, func(ctx context.Context) error {
		k, err := s.store.GetKey(ctx, projectID, keyID)
		if err != nil {
			return err
		}
		if k.CurrentVersion != version || k.State != store.KeyStateEnabled {
			return nil
		}

		_, err = s.rotateKey(ctx, k)
		return err
	})
	if err == nil && !locked {
		return errRotationInProgress(fmt.Errorf("key %s is locked by another replica", keyID))
	}
	return err
}

// rotateKey adds version k.CurrentVersion+1: a "creating" row, then the token object,
// then the row made active and current together with the key's rotation fields. Earlier
// versions stay active, so everything sealed under them still opens. When the key
// changed meanwhile (stale revision), the new object is destroyed and the rotation fails
// with a retryable error.
func (s *Service) rotateKey(ctx context.Context, k store.Key) (store.Key, error) {
	if err := s.requireCurrentToken(ctx, "rotate key"); err != nil {
		return store.Key{}, err
	}

	version, err := s.beginNextVersion(ctx, k)
	if err != nil {
		return store.Key{}, err
	}
	ref, err := s.generateVersion(ctx, k, hsm.KeyRef{KeyID: k.ID, Version: version})
	if err != nil {
		return store.Key{}, err
	}

	k.LastRotationAt = s.cfg.Clock().UTC()
	k.RotationCount++
	err = s.store.ActivateKeyVersion(ctx, k, ref.Version)
	if err != nil && !s.destroyUncommitted(ctx, ref) {
		return store.Key{}, keyUpdateError(err)
	}
	s.dropCached(k.ProjectID, k.ID)

	s.log.Info("key rotated", "key_id", k.ID, "project_id", k.ProjectID,
		"key_version", ref.Version)
	k.CurrentVersion = ref.Version
	k.Revision++
	return k, nil
}

// maxSkippedVersions bounds how many version numbers one rotation skips because the token
// already holds objects with those numbers.
const maxSkippedVersions = 4

// generateVersion generates the token object of ref, whose "creating" row the caller
// wrote, and returns the version it generated. An object that already has ref's number
// has no row in the store, yet it is kept. A failed rotation may be about to destroy it,
// or its destruction failed. The store may also be older than the token (a restored
// backup), and then the object may still open data keys. The rotation takes the next
// number instead, up to maxSkippedVersions times, and then fails with a retryable
// conflict.
func (s *Service) generateVersion(ctx context.Context, k store.Key, ref hsm.KeyRef) (hsm.KeyRef, error) {
	for skipped := 0; ; skipped++ {
		err := s.token.GenerateKey(ctx, ref)
		if err == nil {
			return ref, nil
		}
		s.abortVersion(ctx, ref)
		if !errors.Is(err, hsm.ErrKeyExists) {
			return hsm.KeyRef{}, tokenError("generate key", err)
		}
		if skipped == maxSkippedVersions {
			return hsm.KeyRef{}, keyUpdateError(fmt.Errorf("%w: %w", store.ErrConflict, err))
		}

		s.log.Warn("token object of the key's next version exists without a store row; "+
			"keeping the object and rotating to the number after it",
			"key_id", ref.KeyID, "key_version", ref.Version)
		version, err := s.beginVersion(ctx, ref.KeyID, k.CurrentVersion, ref.Version)
		if err != nil {
			return hsm.KeyRef{}, err
		}
		ref.Version = version
	}
}

// beginNextVersion records the start of the key's next version and returns its number:
// k.CurrentVersion+1, or one above every version of the key when rows that are not
// active hold the numbers above the current version. A kmsd stopped during a rotation
// leaves such a row in "creating", and so can a request cancelled while PostgreSQL
// committed its insert. Reconciliation removes the row only after
// Config.StaleVersionAge, and the key could not rotate until then. An active version
// above the current one means that k is stale, which returns a retryable conflict, as
// does a second conflict.
func (s *Service) beginNextVersion(ctx context.Context, k store.Key) (uint32, error) {
	version, err := s.beginVersion(ctx, k.ID, k.CurrentVersion, k.CurrentVersion)
	if !errors.Is(err, store.ErrConflict) {
		return version, err
	}

	versions, err := s.store.ListKeyVersions(ctx, k.ID)
	if err != nil {
		return 0, storeError("list key versions", err)
	}
	highest := k.CurrentVersion + 1
	for _, v := range versions {
		if v.Version > k.CurrentVersion && v.State == store.VersionActive {
			return 0, keyUpdateError(store.ErrConflict)
		}
		highest = max(highest, v.Version)
	}
	s.log.Info("versions of the key are left in creating; rotating to a higher version",
		"key_id", k.ID, "key_version", k.CurrentVersion+1, "next_version", highest+1)
	return s.beginVersion(ctx, k.ID, k.CurrentVersion, highest)
}

// beginVersion begins version after+1 of keyID; current is the key's current version.
func (s *Service) beginVersion(ctx context.Context, keyID string, current, after uint32) (uint32, error) {
	if after == math.MaxUint32 {
		return 0, &Error{Code: CodeInternal, Message: "internal error",
			Err: fmt.Errorf("key %s at version %d has used every version number", keyID, current)}
	}
	err := s.store.BeginKeyVersion(ctx, keyID, after+1)
	if errors.Is(err, store.ErrConflict) {
		return 0, keyUpdateError(err)
	}
	if err != nil {
		return 0, storeError("begin key version", err)
	}
	return after + 1, nil
}

// rotatable checks that k is a key whose rotation settings may change: not pending
// deletion and not of external origin.
func rotatable(k store.Key) error {
	if k.State == store.KeyStatePendingDeletion {
		return Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
	}
	if k.Origin != OriginKMS {
		return Errorf(CodeExternalNoRotation, "keys with imported material cannot be rotated")
	}
	return nil
}
