package service

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// DefaultSealLimit is the default Config.SealLimit: 3 * 2^30 seals, three quarters of
// the 2^32 that NIST SP 800-38D allows one AES-GCM key with random 96-bit IVs. The
// margin covers seals that other replicas made but have not flushed to the store yet.
const DefaultSealLimit uint64 = 3 << 30

// sealCounters counts seals per key version in memory. The hot path does one map
// lookup and one atomic add. The store is read once per key version and process, and
// written only by FlushSealCounts. The zero value is ready to use.
type sealCounters struct {
	m sync.Map // hsm.KeyRef -> *sealCounter
}

type sealCounter struct {
	load sync.Once
	// stored is the count in the store at its last read: the load, this process's last
	// flush, or a refresh (refreshSealCount). It includes the counts that other replicas
	// flushed before that read. readAt is the time of that read in Unix nanoseconds of
	// Config.Clock, or 0 when none succeeded.
	stored atomic.Uint64
	readAt atomic.Int64
	// pending counts seals not yet flushed.
	pending atomic.Uint64
	// rotating is set while, or after, this version's seal limit started a rotation.
	rotating atomic.Bool
	// retryAt is when a seal may start the rotation again after it failed, in Unix
	// nanoseconds of Config.Clock, or 0.
	retryAt atomic.Int64
}

// sealCountRefresh is the age of a counter's stored count past which the first seal
// after a flush reads the count again. A replica that sealed little for a while then
// counts what the other replicas flushed meanwhile before it compares with the limit.
const sealCountRefresh = time.Second

// sealRotationRetry is how long the seals of a version past its seal limit go on without
// starting the rotation again after it failed. Each attempt writes to the store and logs
// a line, and the seals succeed meanwhile.
const sealRotationRetry = 10 * time.Second

// counter returns the counter of ref, loading its stored count on first use.
func (s *Service) sealCounter(ctx context.Context, ref hsm.KeyRef) *sealCounter {
	v, _ := s.seals.m.LoadOrStore(ref, &sealCounter{})
	c := v.(*sealCounter)

	c.load.Do(func() {
		ctx, cancel := detach(ctx)
		defer cancel()
		n, err := s.store.SealCount(ctx, ref.KeyID, ref.Version)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("reading the seal count failed; counting from 0 until it is read again",
				"key_id", ref.KeyID, "key_version", ref.Version, "error", err)
			return
		}
		c.storeRead(n, s.cfg.Clock())
	})
	return c
}

// refreshSealCount reads the stored count of ref again when the last read is older than
// sealCountRefresh. A failure leaves the count as it was, for the next flush to update.
func (s *Service) refreshSealCount(ctx context.Context, ref hsm.KeyRef, c *sealCounter) {
	now := s.cfg.Clock()
	if now.UnixNano()-c.readAt.Load() < int64(sealCountRefresh) {
		return
	}
	ctx, cancel := detach(ctx)
	defer cancel()
	n, err := s.store.SealCount(ctx, ref.KeyID, ref.Version)
	if err == nil {
		c.storeRead(n, now)
	}
}

// storeRead records n, a count read from the store at time at. Stored counts only grow,
// so a read that is older than the one in place, and so lower, is dropped.
func (c *sealCounter) storeRead(n uint64, at time.Time) {
	for {
		old := c.stored.Load()
		if n <= old || c.stored.CompareAndSwap(old, n) {
			break
		}
	}
	c.readAt.Store(at.UnixNano())
}

// countSeal records one seal under ref, the current version of k, and rotates k when the
// version has reached Config.SealLimit. The rotation runs in the request that reaches
// the limit, once per version and process. Its failure is logged, not returned, because
// the seal itself succeeded, and the first seal after sealRotationRetry tries again.
func (s *Service) countSeal(ctx context.Context, k store.Key, ref hsm.KeyRef) {
	c := s.sealCounter(ctx, ref)
	pending := c.pending.Add(1)
	if pending == 1 {
		// The first seal since the last flush: the stored count may be old.
		s.refreshSealCount(ctx, ref, c)
	}
	total := c.stored.Load() + pending
	if total < s.cfg.SealLimit {
		return
	}
	now := s.cfg.Clock()
	if now.UnixNano() < c.retryAt.Load() || !c.rotating.CompareAndSwap(false, true) {
		return
	}

	ctx, cancel := detach(ctx)
	defer cancel()
	s.log.Info("key version reached its seal limit; rotating", "key_id", k.ID,
		"key_version", ref.Version, "seals", total, "seal_limit", s.cfg.SealLimit)

	if err := s.rotateIfCurrent(ctx, k.ProjectID, k.ID, ref.Version); err != nil {
		c.retryAt.Store(now.Add(sealRotationRetry).UnixNano())
		c.rotating.Store(false)
		s.log.Warn("rotation at the seal limit failed; a seal retries it later",
			"key_id", k.ID, "key_version", ref.Version, "retry_after", sealRotationRetry,
			"error", err)
	}
}

// FlushSealCounts adds the seal counts not yet stored to the store. On failure the counts
// stay pending for the next flush. Call it periodically and at shutdown.
func (s *Service) FlushSealCounts(ctx context.Context) error {
	var counts []store.SealCount
	var counters []*sealCounter
	s.seals.m.Range(func(key, value any) bool {
		c := value.(*sealCounter)
		if n := c.pending.Swap(0); n > 0 {
			ref := key.(hsm.KeyRef)
			counts = append(counts, store.SealCount{KeyID: ref.KeyID, Version: ref.Version, Count: n})
			counters = append(counters, c)
		}
		return true
	})
	if len(counts) == 0 {
		return nil
	}

	totals, err := s.store.AddSealCounts(ctx, counts)
	if err != nil {
		for i, c := range counters {
			c.pending.Add(counts[i].Count)
		}
		return storeError("flush seal counts", err)
	}

	// The stored totals include the seals that other replicas flushed, so that each
	// replica compares the seal limit with the seals of all of them.
	now := s.cfg.Clock()
	for i, c := range counters {
		c.storeRead(totals[i], now)
	}
	return nil
}

// forgetSealCounters drops the counters of a deleted key, whose versions are gone.
func (s *Service) forgetSealCounters(keyID string) {
	s.seals.m.Range(func(key, _ any) bool {
		if key.(hsm.KeyRef).KeyID == keyID {
			s.seals.m.Delete(key)
		}
		return true
	})
}
