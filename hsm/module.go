package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// Defaults applied to zero fields of Config.
const (
	DefaultMaxSessions        = 4
	DefaultSessionWaitTimeout = 5 * time.Second
	DefaultMaxKeyCopies       = 256
	DefaultReconnectInterval  = 2 * time.Second
)

// Config selects the PKCS#11 module and token of a Module.
type Config struct {
	// ModulePath is the file path of the vendor's PKCS#11 library, for example
	// /usr/lib/softhsm/libsofthsm2.so. Required.
	ModulePath string
	// TokenLabel selects the token by CKA_LABEL. Slot numbers are never used because
	// SoftHSM2 renumbers slots when tokens are added. Required.
	TokenLabel string
	// PIN is the user PIN. It is never logged and never appears in an error.
	PIN string
	// MaxSessions is the size of the pool of sessions used by Seal, Open, Random and key
	// lookups. Zero means DefaultMaxSessions.
	MaxSessions int
	// SessionWaitTimeout bounds the wait for a free pooled session, and for a call slot
	// (MaxConcurrentCalls), when the context has no earlier deadline. Zero means
	// DefaultSessionWaitTimeout.
	SessionWaitTimeout time.Duration
	// MaxConcurrentCalls bounds the calls that use the token at once, over all pooled
	// sessions; further calls wait in arrival order. Zero means MaxSessions, no bound
	// beyond the pool. SoftHSM2 runs operations under process-wide locks, so concurrent
	// calls contend instead of overlapping. On a 2-core machine, two goroutines in
	// BenchmarkOpen took 2.7 times as long per operation as one. With one call at a time,
	// kmsd's p99 latency at 64 connections fell from about 30 ms to 12 ms. A network HSM,
	// whose calls wait on round trips, needs them to overlap.
	MaxConcurrentCalls int
	// MaxKeyCopies is how many session-object copies of keys each pooled session keeps.
	// The oldest copy is destroyed when a new one needs room. Zero means
	// DefaultMaxKeyCopies, and a negative value disables copies (operations then use the
	// token object).
	MaxKeyCopies int
	// TokenGeneratesIV is set for HSMs that choose the GCM IV themselves (FIPS mode). Seal
	// then passes a zeroed IV buffer and returns the IV the token wrote into CK_GCM_PARAMS,
	// and rejects an all-zero IV as a sign that the token did not choose one. When false,
	// the IV comes from C_GenerateRandom.
	TokenGeneratesIV bool
	// ReconnectInterval is the minimum time between two failed attempts to reach the token.
	// Zero means DefaultReconnectInterval.
	ReconnectInterval time.Duration
	// SessionIdleTimeout closes a pooled session that has waited in the pool longer than
	// this, when it is next taken, and opens a fresh one in its place, as crypto11's pool
	// does. Set it below the idle limit of an HSM or firewall that cuts idle sessions.
	// Zero keeps idle sessions open.
	SessionIdleTimeout time.Duration
}

// withDefaults returns a copy of cfg with zero fields set, or an error naming an invalid
// field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ModulePath == "" {
		return cfg, errors.New("hsm config: ModulePath is required")
	}
	if cfg.TokenLabel == "" {
		return cfg, errors.New("hsm config: TokenLabel is required")
	}
	if cfg.MaxSessions < 0 {
		return cfg, fmt.Errorf("hsm config: MaxSessions is %d, expected 0 or more", cfg.MaxSessions)
	}
	if cfg.SessionIdleTimeout < 0 {
		return cfg, fmt.Errorf("hsm config: SessionIdleTimeout is %v, expected 0 or more",
			cfg.SessionIdleTimeout)
	}
	if cfg.MaxConcurrentCalls < 0 {
		return cfg, fmt.Errorf("hsm config: MaxConcurrentCalls is %d, expected 0 or more",
			cfg.MaxConcurrentCalls)
	}

	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxConcurrentCalls == 0 || cfg.MaxConcurrentCalls > cfg.MaxSessions {
		cfg.MaxConcurrentCalls = cfg.MaxSessions
	}
	if cfg.SessionWaitTimeout <= 0 {
		cfg.SessionWaitTimeout = DefaultSessionWaitTimeout
	}
	if cfg.MaxKeyCopies == 0 {
		cfg.MaxKeyCopies = DefaultMaxKeyCopies
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = DefaultReconnectInterval
	}

	return cfg, nil
}

