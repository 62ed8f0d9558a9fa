package service

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestKeyLocksWaiterGivesUp(t *testing.T) {
	var l keyLocks
	unlock, err := l.lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a held key = %v, want context.DeadlineExceeded", err)
	}

	unlock()
	if n := len(l.locks); n != 0 {
		t.Errorf("locks left in the map after every user left = %d, want 0", n)
	}
}

func TestKeyLocksSerialiseOneKey(t *testing.T) {
	var l keyLocks
	unlock, err := l.lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}

	acquired := make(chan func())
	go func() {
		second, err := l.lock(context.Background(), "k")
		if err != nil {
			t.Error(err)
			close(acquired)
			return
		}
		acquired <- second
	}()

	select {
	case <-acquired:
		t.Fatal("a second lock of a held key returned before the first was released")
	case <-time.After(20 * time.Millisecond):
	}
	unlock()
	second, ok := <-acquired
	if !ok {
		return
	}
	second()
	if n := len(l.locks); n != 0 {
		t.Errorf("locks left in the map after every user left = %d, want 0", n)
	}
}
