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
func (s *Service) RotateOnDemand(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	if err := s.authorize(ctx, p, auth.OpRotateOnDemand, nil); err != nil {
		return store.Key{}, err
	}
	k, err := s.freshKey(ctx, p.ProjectID, keyID)
	if err != nil {
		return store.Key{}, err
	}
	if err := rotatable(k); err != nil {
		return store.Key{}, err
	}
	if err := usableKey(k); err != nil {
		return store.Key{}, err
	}

	return s.rotateKey(ctx, k)
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

		locked, err := s.store.WithKeyLock(ctx, k.ID, func(ctx context.Context) error {
			return s.rotateIfDue(ctx, k.ProjectID, k.ID, now)
		})
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

// rotateIfDue re-reads the key under its job lock and rotates it if it is still due.
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
// is enabled, as the seal limit requires.
func (s *Service) rotateIfCurrent(ctx context.Context, projectID, keyID string, version uint32) error {
	k, err := s.store.GetKey(ctx, projectID, keyID)
	if err != nil {
		return err
	}
	if k.CurrentVersion != version || k.State != store.KeyStateEnabled {
		return nil
	}

	_, err = s.rotateKey(ctx, k)
	return err
}

// rotateKey adds version k.CurrentVersion+1: a "creating" row, then the token object,
// then the row made active and current together with the key's rotation fields. Earlier
// versions stay active, so everything sealed under them still opens. When the key
// changed meanwhile (stale revision), the new object is destroyed and the rotation fails
// with a retryable error.
func (s *Service) rotateKey(ctx context.Context, k store.Key) (store.Key, error) {
	if k.CurrentVersion == math.MaxUint32 {
		return store.Key{}, &Error{Code: CodeInternal, Message: "internal error",
			Err: fmt.Errorf("key %s has used every version number", k.ID)}
	}
	ref := hsm.KeyRef{KeyID: k.ID, Version: k.CurrentVersion + 1}

	if err := s.requireCurrentToken(ctx, "rotate key"); err != nil {
		return store.Key{}, err
	}

	if err := s.store.BeginKeyVersion(ctx, ref.KeyID, ref.Version); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return store.Key{}, keyUpdateError(err)
		}
		return store.Key{}, storeError("begin key version", err)
	}

	if err := s.token.GenerateKey(ctx, ref); err != nil {
		s.abortVersion(ctx, ref)
		return store.Key{}, tokenError("generate key", err)
	}

	k.LastRotationAt = s.cfg.Clock().UTC()
	k.RotationCount++
	if err := s.store.ActivateKeyVersion(ctx, k, ref.Version); err != nil {
		s.destroyUncommitted(ctx, ref)
		return store.Key{}, keyUpdateError(err)
	}
	s.dropCached(k.ProjectID, k.ID)

	s.log.Info("key rotated", "key_id", k.ID, "project_id", k.ProjectID,
		"key_version", ref.Version)
	k.CurrentVersion = ref.Version
	k.Revision++
	return k, nil
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