// Module is the Token implementation over a PKCS#11 library.
//
// crypto11 configures the module, logs in and generates, finds and deletes keys. The hot
// path (Seal, Open, Random) calls miekg/pkcs11 directly on a second *pkcs11.Ctx of the same
// library, because crypto11's cipher.AEAD panics on token errors and crypto11 has no
// C_CopyObject. The second C_Initialize returns CKR_CRYPTOKI_ALREADY_INITIALIZED and its
// sessions share the login of crypto11's persistent session, since PKCS#11 login state
// belongs to the application and token, not to one session.
//
// When the token cannot be reached, Module stays open and disconnected: each call returns an
// error wrapping ErrUnavailable, and the first call after Config.ReconnectInterval tries to
// configure the module again. Configuring again rescans the token list only when crypto11's
// context was the library's last user in the process, because C_Finalize and C_Initialize are
// process-wide. A lookup that finds no key object also counts as a lost connection when
// C_GetTokenInfo fails or when the key was found before (see foundKeys). A Module is safe for
// concurrent use.
type Module struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below. Calls hold the read lock while they use conn, and
	// reconnecting holds the write lock, so a connection is torn down only when no call
	// uses it.
	mu          sync.RWMutex
	conn        *conn
	closed      bool
	up          bool
	lastReason  string
	lastErr     error
	nextAttempt time.Time
	pinRejected bool
	// pinnedSerial is the serial number that a new connection's token must have
	// (PinToken), or empty.
	pinnedSerial string
	// generation counts the connections made since Open; the current one has this number.
	generation uint64

	// found lets a missing object of a key used before read as a token fault.
	found foundKeys

	// oneCall is held by the call in progress when Config.MaxConcurrentCalls is 1. A
	// sync.Mutex lets a running goroutine take the lock just freed without a hand-off
	// through the scheduler: at 64 connections on 2 cores that gave about 13% more
	// decrypt-datakey calls a second than a channel of capacity 1.
	oneCall sync.Mutex
	// oneCallSince is when the call holding oneCall started, in nanoseconds since
	// monotonicStart, and 0 while no call holds it.
	oneCallSince atomic.Int64
	// calls holds one element per call in progress when Config.MaxConcurrentCalls is
	// between 1 and MaxSessions, and is nil otherwise. Senders blocked on the full
	// channel proceed in arrival order.
	calls chan struct{}

	// noTokenIV is set when the last seal with Config.TokenGeneratesIV found that the
	// token did not choose the IV, and cleared by one that did. Ping then fails, so that
	// /readyz reports a replica whose every seal fails.
	noTokenIV atomic.Bool

	// genMu serialises the creation and destruction of token objects, because SoftHSM2
	// 2.6.1 fails with CKR_GENERAL_ERROR when C_GenerateKey runs while another session
	// destroys a token object (seen with parallel create-key calls over the key quota,
	// whose rejected keys are destroyed again).
	genMu sync.Mutex

	counters counters

	// readUnlock is mu.RUnlock, made once because a method value allocates each time.
	readUnlock func()
}

var _ Token = (*Module)(nil)

// errClosed is returned by calls after Close.
var errClosed = fmt.Errorf("%w: module is closed", ErrUnavailable)

