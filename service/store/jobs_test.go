package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func TestSealCounts(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "seals"))
		checkErr(t, "BeginKeyVersion(2)", s.BeginKeyVersion(ctx, k.ID, 2), nil)

		n, err := s.SealCount(ctx, k.ID, 1)
		checkErr(t, "SealCount of a new version", err, nil)
		if n != 0 {
			t.Errorf("SealCount of a new version = %d, want 0", n)
		}

		const large = uint64(1) << 33 // beyond 32 bits, as a long-lived version reaches
		totals, err := s.AddSealCounts(ctx, []store.SealCount{
			{KeyID: k.ID, Version: 1, Count: large},
			{KeyID: k.ID, Version: 2, Count: 7},
			{KeyID: k.ID, Version: 3, Count: 5}, // no such version: dropped
			{KeyID: k.ID, Version: 2, Count: 0},
		})
		checkErr(t, "AddSealCounts", err, nil)
		if want := []uint64{large, 7, 0, 0}; !slices.Equal(totals, want) {
			t.Errorf("AddSealCounts totals = %v, want %v", totals, want)
		}
		totals, err = s.AddSealCounts(ctx, []store.SealCount{{KeyID: k.ID, Version: 1, Count: 1}})
		checkErr(t, "AddSealCounts again", err, nil)
		if want := []uint64{large + 1}; !slices.Equal(totals, want) {
			t.Errorf("AddSealCounts totals after a second add = %v, want %v", totals, want)
		}
		_, err = s.AddSealCounts(ctx, nil)
		checkErr(t, "AddSealCounts of nothing", err, nil)

		tests := []struct {
			version uint32
			want    uint64
		}{
			{1, large + 1},
			{2, 7},
		}
		for _, tt := range tests {
			n, err := s.SealCount(ctx, k.ID, tt.version)
			checkErr(t, "SealCount", err, nil)
			if n != tt.want {
				t.Errorf("SealCount(version %d) = %d, want %d", tt.version, n, tt.want)
			}
		}

		_, err = s.SealCount(ctx, k.ID, 3)
		checkErr(t, "SealCount of a missing version", err, store.ErrNotFound)
	})
}

func TestWithKeyLockRunsFunction(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		errFn := errors.New("job failed")

		ran := false
		locked, err := s.WithKeyLock(ctx, "key-1", func(ctx context.Context) error {
			ran = true
			return nil
		})
		if !locked || err != nil || !ran {
			t.Errorf("WithKeyLock = %v, %v, ran %v; want true, nil, ran", locked, err, ran)
		}

		locked, err = s.WithKeyLock(ctx, "key-1", func(ctx context.Context) error { return errFn })
		if !locked || !errors.Is(err, errFn) {
			t.Errorf("WithKeyLock with a failing function = %v, %v; want true, %v", locked, err, errFn)
		}
	})
}

// TestWithKeyLockExcludesReplicas holds the lock of one key from one store and tries it
// from a second store on the same database, as a second replica would.
func TestWithKeyLockExcludesReplicas(t *testing.T) {
	t.Parallel()
	b := storetest.Backend{Name: storetest.Postgres, URL: storetest.PostgresURL(t)}
	first := openStore(t, b)
	second := openStore(t, b)
	ctx := t.Context()

	var innerLocked, otherKeyLocked bool
	locked, err := first.WithKeyLock(ctx, "key-1", func(ctx context.Context) error {
		var err error
		innerLocked, err = second.WithKeyLock(ctx, "key-1", func(context.Context) error {
			t.Error("the second replica ran its job while the first held the lock")
			return nil
		})
		if err != nil {
			return err
		}
		otherKeyLocked, err = second.WithKeyLock(ctx, "key-2", func(context.Context) error { return nil })
		return err
	})
	if !locked || err != nil {
		t.Fatalf("first WithKeyLock = %v, %v; want true, nil", locked, err)
	}
	if innerLocked {
		t.Error("second replica took the lock of key-1 while the first held it")
	}
	if !otherKeyLocked {
		t.Error("second replica could not take the lock of key-2, which nobody held")
	}

	locked, err = second.WithKeyLock(ctx, "key-1", func(context.Context) error { return nil })
	if !locked || err != nil {
		t.Errorf("WithKeyLock after the first released = %v, %v; want true, nil", locked, err)
	}
}

