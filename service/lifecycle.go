package service

import (
	"context"
	"errors"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Limits of schedule-key-deletion's pending_days, from the Huawei Cloud KMS API v1.0.
const (
	MinPendingDays = 7
	MaxPendingDays = 1096
)

// maxKeyChangeAttempts bounds the read-modify-write retries of a key change that loses an
// optimistic revision check to a concurrent change.
const maxKeyChangeAttempts = 3

// EnableKey moves a disabled key to enabled. Any other state is KMS.1201.
//
// A key whose current version was lost with its token object (MarkLostVersions) is
// rotated first, while it is still disabled, so that it seals under a new version once
// enabled. When the rotation fails the key stays disabled.
func (s *Service) EnableKey(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	if err := s.authorize(ctx, p, auth.OpEnableKey, nil); err != nil {
		return store.Key{}, err
	}
	k, err := s.freshKey(ctx, p.ProjectID, keyID)
	if err != nil {
		return store.Key{}, err
	}
	if k.State == store.KeyStateDisabled &&
		s.versionDestroyed(ctx, hsm.KeyRef{KeyID: k.ID, Version: k.CurrentVersion}) {
		s.log.Warn("the key's current version was lost with its token object; rotating "+
			"it before enabling it", "key_id", k.ID, "project_id", k.ProjectID,
			"key_version", k.CurrentVersion)
		if _, err := s.rotateKey(ctx, k); err != nil {
			return store.Key{}, err
		}
	}

	return s.changeKey(ctx, p, auth.OpEnableKey, keyID, func(k *store.Key, _ time.Time) error {
		if k.State != store.KeyStateDisabled {
			return Errorf(CodeKeyNotDisabled, "the key is not disabled (key_state %s)", k.State)
		}
		k.State = store.KeyStateEnabled
		return nil
	})
}

// DisableKey moves an enabled key to disabled. Any other state is KMS.1301. A disabled
// key neither encrypts nor decrypts until EnableKey.
func (s *Service) DisableKey(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	return s.changeKey(ctx, p, auth.OpDisableKey, keyID, func(k *store.Key, _ time.Time) error {
		if k.State != store.KeyStateEnabled {
			return Errorf(CodeKeyNotEnabled, "the key is not enabled (key_state %s)", k.State)
		}
		k.State = store.KeyStateDisabled
		return nil
	})
}

// ScheduleKeyDeletion moves a key to pending deletion, and RunDeletion destroys it
// pendingDays days (of 24 hours) from now. pendingDays outside 7 to 1096 is KMS.1401, a
// key already pending deletion KMS.1402. Scheduling turns automatic rotation off, so a
// cancelled deletion leaves the key disabled with rotation off.
func (s *Service) ScheduleKeyDeletion(
	ctx context.Context,
	p auth.Principal,
	keyID string,
	pendingDays int,
) (store.Key, error) {
	if pendingDays < MinPendingDays || pendingDays > MaxPendingDays {
		return store.Key{}, Errorf(CodeInvalidPendingDays,
			"pending_days must be %d to %d", MinPendingDays, MaxPendingDays)
	}

	k, err := s.changeKey(ctx, p, auth.OpScheduleKeyDeletion, keyID,
		func(k *store.Key, now time.Time) error {
			if k.State == store.KeyStatePendingDeletion {
				return Errorf(CodeAlreadyPending, "the key is already pending deletion")
			}
			k.State = store.KeyStatePendingDeletion
			k.DeletionAt = now.Add(time.Duration(pendingDays) * 24 * time.Hour)
			k.RotationEnabled = false
			return nil
		})
	if err != nil {
		return store.Key{}, err
	}

	s.log.Info("key deletion scheduled", "key_id", k.ID, "project_id", k.ProjectID,
		"deletion_at", k.DeletionAt)
	return k, nil
}

// CancelKeyDeletion moves a key pending deletion back to disabled, as Huawei's API does.
// A key not pending deletion is KMS.1501, and so is a key whose window has ended: its
// deletion may already be under way.
func (s *Service) CancelKeyDeletion(ctx context.Context, p auth.Principal, keyID string) (store.Key, error) {
	return s.changeKey(ctx, p, auth.OpCancelKeyDeletion, keyID,
		func(k *store.Key, now time.Time) error {
			if k.State != store.KeyStatePendingDeletion {
				return Errorf(CodeNotPendingDeletion, "the key is not pending deletion")
			}
			// The token check leaves out keys due within deletionMargin, whose objects the
			// deletion job of a replica with a faster clock may be destroying, so such a
			// key can no longer be kept either.
			// NOTE: replicas whose clocks differ by more than deletionMargin can still race
			// here: one cancels while another has begun destroying the key.
			if !now.Before(k.DeletionAt.Add(-deletionMargin)) {
				return Errorf(CodeNotPendingDeletion,
					"the deletion window of the key ends in less than a minute and the key "+
						"may be being deleted")
			}
			k.State = store.KeyStateDisabled
			k.DeletionAt = time.Time{}
			return nil
		})
}

// changeKey authorizes op, reads the key from the store (never from the cache), applies
// change and stores the result with an optimistic revision check, retrying the whole
// read-modify-write when another change won the race. The cache entry is dropped after
// every stored change.
func (s *Service) changeKey(
	ctx context.Context,
	p auth.Principal,
	op, keyID string,
	change func(k *store.Key, now time.Time) error,
) (store.Key, error) {
	if err := s.authorize(ctx, p, op, nil); err != nil {
		return store.Key{}, err
	}

	for attempt := 1; ; attempt++ {
		k, err := s.freshKey(ctx, p.ProjectID, keyID)
		if err != nil {
			return store.Key{}, err
		}

		if err := change(&k, s.cfg.Clock().UTC()); err != nil {
			return store.Key{}, err
		}

		updated, err := s.store.UpdateKey(ctx, k)
		if err == nil {
			s.dropCached(updated.ProjectID, updated.ID)
			return updated, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt == maxKeyChangeAttempts {
			return store.Key{}, keyUpdateError(err)
		}
	}
}

// freshKey returns the key with id keyID in the project, read from the store.
func (s *Service) freshKey(ctx context.Context, projectID, keyID string) (store.Key, error) {
	if keyID == "" {
		return store.Key{}, Errorf(CodeMissingParameter, "key_id is missing")
	}
	if !isKeyID(keyID) {
		return store.Key{}, Errorf(CodeInvalidKeyID, "key_id is not a valid key id")
	}

	k, err := s.store.GetKey(ctx, projectID, keyID)
	if errors.Is(err, store.ErrNotFound) {
		s.dropCached(projectID, keyID)
		return store.Key{}, errKeyNotFound()
	}
	if err != nil {
		return store.Key{}, storeError("get key", err)
	}
	return k, nil
}

// keyUpdateError turns a failed key update into an *Error. A conflict that outlived the
// retries becomes a retryable KMS.0102.
func keyUpdateError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errKeyNotFound()
	case errors.Is(err, store.ErrConflict):
		return &Error{Code: CodeUnavailable,
			Message: "the key was changed by concurrent requests; retry", Err: err}
	default:
		return storeError("update key", err)
	}
}
