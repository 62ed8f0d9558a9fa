package hsm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/miekg/pkcs11"
)

// session is one pooled PKCS#11 session. Only the goroutine that took it from the pool uses
// it, so its fields need no lock.
type session struct {
	handle pkcs11.SessionHandle
	epoch  uint64
	// idleSince is when the session was last put back in the pool.
	idleSince time.Time

	// copies maps a key version to the session-object copy of its token object. order
	// lists the same keys oldest first, for eviction.
	copies map[KeyRef]pkcs11.ObjectHandle
	order  []KeyRef
}

// get takes a session from the pool, opening one when the pool holds a permit. It waits at
// most until ctx is done or c.waitTimeout passes.
func (c *conn) get(ctx context.Context) (*session, error) {
	var s *session
	select {
	case s = <-c.pool:
	default:
		var err error
		if s, err = c.wait(ctx); err != nil {
			return nil, err
		}
	}

	if s == nil {
		var err error
		if s, err = c.openSession(); err != nil {
			c.pool <- nil
			return nil, err
		}
		return s, nil
	}

	c.counters.idle.Add(-1)
	if c.idleTimeout > 0 && time.Since(s.idleSince) > c.idleTimeout {
		return c.replaceExpired(s)
	}
	if s.epoch != c.epoch.Load() {
		c.destroyCopies(s)
	}

	return s, nil
}

// replaceExpired closes s, a session idle longer than c.idleTimeout, and opens a fresh
// one in its place. Closing the session also destroys its key copies.
func (c *conn) replaceExpired(s *session) (*session, error) {
	_ = c.p11.CloseSession(s.handle)
	c.counters.copies.Add(-int64(len(s.copies)))
	c.counters.open.Add(-1)
	c.counters.expired.Add(1)

	fresh, err := c.openSession()
	if err != nil {
		c.pool <- nil
		return nil, err
	}

	return fresh, nil
}

// wait blocks for a pooled session or permit.
func (c *conn) wait(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.waitTimeout)
	defer cancel()

	select {
	case s := <-c.pool:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: wait for a free token session: %w", ErrUnavailable, ctx.Err())
	}
}

// put returns a live session to the pool.
func (c *conn) put(s *session) {
	s.idleSince = time.Now()
	c.counters.idle.Add(1)
	c.pool <- s
}

// drop closes a dead session and puts a permit back in its place, so that the pool never
// hands the dead session out again.
func (c *conn) drop(s *session) {
	_ = c.p11.CloseSession(s.handle)
	c.counters.copies.Add(-int64(len(s.copies)))
	c.counters.open.Add(-1)
	c.counters.dropped.Add(1)
	c.pool <- nil
}

// pruneIdle drops the idle sessions for which C_GetSessionInfo fails. It runs after one
// session turned out dead, because C_CloseAllSessions or a token reset kills them all.
func (c *conn) pruneIdle() {
	var items []*session
drain:
	for {
		select {
		case s := <-c.pool:
			items = append(items, s)
		default:
			break drain
		}
	}

	for _, s := range items {
		if s == nil {
			c.pool <- nil
			continue
		}

		if _, err := c.p11.GetSessionInfo(s.handle); err != nil {
			c.counters.idle.Add(-1)
			c.drop(s)
			continue
		}

		// Put back without put, which would restart the session's idle time.
		c.pool <- s
	}
}

// openSession opens a read-write session and checks that it shares the login.
func (c *conn) openSession() (*session, error) {
	h, err := c.p11.OpenSession(c.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("C_OpenSession: %w", err)
	}

	if err := c.checkLogin(h); err != nil {
		_ = c.p11.CloseSession(h)
		return nil, err
	}

	c.counters.open.Add(1)
	return &session{
		handle: h,
		epoch:  c.epoch.Load(),
		copies: make(map[KeyRef]pkcs11.ObjectHandle),
	}, nil
}

// checkLogin returns errLoginLost when the session is not in a user state.
func (c *conn) checkLogin(h pkcs11.SessionHandle) error {
	info, err := c.p11.GetSessionInfo(h)
	if err != nil {
		return fmt.Errorf("C_GetSessionInfo: %w", err)
	}

	if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
		return fmt.Errorf("%w (session state %d)", errLoginLost, info.State)
	}

	return nil
}

// invalidate clears every cached token handle and signer and makes every session destroy its copies
// before its next use.
func (c *conn) invalidate() {
	c.handlesMu.Lock()
	clear(c.handles)
	c.handlesMu.Unlock()

	c.signersMu.Lock()
	clear(c.signers)
	c.signersMu.Unlock()

	c.epoch.Add(1)
}