// Open loads the PKCS#11 library at cfg.ModulePath and logs in to the token labelled
// cfg.TokenLabel.
//
// Open fails when the configuration is invalid, when the library is missing or is not a
// PKCS#11 library, and when the token rejects the PIN (an error wrapping ErrPINIncorrect).
// A token that is missing or fails otherwise does not make Open fail: the Module starts
// disconnected and reconnects later, see Module.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Module, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open PKCS#11 module: %w", err)
	}

	if err := checkModule(cfg.ModulePath); err != nil {
		return nil, err
	}

	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Module{
		cfg: cfg,
		log: log.With("module", cfg.ModulePath, "token", cfg.TokenLabel),
	}
	m.readUnlock = m.mu.RUnlock
	if cfg.MaxConcurrentCalls > 1 && cfg.MaxConcurrentCalls < cfg.MaxSessions {
		m.calls = make(chan struct{}, cfg.MaxConcurrentCalls)
	}

	if err := m.reconnect(nil); errors.Is(err, ErrPINIncorrect) {
		return nil, err
	}

	return m, nil
}

// checkModule returns an error naming path when it is not a loadable PKCS#11 library.
func checkModule(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("PKCS#11 module %q: %w", path, err)
	}
	if info.IsDir() {
		return fmt.Errorf("PKCS#11 module %q is a directory, expected a shared library", path)
	}

	// pkcs11.New returns nil when dlopen fails or the library has no C_GetFunctionList.
	probe := pkcs11.New(path)
	if probe == nil {
		return fmt.Errorf("PKCS#11 module %q cannot be loaded or has no C_GetFunctionList", path)
	}
	probe.Destroy()

	return nil
}

// reconnect replaces old, the connection that failed (nil when there is none), with a new
// one. When another goroutine already replaced old, it returns nil at once. Attempts after a
// failed attempt wait Config.ReconnectInterval. A rejected PIN is never tried again.
func (m *Module) reconnect(old *conn) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	if m.closed {
		return errClosed
	}
	if m.conn != old {
		return nil
	}

	if old != nil {
		// The connection failed, so the sessions still in its pool are dead too.
		m.counters.dropped.Add(int64(old.close()))
		m.conn = nil
		m.counters.reset()
	}

	if m.pinRejected || time.Now().Before(m.nextAttempt) {
		return m.unavailableErr()
	}

	c, err := connect(m.cfg, &m.counters, m.pinnedSerial)
	if err != nil {
		m.nextAttempt = time.Now().Add(m.cfg.ReconnectInterval)
		m.pinRejected = errors.Is(err, ErrPINIncorrect)
		m.markDown(err)
		return err
	}

	m.generation++
	c.generation = m.generation
	c.found = &m.found
	m.conn = c
	m.markUp(c)
	return nil
}

// PinToken binds the Module to the token it is connected to. Later connections then
// accept only a token with the same serial number, so that another token put in its
// place under the same label and PIN is not used. kmsd pins the token once it has found
// that the token matches its store. A token that reports no serial number cannot be
// pinned, and PinToken then only checks the connection. It returns an error wrapping
// ErrUnavailable when no token is connected.
func (m *Module) PinToken() error {
	m.mu.Lock()
	defer m.mu.Unlock()

	if m.conn == nil {
		return fmt.Errorf("%w: pin the token: no token is connected", ErrUnavailable)
	}
	m.pinnedSerial = m.conn.serial
	return nil
}

// UnpinToken undoes PinToken.
func (m *Module) UnpinToken() {
	m.mu.Lock()
	defer m.mu.Unlock()

	m.pinnedSerial = ""
}

// unavailableErr returns the error of the last failed attempt to connect, wrapping
// ErrUnavailable once.
func (m *Module) unavailableErr() error {
	if errors.Is(m.lastErr, ErrUnavailable) {
		return m.lastErr
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, m.lastErr)
}

// markDown records and logs why the token is unavailable, once per change of state or
// reason.
func (m *Module) markDown(err error) {
	m.lastErr = err
	reason := err.Error()
	if !m.up && reason == m.lastReason {
		return
	}

	m.up = false
	m.lastReason = reason
	m.log.Warn("token disconnected", "reason", reason)
}

