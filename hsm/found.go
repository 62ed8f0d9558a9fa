package hsm

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// foundKeys is the set of key versions that this process generated or found in the token and
// has not destroyed since, shared by every connection of a Module. A lookup that finds no
// object for one of them reads as a token fault rather than a deleted key, until a connection
// made after the first miss still finds no object. Memory grows with the number of key
// versions used. Safe for concurrent use.
type foundKeys struct {
	mu sync.Mutex
	// missedOn maps each key version to the generation of the connection that first found
	// its object missing, or to 0 while every lookup found it.
	missedOn map[KeyRef]uint64

	// missReconnectMu guards nextMissReconnect, the earliest time at which a missing object
	// may cost another reconnect.
	missReconnectMu   sync.Mutex
	nextMissReconnect time.Time
}

// add records that the token holds an object for ref.
func (f *foundKeys) add(ref KeyRef) {
	f.mu.Lock()
	defer f.mu.Unlock()

	if f.missedOn == nil {
		f.missedOn = make(map[KeyRef]uint64)
	}
	f.missedOn[ref] = 0
}

// forget removes ref, after its object was destroyed on purpose.
func (f *foundKeys) forget(ref KeyRef) {
	f.mu.Lock()
	defer f.mu.Unlock()

	delete(f.missedOn, ref)
}

// miss records that the connection of generation generation found no object for ref, and
// reports whether that is a token fault. It is one when ref was found before and no connection
// newer than the one of its first miss has looked for it yet. Otherwise miss forgets ref, so
// that the caller reports a missing key.
func (f *foundKeys) miss(ref KeyRef, generation uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()

	missed, ok := f.missedOn[ref]
	if !ok {
		return false
	}
	if missed == 0 || missed == generation {
		f.missedOn[ref] = generation
		return true
	}

	delete(f.missedOn, ref)
	return false
}

// allowMissReconnect reports whether a missing object of a found key may cost a reconnect
// now. It allows one per interval, so that keys destroyed by another process sharing the
// token cannot keep the Module reconnecting.
func (f *foundKeys) allowMissReconnect(interval time.Duration) bool {
	f.missReconnectMu.Lock()
	defer f.missReconnectMu.Unlock()

	now := time.Now()
	if now.Before(f.nextMissReconnect) {
		return false
	}

	f.nextMissReconnect = now.Add(interval)
	return true
}

// checkToken returns an error wrapping errTokenFault when C_GetTokenInfo fails on c's
// slot, and one that also wraps ErrTokenReplaced when the slot's token now has another
// serial number than when c connected: its files were replaced under the same name. The
// reconnect that such a fault causes then finds out whether the new token may be used.
func (c *conn) checkToken() error {
	info, err := c.p11.GetTokenInfo(c.slot)
	if err != nil {
		return fmt.Errorf("%w: C_GetTokenInfo: %w", errTokenFault, err)
	}
	if serial := strings.TrimRight(info.SerialNumber, " "); serial != c.serial {
		return fmt.Errorf("%w: %w: the token in slot %d has serial number %q, not %q as "+
			"when kmsd connected", errTokenFault, ErrTokenReplaced, c.slot, serial, c.serial)
	}

	return nil
}

// missingKey returns the error for a lookup on c that found no object for ref: one wrapping
// errTokenFault when the token reports a fault, a *keyMissingError when ref was found before
// (see foundKeys.miss), and else one wrapping ErrKeyNotFound. kind prefixes ref in the
// message, for example "signing key ".
func (c *conn) missingKey(ref KeyRef, kind string) error {
	if err := c.checkToken(); err != nil {
		return fmt.Errorf("look up %s%s: %w", kind, ref, err)
	}
	if c.found.miss(ref, c.generation) {
		return &keyMissingError{ref: ref}
	}

	return fmt.Errorf("%w: %s%s", ErrKeyNotFound, kind, ref)
}