// destroyCopies destroys the key copies of s. Errors are ignored because a copy whose
// handle is already invalid is gone.
func (c *conn) destroyCopies(s *session) {
	for _, h := range s.copies {
		_ = c.p11.DestroyObject(s.handle, h)
	}

	c.counters.copies.Add(-int64(len(s.copies)))
	clear(s.copies)
	s.order = s.order[:0]
	s.epoch = c.epoch.Load()
}

// sessionKey returns the handle to use for ref in s: the session copy, made on first use,
// or the token object when copies are disabled or the token cannot copy.
func (c *conn) sessionKey(s *session, ref KeyRef) (pkcs11.ObjectHandle, error) {
	if h, ok := s.copies[ref]; ok {
		return h, nil
	}

	tokenKey, err := c.tokenHandle(s, ref)
	if err != nil {
		return 0, err
	}
	if c.noCopies.Load() {
		return tokenKey, nil
	}

	h, err := c.p11.CopyObject(s.handle, tokenKey, sessionCopyTemplate())
	if err != nil {
		if classify(err) != failOther {
			return 0, fmt.Errorf("C_CopyObject: %w", err)
		}

		// The token does not copy this object (CKA_COPYABLE false or C_CopyObject not
		// supported), so every session uses the token object from now on.
		c.noCopies.Store(true)
		return tokenKey, nil
	}

	if len(s.order) >= c.maxCopies {
		oldest := s.order[0]
		_ = c.p11.DestroyObject(s.handle, s.copies[oldest])
		delete(s.copies, oldest)
		s.order = s.order[1:]
		c.counters.copies.Add(-1)
	}

	s.copies[ref] = h
	s.order = append(s.order, ref)
	c.counters.copies.Add(1)

	return h, nil
}

// tokenHandle returns the handle of the token object of ref, from the module-wide cache or
// found by CKA_ID.
func (c *conn) tokenHandle(s *session, ref KeyRef) (pkcs11.ObjectHandle, error) {
	c.handlesMu.RLock()
	h, ok := c.handles[ref]
	c.handlesMu.RUnlock()
	if ok {
		return h, nil
	}

	handles, err := c.find(s, secretKeyLookup(ref), 1)
	if err != nil {
		return 0, err
	}
	if len(handles) == 0 {
		return 0, c.missingKey(ref, "")
	}

	c.handlesMu.Lock()
	c.handles[ref] = handles[0]
	c.handlesMu.Unlock()
	c.found.add(ref)

	return handles[0], nil
}

// find returns up to limit objects matching template, all of them when limit is zero.
func (c *conn) find(
	s *session, template []*pkcs11.Attribute, limit int,
) ([]pkcs11.ObjectHandle, error) {
	if err := c.p11.FindObjectsInit(s.handle, template); err != nil {
		return nil, c.findError(s, "C_FindObjectsInit", err)
	}

	batch := 64
	if limit > 0 {
		batch = limit
	}

	var all []pkcs11.ObjectHandle
	for {
		handles, _, err := c.p11.FindObjects(s.handle, batch)
		if err != nil {
			_ = c.p11.FindObjectsFinal(s.handle)
			return nil, c.findError(s, "C_FindObjects", err)
		}
		all = append(all, handles...)
		if len(handles) < batch || (limit > 0 && len(all) >= limit) {
			break
		}
	}

	if err := c.p11.FindObjectsFinal(s.handle); err != nil {
		return nil, fmt.Errorf("C_FindObjectsFinal: %w", err)
	}

	return all, nil
}