func (m *Module) markUp(c *conn) {
	if m.lastErr != nil {
		m.counters.reconnects.Add(1)
	}

	m.up = true
	m.lastErr = nil
	m.lastReason = ""
	if c.gcm == nil {
		m.log.Info("GCM operations go through miekg/pkcs11, one cgo call per PKCS#11 call",
			"reason", c.gcmErr.Error())
	}
	m.log.Info("token connected", "slot", c.slot, "sessions", m.cfg.MaxSessions,
		"one_call_gcm", c.gcm != nil)
}

// acquire returns the current connection, connecting first when there is none. The caller
// must call release when it no longer uses the connection.
func (m *Module) acquire() (c *conn, release func(), err error) {
	for range 2 {
		m.mu.RLock()
		if m.closed {
			m.mu.RUnlock()
			return nil, nil, errClosed
		}
		if m.conn != nil {
			return m.conn, m.readUnlock, nil
		}
		m.mu.RUnlock()

		if err := m.reconnect(nil); err != nil {
			return nil, nil, err
		}
	}

	return nil, nil, fmt.Errorf("%w: connection lost while connecting", ErrUnavailable)
}

// Close closes every session and releases crypto11's context, which finalises the library
// when no other Module of the process uses it. Calls after Close return errors wrapping
// ErrUnavailable.
func (m *Module) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()

	if m.closed {
		return nil
	}
	m.closed = true

	if m.conn != nil {
		m.conn.close()
		m.conn = nil
		m.counters.reset()
		m.log.Info("token closed")
	}

	return nil
}

// Ping opens or reuses a pooled session and checks that it is logged in and that
// C_GetTokenInfo succeeds. A token that fails either check is reconnected, as in every call.
// Ping also fails while seals fail because Config.TokenGeneratesIV is set for a token
// that does not choose IVs.
func (m *Module) Ping(ctx context.Context) error {
	if m.noTokenIV.Load() {
		return fmt.Errorf("ping token: %w: %w", ErrUnavailable, errNoTokenIV)
	}

	err := m.do(ctx, true, func(c *conn, s *session) error {
		if err := c.checkLogin(s.handle); err != nil {
			return err
		}
		return c.checkToken()
	})
	if err != nil {
		return fmt.Errorf("ping token: %w", err)
	}

	return nil
}

// Stats is a snapshot of the session pool for metrics.
type Stats struct {
	// Connected reports whether the module currently holds a logged-in connection.
	Connected bool
	// SessionsOpen counts the pooled sessions that are open, in use or idle.
	SessionsOpen int64
	// SessionsIdle counts the open pooled sessions waiting in the pool.
	SessionsIdle int64
	// SessionsDropped counts sessions closed because the token reported them dead or
	// because their connection failed, since Open.
	SessionsDropped int64
	// SessionsExpired counts sessions closed because they were idle longer than
	// Config.SessionIdleTimeout, since Open.
	SessionsExpired int64
	// KeyCopies counts the session-object copies of keys held by open sessions.
	KeyCopies int64
	// Reconnects counts successful connections after a failure, since Open.
	Reconnects int64
}

// Stats returns a snapshot of the pool counters. It does not call the token.
func (m *Module) Stats() Stats {
	m.mu.RLock()
	connected := m.conn != nil
	m.mu.RUnlock()

	return Stats{
		Connected:       connected,
		SessionsOpen:    m.counters.open.Load(),
		SessionsIdle:    m.counters.idle.Load(),
		SessionsDropped: m.counters.dropped.Load(),
		SessionsExpired: m.counters.expired.Load(),
		KeyCopies:       m.counters.copies.Load(),
		Reconnects:      m.counters.reconnects.Load(),
	}
}

// CloseAllSessions calls C_CloseAllSessions on the token's slot, which also ends the
// login. The pool notices on next use and recovers. It exists so tests can cut sessions
// under a running Module. It takes a call slot like any token call, because SoftHSM2
// 2.6.1 can crash (SIGSEGV in C_FindObjectsInit) when C_CloseAllSessions frees a session
// that another thread is using.
func (m *Module) CloseAllSessions() error {
	if err := m.startCall(context.Background()); err != nil {
		return err
	}
	defer m.endCall()
	c, release, err := m.acquire()
	if err != nil {
		return err
	}
	defer release()

	if err := c.p11.CloseAllSessions(c.slot); err != nil {
		return fmt.Errorf("C_CloseAllSessions: %w", err)
	}

	return nil
}

