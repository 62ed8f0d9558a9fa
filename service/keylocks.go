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
	kl := l.use(keyID)
	select {
	case kl.held <- struct{}{}:
		return l.unlocker(keyID, kl), nil
	case <-ctx.Done():
		l.release(keyID, kl)
		return nil, ctx.Err()
	}
}

// tryLock takes the lock of keyID when it is free and returns the function that
// releases it, or ok false without waiting.
func (l *keyLocks) tryLock(keyID string) (unlock func(), ok bool) {
	kl := l.use(keyID)
	select {
	case kl.held <- struct{}{}:
		return l.unlocker(keyID, kl), true
	default:
		l.release(keyID, kl)
		return nil, false
	}
}

// use returns the lock of keyID, adding it to the map when it has no users, and counts
// one more user of it.
func (l *keyLocks) use(keyID string) *keyLock {
	l.mu.Lock()
	defer l.mu.Unlock()

	if l.locks == nil {
		l.locks = make(map[string]*keyLock)
	}
	kl := l.locks[keyID]
	if kl == nil {
		kl = &keyLock{held: make(chan struct{}, 1)}
		l.locks[keyID] = kl
	}
	kl.users++
	return kl
}

// unlocker returns the function that releases kl, held for keyID.
func (l *keyLocks) unlocker(keyID string, kl *keyLock) func() {
	return func() {
		<-kl.held
		l.release(keyID, kl)
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