// findError wraps err, the failure of the call named op. SoftHSM2 2.6.1 fails a search
// with CKR_GENERAL_ERROR when C_CloseAllSessions closes its session, or ends the login,
// meanwhile (about once in 40 runs of TestCloseAllSessionsUnderLoad). A session that is
// then gone or no longer logged in is reported that way instead (checkLogin), so that do
// replaces the session or reconnects and tries again.
func (c *conn) findError(s *session, op string, err error) error {
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if loginErr := c.checkLogin(s.handle); loginErr != nil {
		return fmt.Errorf("%s failed with %v, and then %w", op, err, loginErr)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// do runs fn with a pooled session and recovers from token failures: stale handles are
// looked up again once, a dead session is replaced once, and a lost login or token leads to
// one reconnect. With viaCrypto11 set, fn also calls crypto11, whose own pool cannot replace
// a dead session, so a dead session leads to a reconnect. A missing object of a key found
// before leads to a reconnect at most once per Config.ReconnectInterval in the Module (see
// foundKeys.allowMissReconnect), and in between returns ErrUnavailable without one.
func (m *Module) do(
	ctx context.Context, viaCrypto11 bool, fn func(c *conn, s *session) error,
) error {
	var retriedHandle, retriedSession, retriedToken bool

	for {
		if err := m.startCall(ctx); err != nil {
			return err
		}
		c, releaseConn, err := m.acquire()
		if err != nil {
			m.endCall()
			return err
		}
		release := func() {
			releaseConn()
			m.endCall()
		}

		s, err := c.get(ctx)
		if err != nil {
			release()
			if classify(err) != failToken || retriedToken {
				return unavailable(err)
			}

			retriedToken = true
			if err := m.reconnectAfter(c, err); err != nil {
				return err
			}
			continue
		}

		err = fn(c, s)
		kind := classify(err)
		if kind == failSession && viaCrypto11 {
			kind = failToken
		}

		switch {
		case err == nil || kind == failOther:
			c.put(s)
			release()
			return err

		case kind == failHandle && !retriedHandle:
			retriedHandle = true
			c.invalidate()
			c.put(s)
			release()

		case kind == failSession && !retriedSession:
			retriedSession = true
			c.drop(s)
			c.pruneIdle()
			release()

		case kind == failToken && !retriedToken:
			retriedToken = true
			var missing *keyMissingError
			if errors.As(err, &missing) && !m.found.allowMissReconnect(m.cfg.ReconnectInterval) {
				c.put(s)
				release()
				return unavailable(err)
			}
			c.drop(s)
			release()
			if err := m.reconnectAfter(c, err); err != nil {
				return err
			}

		default:
			c.drop(s)
			release()
			return unavailable(err)
		}
	}
}

// reconnectAfter records cause, the failure that cost the connection c, and reconnects.
func (m *Module) reconnectAfter(c *conn, cause error) error {
	m.mu.Lock()
	if m.conn == c {
		m.log.Warn("token connection lost, reconnecting", "reason", cause.Error())
		m.lastErr = cause
	}
	m.mu.Unlock()

	return m.reconnect(c)
}

// unavailable wraps err with ErrUnavailable unless it already is.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}

	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// startCall waits for a call slot when Config.MaxConcurrentCalls bounds the calls in
// progress. With a bound above 1 it waits at most until ctx is done or
// Config.SessionWaitTimeout passes.
//
// With a bound of 1 the wait is a sync.Mutex, which cannot be cancelled (see
// Module.oneCall). So a call that finds the slot held by a call in progress for longer
// than Config.SessionWaitTimeout, such as one hung in the token, fails at once with
// ErrUnavailable instead of queueing behind it.
//
// NOTE: calls that started waiting before the call in progress passed
// SessionWaitTimeout wait until it returns, however long the token takes.
func (m *Module) startCall(ctx context.Context) error {
	if m.cfg.MaxConcurrentCalls == 1 {
		return m.startOneCall()
	}
	if m.calls == nil {
		return nil
	}
	select {
	case m.calls <- struct{}{}:
		return nil
	default:
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.SessionWaitTimeout)
		defer cancel()
	}
	select {
	case m.calls <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: wait for a token call slot: %w", ErrUnavailable, ctx.Err())
	}
}

// startOneCall takes oneCall, the slot of the bound of 1 (see startCall).
func (m *Module) startOneCall() error {
	if !m.oneCall.TryLock() {
		started := time.Duration(m.oneCallSince.Load())
		heldFor := sinceMonotonicStart() - started
		if started != 0 && heldFor > m.cfg.SessionWaitTimeout {
			return fmt.Errorf("%w: a token call has been in progress for %s",
				ErrUnavailable, heldFor.Round(time.Millisecond))
		}
		m.oneCall.Lock()
	}
	m.oneCallSince.Store(int64(max(sinceMonotonicStart(), 1))) // 0 means no call
	return nil
}

// monotonicStart is the origin of the times that oneCallSince keeps.
var monotonicStart = time.Now()

// sinceMonotonicStart returns the time since monotonicStart, from the monotonic clock.
func sinceMonotonicStart() time.Duration { return time.Since(monotonicStart) }

// endCall frees the slot that startCall took.
func (m *Module) endCall() {
	switch {
	case m.cfg.MaxConcurrentCalls == 1:
		m.oneCallSince.Store(0)
		m.oneCall.Unlock()
	case m.calls != nil:
		<-m.calls
	}
}