// counters are the Module's statistics. The open, idle and copies gauges describe the current
// connection and are reset when it is torn down.
type counters struct {
	open, idle, dropped, expired, copies, reconnects atomic.Int64
}

func (c *counters) reset() {
	c.open.Store(0)
	c.idle.Store(0)
	c.copies.Store(0)
}

// conn is one configured and logged-in use of the library.
type conn struct {
	c11      *crypto11.Context
	p11      *pkcs11.Ctx
	gcm      *gcmCalls // nil when the library's function list cannot be used
	gcmErr   error     // the reason gcm is nil
	slot     uint
	serial   string // the token's serial number, empty when the token reports none
	counters *counters

	// generation numbers this connection among those of its Module, from 1.
	generation uint64
	found      *foundKeys

	pool        chan *session
	waitTimeout time.Duration
	idleTimeout time.Duration
	maxCopies   int
	noCopies    atomic.Bool

	// epoch grows whenever cached handles may be stale. A session whose copies were made at
	// an older epoch destroys them before its next use.
	epoch atomic.Uint64

	handlesMu sync.RWMutex
	handles   map[KeyRef]pkcs11.ObjectHandle

	signersMu sync.Mutex
	signers   map[KeyRef]crypto11.Signer
}

// connect configures crypto11 (C_Initialize, token by label, C_Login), then opens the second
// miekg context for the pooled sessions.
//
// pinned is the serial number that the token must have (Module.PinToken), or empty.
func connect(cfg Config, counters *counters, pinned string) (*conn, error) {
	connectMu.Lock()
	defer connectMu.Unlock()

	// crypto11 logs in to the first token that carries the label. Where two do, that
	// login could go to the wrong token and count against its PIN retries, so the label
	// is checked before any login, and crypto11 then selects the token by its serial.
	serial, err := probeToken(cfg.ModulePath, cfg.TokenLabel)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if pinned != "" && serial != pinned {
		return nil, fmt.Errorf("%w: %w: the token labelled %q has serial number %q, not %q "+
			"as when kmsd started; put that token back, or restart kmsd to use this one",
			ErrUnavailable, ErrTokenReplaced, cfg.TokenLabel, serial, pinned)
	}
	selectLabel := cfg.TokenLabel
	if serial != "" {
		selectLabel = ""
	}

	c11, err := crypto11.Configure(&crypto11.Config{
		Path:        cfg.ModulePath,
		TokenSerial: serial,
		TokenLabel:  selectLabel,
		Pin:         cfg.PIN,
		// crypto11 keeps one of these as its logged-in persistent session.
		MaxSessions: max(cfg.MaxSessions, 2),
		// The standard 96-bit IV, in case crypto11's AEAD is ever used.
		GCMIVLength: GCMIVSize,
		// Key generation, deletion and signing wait for crypto11's pool as long as for ours.
		PoolWaitTimeout: cfg.SessionWaitTimeout,
	})
	if err != nil {
		if classify(err) == failPIN {
			return nil, fmt.Errorf("log in to token %q: %w: %w", cfg.TokenLabel, ErrPINIncorrect, err)
		}
		return nil, fmt.Errorf("%w: configure token %q: %w", ErrUnavailable, cfg.TokenLabel, err)
	}

	p11 := pkcs11.New(cfg.ModulePath)
	if p11 == nil {
		_ = c11.Close()
		return nil, fmt.Errorf("%w: load PKCS#11 module %q a second time", ErrUnavailable, cfg.ModulePath)
	}

	// crypto11 initialised the library, so this returns CKR_CRYPTOKI_ALREADY_INITIALIZED.
	// The second context never calls C_Finalize, crypto11's Close does.
	err = p11.Initialize()
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		p11.Destroy()
		_ = c11.Close()
		return nil, fmt.Errorf("%w: C_Initialize: %w", ErrUnavailable, err)
	}

	slot, info, err := findSlot(p11, cfg.TokenLabel)
	if err == nil && serial != "" && strings.TrimRight(info.SerialNumber, " ") != serial {
		err = fmt.Errorf("the token labelled %q changed while connecting", cfg.TokenLabel)
	}
	if err != nil {
		p11.Destroy()
		_ = c11.Close()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}

	// A library whose function list cannot be read, or does not reach p11's sessions,
	// gets its GCM operations through miekg/pkcs11, which works with every library.
	gcm, gcmErr := loadGCMCalls(cfg.ModulePath, p11, slot)
	c := &conn{
		c11:         c11,
		p11:         p11,
		gcm:         gcm,
		gcmErr:      gcmErr,
		slot:        slot,
		serial:      serial,
		counters:    counters,
		pool:        make(chan *session, cfg.MaxSessions),
		waitTimeout: cfg.SessionWaitTimeout,
		idleTimeout: cfg.SessionIdleTimeout,
		maxCopies:   cfg.MaxKeyCopies,
		handles:     make(map[KeyRef]pkcs11.ObjectHandle),
		signers:     make(map[KeyRef]crypto11.Signer),
	}
	for range cfg.MaxSessions {
		c.pool <- nil
	}
	c.noCopies.Store(cfg.MaxKeyCopies < 0)

	return c, nil
}