// TestWaitKeyLockWaitsForHolder holds the lock of one key from one store while a second
// store on the same database waits for it, as a second replica's rotation does. The
// waiter must run only after the holder released the lock, and a job that only tries the
// lock must not get it while the waiter holds it.
func TestWaitKeyLockWaitsForHolder(t *testing.T) {
	t.Parallel()
	b := storetest.Backend{Name: storetest.Postgres, URL: storetest.PostgresURL(t)}
	first := openStore(t, b)
	second := openStore(t, b)
	ctx := t.Context()

	var released atomic.Bool
	waiterDone := make(chan error, 1)
	holding := make(chan struct{})
	err := first.WaitKeyLock(ctx, "key-1", func(ctx context.Context) error {
		go func() {
			close(holding)
			waiterDone <- second.WaitKeyLock(ctx, "key-1", func(ctx context.Context) error {
				if !released.Load() {
					t.Error("the waiter ran while the first store held the lock")
				}
				locked, err := first.WithKeyLock(ctx, "key-1", func(context.Context) error {
					return nil
				})
				if locked || err != nil {
					t.Errorf("WithKeyLock while the waiter holds the lock = %v, %v; want "+
						"false, nil", locked, err)
				}
				return nil
			})
		}()
		<-holding
		time.Sleep(200 * time.Millisecond) // long enough for the waiter to block
		released.Store(true)
		return nil
	})
	if err != nil {
		t.Fatalf("first WaitKeyLock: %v", err)
	}
	if err := <-waiterDone; err != nil {
		t.Errorf("second WaitKeyLock: %v", err)
	}
}

// TestWaitKeyLockLeavesConnections holds the locks of more keys at once than the pool
// has connections, each holder querying the store while it holds its lock, as
// concurrent rotations of different keys do. Without a bound on the holders every
// connection would hold a lock and no query could run.
func TestWaitKeyLockLeavesConnections(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(storetest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("max_conns", "4")
	u.RawQuery = q.Encode()
	s := openStore(t, storetest.Backend{Name: storetest.Postgres, URL: u.String()})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	const holders = 8
	errs := make(chan error, holders)
	for i := range holders {
		go func() {
			errs <- s.WaitKeyLock(ctx, fmt.Sprintf("key-%d", i), func(ctx context.Context) error {
				_, err := s.ListCredentials(ctx)
				return err
			})
		}()
	}
	for range holders {
		if err := <-errs; err != nil {
			t.Errorf("WaitKeyLock with a query inside, %d holders on 4 connections: %v",
				holders, err)
		}
	}
}

// TestWaitKeyLockGivesUp waits for a key lock that another store holds for longer than
// KeyLockWait: the waiter must give up with ErrKeyLocked instead of waiting on, and must
// not run its function.
func TestWaitKeyLockGivesUp(t *testing.T) {
	t.Parallel()
	b := storetest.Backend{Name: storetest.Postgres, URL: storetest.PostgresURL(t)}
	first := openStore(t, b)
	second := openStore(t, b)
	ctx := t.Context()

	err := first.WaitKeyLock(ctx, "key-1", func(ctx context.Context) error {
		return second.WaitKeyLock(ctx, "key-1", func(context.Context) error {
			t.Error("the waiter ran while the first store held the lock")
			return nil
		})
	})
	if !errors.Is(err, store.ErrKeyLocked) {
		t.Errorf("WaitKeyLock behind a held lock = %v, want ErrKeyLocked", err)
	}
}
