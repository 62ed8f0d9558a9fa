package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// RunJobs runs one round of every background job: Reconcile, RunDeletion, RunRotation
// and FlushSealCounts, in that order. A failing job does not stop the others; the
// returned error joins their errors.
func (s *Service) RunJobs(ctx context.Context) error {
	_, reconcileErr := s.Reconcile(ctx)
	_, deletionErr := s.RunDeletion(ctx)
	_, rotationErr := s.RunRotation(ctx)
	flushErr := s.FlushSealCounts(ctx)
	return errors.Join(reconcileErr, deletionErr, rotationErr, flushErr)
}

// RunDeletion destroys every key whose pending-deletion window has ended (at or before
// Config.Clock), each under the key's job lock: first every version's token object,
// marking each version destroyed, then the key's metadata. When the token fails
// part-way, the key stays pending deletion with the versions destroyed so far marked,
// and the next run goes on from there. A key whose window has not ended is never
// touched. It returns how many keys it deleted; a failure on one key is logged and the
// others go on.
func (s *Service) RunDeletion(ctx context.Context) (int, error) {
	now := s.cfg.Clock().UTC()
	due, err := s.store.ListKeysDueForDeletion(ctx, now)
	if err != nil {
		return 0, storeError("list keys due for deletion", err)
	}

	deleted := 0
	for _, k := range due {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}

		var done bool
		_, err := s.store.WithKeyLock(ctx, k.ID, func(ctx context.Context) error {
			var err error
			done, err = s.deleteIfDue(ctx, k.ProjectID, k.ID, now)
			return err
		})
		if err != nil {
			s.log.Warn("key deletion failed; the key stays pending deletion and the next run retries",
				"key_id", k.ID, "project_id", k.ProjectID, "error", err)
			continue
		}
		if done {
			deleted++
		}
	}
	return deleted, nil
}

// deleteIfDue re-reads the key under its job lock, because it may have been cancelled or
// deleted by another replica since it was listed, and deletes it if it is still due.
func (s *Service) deleteIfDue(ctx context.Context, projectID, keyID string, now time.Time) (bool, error) {
	k, err := s.store.GetKey(ctx, projectID, keyID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if k.State != store.KeyStatePendingDeletion || k.DeletionAt.IsZero() || now.Before(k.DeletionAt) {
		return false, nil
	}

	versions, err := s.store.ListKeyVersions(ctx, k.ID)
	if err != nil {
		return false, err
	}
	for _, v := range versions {
		if v.State == store.VersionDestroyed {
			continue
		}
		if err := s.destroyVersion(ctx, hsm.KeyRef{KeyID: k.ID, Version: v.Version}); err != nil {
			return false, err
		}
	}

	if err := s.store.DeleteKey(ctx, k.ID); err != nil {
		return false, err
	}
	s.dropCached(k.ProjectID, k.ID)
	s.forgetSealCounters(k.ID)

	s.log.Info("key deleted", "key_id", k.ID, "project_id", k.ProjectID,
		"versions", len(versions))
	return true, nil
}

// destroyVersion destroys the token object of ref and marks the version destroyed. An
// object that is already gone (an earlier run destroyed it and then failed to mark it)
// counts as destroyed.
func (s *Service) destroyVersion(ctx context.Context, ref hsm.KeyRef) error {
	err := s.token.DestroyKey(ctx, ref)
	if err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
		return fmt.Errorf("destroy token object of version %d: %w", ref.Version, err)
	}

	if err := s.store.MarkVersionDestroyed(ctx, ref.KeyID, ref.Version); err != nil {
		return fmt.Errorf("mark version %d destroyed: %w", ref.Version, err)
	}
	return nil
}

// Reconcile removes key version rows left in "creating" for longer than
// Config.StaleVersionAge. Such a row is left by a process that died between writing the
// row and committing the key (create-key) or the new version (rotation). Reconcile
// destroys the token object when one exists, then deletes the row. It returns how many rows it removed; a failure on one
// row is logged and the others go on.
func (s *Service) Reconcile(ctx context.Context) (int, error) {
	olderThan := s.cfg.Clock().UTC().Add(-s.cfg.StaleVersionAge)
	stale, err := s.store.ListStaleVersions(ctx, olderThan)
	if err != nil {
		return 0, storeError("list stale key versions", err)
	}

	removed := 0
	for _, v := range stale {
		ref := hsm.KeyRef{KeyID: v.KeyID, Version: v.Version}
		locked, err := s.store.WithKeyLock(ctx, v.KeyID, func(ctx context.Context) error {
			return s.removeStaleVersion(ctx, ref)
		})
		switch {
		case err != nil:
			s.log.Warn("removing a stale key version failed; the next run retries",
				"key_id", v.KeyID, "key_version", v.Version, "error", err)
		case locked:
			removed++
			s.log.Info("stale key version removed", "key_id", v.KeyID, "key_version", v.Version)
		}
	}
	return removed, nil
}

func (s *Service) removeStaleVersion(ctx context.Context, ref hsm.KeyRef) error {
	exists, err := s.token.KeyExists(ctx, ref)
	if err != nil {
		return fmt.Errorf("look up token object: %w", err)
	}
	if exists {
		err := s.token.DestroyKey(ctx, ref)
		if err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
			return fmt.Errorf("destroy token object: %w", err)
		}
	}

	err = s.store.AbortKeyVersion(ctx, ref.KeyID, ref.Version)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