// connectMu serializes connect in the process. probeToken may initialise the library
// for a moment, and crypto11.Configure fails while another context holds it initialised.
var connectMu sync.Mutex

// probeToken returns the serial number of the one token labelled label in the library
// at path, without logging in. It initialises the library for the probe unless the
// process already did, and then finalises it again.
func probeToken(path, label string) (string, error) {
	p11 := pkcs11.New(path)
	if p11 == nil {
		return "", fmt.Errorf("load PKCS#11 module %q", path)
	}
	defer p11.Destroy()

	err := p11.Initialize()
	if err == nil {
		defer func() { _ = p11.Finalize() }()
	} else if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return "", fmt.Errorf("C_Initialize: %w", err)
	}

	_, info, err := findSlot(p11, label)
	if err != nil {
		return "", err
	}

	return strings.TrimRight(info.SerialNumber, " "), nil
}

// findSlot returns the slot holding the token labelled label and its token information.
// It fails when no token or more than one token carries the label: with two, kmsd could
// not tell which one holds its keys.
func findSlot(p11 *pkcs11.Ctx, label string) (uint, pkcs11.TokenInfo, error) {
	slots, err := p11.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("C_GetSlotList: %w", err)
	}

	var found []uint
	var infos []pkcs11.TokenInfo
	for _, slot := range slots {
		info, err := p11.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		if strings.TrimRight(info.Label, " ") == label {
			found = append(found, slot)
			infos = append(infos, info)
		}
	}

	switch len(found) {
	case 0:
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("no token labelled %q in %d slots", label,
			len(slots))
	case 1:
		return found[0], infos[0], nil
	}

	serials := make([]string, len(infos))
	for i, info := range infos {
		serials[i] = strconv.Quote(strings.TrimRight(info.SerialNumber, " "))
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: %d tokens are labelled %q (serial numbers %s): "+
		"relabel or remove all but the token that holds the keys", ErrTokenAmbiguous,
		len(found), label, strings.Join(serials, ", "))
}

// close closes the pooled sessions, then crypto11's context, which calls C_Finalize when it
// is the library's last user in the process, and returns how many pooled sessions it
// closed. No call may be using c.
func (c *conn) close() int {
	closed := 0
	for range cap(c.pool) {
		select {
		case s := <-c.pool:
			if s != nil {
				_ = c.p11.CloseSession(s.handle)
				closed++
			}
		default:
		}
	}

	c.p11.Destroy()
	_ = c.c11.Close()
	return closed
}
