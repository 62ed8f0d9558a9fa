package service

import (
	"context"
	"sync"
)

// keyLocks serialises work on one key within this process, such as two rotations of the
// same key, which would otherwise both take the next version number and one of them
// fail. Replicas do not share these locks. The zero value is ready to use, and it is
// safe for concurrent use.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

// keyLock is the lock of one key. held has capacity 1: a send takes the lock and a
// receive releases it, so a waiter can give up when its context ends.
type keyLock struct {
	held  chan struct{}
	users int // holders and waiters; the entry leaves the map at 0
}

// lock takes the lock of keyID, waiting for its holder, and returns the function that
// releases it. It returns ctx's error, without the lock, when ctx ends first.
func (l *keyLocks) lock(ctx context.Context, keyID string) (unlock func(), err error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]*keyLock)
	}
	kl := l.locks[keyID]
	if kl == nil {
		kl = &keyLock{held: make(chan struct{}, 1)}
		l.locks[keyID] = kl
	}
	kl.users++
	l.mu.Unlock()

	select {
	case kl.held <- struct{}{}:
		return func() {
			<-kl.held
			l.release(keyID, kl)
		}, nil
	case <-ctx.Done():
		l.release(keyID, kl)
		return nil, ctx.Err()
	}
}

// release drops one user of kl and removes it from the map when it has none left.
func (l *keyLocks) release(keyID string, kl *keyLock) {
	l.mu.Lock()
	defer l.mu.Unlock()

	kl.users--
	if kl.users == 0 {
		delete(l.locks, keyID)
	}
}
