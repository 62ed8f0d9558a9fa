package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// JobStore serves the background jobs (deletion, rotation, reconciliation) and the seal
// counters of key versions.
type JobStore interface {
	// WithKeyLock runs fn while holding the job lock of keyID, so that replicas sharing
	// the database never run a job on one key at the same time. It returns false without
	// running fn when another holder has the lock, and fn's error otherwise.
	WithKeyLock(ctx context.Context, keyID string, fn func(ctx context.Context) error) (bool, error)

	// WaitKeyLock runs fn while holding the same lock as WithKeyLock, waiting for it
	// while another holder has it, until ctx ends. It returns fn's error, or the error of
	// taking the lock.
	WaitKeyLock(ctx context.Context, keyID string, fn func(ctx context.Context) error) error

	// AddSealCounts adds each count to the seal count of its key version, in one
	// transaction, and returns the stored count of each version after the addition, in
	// the order of counts: the seals of every replica that flushed. Counts of versions
	// that no longer exist are dropped, and their totals are 0, as are those of zero
	// counts.
	AddSealCounts(ctx context.Context, counts []SealCount) ([]uint64, error)

	// SealCount returns the stored seal count of a key version, or ErrNotFound.
	SealCount(ctx context.Context, keyID string, version uint32) (uint64, error)
}

// SealCount is a number of seals (encryptions) made with one key version.
type SealCount struct {
	KeyID   string
	Version uint32
	Count   uint64
}

// keyLockClass is the first key of the per-key job advisory lock on PostgreSQL: the bytes
// of "kmj" read as a big-endian integer, an arbitrary constant distinct from
// migrationLockClass.
const keyLockClass = "7040362"

// WithKeyLock runs fn under the job lock of keyID.
//
// On PostgreSQL the lock is pg_try_advisory_xact_lock on (keyLockClass, hash of the
// schema and keyID). It is taken in a transaction that stays open while fn runs and is
// rolled back afterwards, which releases the lock. A replica that crashes releases it
// when its connection drops. fn's own store calls use other pooled connections. Two keys whose
// hashes collide share a lock, so one of them waits for the next job run.
//
// On SQLite it runs fn at once. The single writer serialises each write, and the jobs are
// written to be idempotent (destroying a missing object counts as destroyed, a stale
// revision fails the second rotation), so two processes on one file may repeat work but
// never corrupt metadata.
func (s *SQLStore) WithKeyLock(
	ctx context.Context,
	keyID string,
	fn func(ctx context.Context) error,
) (bool, error) {
	if s.d.name != postgresDialect.name {
		return true, fn(ctx)
	}

	op := "lock key " + keyID
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return false, s.wrap(op+": begin transaction", err)
	}
	defer func() {
		if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
			s.log.Warn("releasing a key job lock failed", "key_id", keyID, "error", err)
		}
	}()

	var locked bool
	err = tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock("+keyLockClass+
		", hashtext(current_schema() || ':' || $1))", keyID).Scan(&locked)
	if err != nil {
		return false, s.wrap(op, err)
	}
	if !locked {
		return false, nil
	}

	return true, fn(ctx)
}

// KeyLockWait bounds how long WaitKeyLock waits for its turn and for the lock. It is well
// below kmsd's HTTP read and write timeouts (20 s and 30 s), so that a call waiting behind
// a holder that hangs, such as a stopped replica, still gets an error response.
const KeyLockWait = 5 * time.Second

// ErrKeyLocked means that WaitKeyLock did not get the lock within KeyLockWait.
var ErrKeyLocked = errors.New("the key's job lock is held by another process")

// WaitKeyLock runs fn under the job lock of keyID, as WithKeyLock does, but waits up to
// KeyLockWait for the lock (pg_advisory_xact_lock with lock_timeout) instead of giving
// up at once, and then returns an error wrapping ErrKeyLocked. From the wait until fn
// returns it holds one pooled connection, and at most a quarter of the pool's
// connections are held so at once (keyLockWaiters). On SQLite it runs fn at once, as
// WithKeyLock does.
func (s *SQLStore) WaitKeyLock(ctx context.Context, keyID string, fn func(ctx context.Context) error) error {
	if s.d.name != postgresDialect.name {
		return fn(ctx)
	}

	op := "wait for the lock of key " + keyID
	turn := time.NewTimer(KeyLockWait)
	defer turn.Stop()
	select {
	case s.keyLockWaiters <- struct{}{}:
		defer func() { <-s.keyLockWaiters }()
	case <-turn.C:
		return fmt.Errorf("%s: %w: no turn to wait within %s", op, ErrKeyLocked, KeyLockWait)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}

	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(op+": begin transaction", err)
	}
	defer func() {
		err := tx.Rollback()
		// A cancelled call's connection is closed, which releases the lock too.
		if err != nil && !errors.Is(err, sql.ErrTxDone) && ctx.Err() == nil {
			s.log.Warn("releasing a key job lock failed", "key_id", keyID, "error", err)
		}
	}()

	_, err = tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d",
		KeyLockWait.Milliseconds()))
	if err != nil {
		return s.wrap(op, err)
	}
	_, err = tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock("+keyLockClass+
		", hashtext(current_schema() || ':' || $1))", keyID)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		return fmt.Errorf("%s: %w within %s", op, ErrKeyLocked, KeyLockWait)
	}
	if err != nil {
		return s.wrap(op, err)
	}
	return fn(ctx)
}

// AddSealCounts adds the counts in one transaction. Zero counts are skipped.
func (s *SQLStore) AddSealCounts(ctx context.Context, counts []SealCount) ([]uint64, error) {
	if len(counts) == 0 {
		return nil, nil
	}

	totals := make([]uint64, len(counts))
	err := s.inWriteTx(ctx, "add seal counts", func(tx *sql.Tx) error {
		update := s.d.rebind("UPDATE key_versions SET seal_count = seal_count + ? " +
			"WHERE key_id = ? AND version = ? RETURNING seal_count")
		for i, c := range counts {
			totals[i] = 0
			if c.Count == 0 {
				continue
			}
			var total int64
			err := tx.QueryRowContext(ctx, update, int64(c.Count), c.KeyID, c.Version).Scan(&total)
			if errors.Is(err, sql.ErrNoRows) {
				continue // the version no longer exists
			}
			if err != nil {
				return fmt.Errorf("version %d of key %s: %w", c.Version, c.KeyID, err)
			}
			totals[i] = uint64(total)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return totals, nil
}

// SealCount returns the stored seal count of a key version, or ErrNotFound.
func (s *SQLStore) SealCount(ctx context.Context, keyID string, version uint32) (uint64, error) {
	op := fmt.Sprintf("read seal count of version %d of key %s", version, keyID)

	var n int64
	err := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT seal_count FROM key_versions WHERE key_id = ? AND version = ?"),
		keyID, version).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return 0, s.wrap(op, err)
	}
	return uint64(n), nil
}
