// Package service is the domain logic of the key management service, between the HTTP
// API (service/api), the token (hsm) and the metadata store (service/store). It
// validates requests in domain terms, authorizes them, and turns token and store
// failures into *Error values with KMS codes.
//
// # Concurrency
//
// A Service is safe for concurrent use. Key metadata is cached for Config.KeyCacheTTL,
// so a change made by another replica that shares the store (a key disabled, say) takes
// effect here within that time.
package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Config holds the settings of a Service. The zero value of each field selects the
// default named in its comment.
type Config struct {
	// Region is reported as region_id and realm. Default "local-1".
	Region string
	// KeyCacheTTL bounds how long key metadata is served from memory. Default 1 s;
	// negative disables the cache.
	KeyCacheTTL time.Duration
	// KeysPerProject is the CMK quota of a project. Default 20, as Huawei's default.
	KeysPerProject int
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// GrantsPerKey is the grant quota of one key, reported by user-quotas. Default 100,
	// as Huawei's default.
	GrantsPerKey int
	// SealLimit is the number of seals after which a key version is rotated. Default
	// DefaultSealLimit.
	SealLimit uint64
	// StaleVersionAge is how old a "creating" key version row must be before Reconcile
	// removes it. Default 15 minutes.
	StaleVersionAge time.Duration
	// MaxOnDemandVersion is the highest version number that rotate-on-demand creates, so
	// that no caller can fill the token with versions, which are never deleted while
	// their key exists. Scheduled and seal-limit rotations are not bound by it. Default
	// DefaultMaxOnDemandVersion.
	MaxOnDemandVersion int
}

// DefaultMaxOnDemandVersion is the default of Config.MaxOnDemandVersion. The version
// number counts scheduled rotations too: a key that the scheduler rotates every 30 days
// reaches 100 after about 8 years, and yearly after 99.
const DefaultMaxOnDemandVersion = 100

// Service implements the KMS operations.
type Service struct {
	token hsm.Token
	store store.Store
	log   *slog.Logger
	cfg   Config

	cacheMu sync.RWMutex
	cache   map[cacheKey]cachedKey

	// cacheHits and cacheMisses count key-id lookups served from and missing the cache.
	cacheHits, cacheMisses atomic.Uint64

	// seals counts seals per key version; see seals.go.
	seals sealCounters

	// aliases caches alias API lookups; see aliases.go.
	aliases aliasCache

	// rotations serialises the rotations of each key in this process.
	rotations keyLocks

	// tokenBehind is set while the last token check found the token older than the
	// store; see tokencheck.go.
	tokenBehind atomic.Bool
}

// CacheStats returns how many key-id lookups the key metadata cache served (hits) and
// how many went to the store (misses), since New. It is safe for concurrent use.
func (s *Service) CacheStats() (hits, misses uint64) {
	return s.cacheHits.Load(), s.cacheMisses.Load()
}

type cacheKey struct{ projectID, keyID string }

type cachedKey struct {
	key     store.Key
	expires time.Time
}

// New returns a Service over token and st.
func New(token hsm.Token, st store.Store, log *slog.Logger, cfg Config) *Service {
	if cfg.Region == "" {
		cfg.Region = "local-1"
	}
	if cfg.KeyCacheTTL == 0 {
		cfg.KeyCacheTTL = time.Second
	}
	if cfg.KeysPerProject == 0 {
		cfg.KeysPerProject = 20
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.GrantsPerKey == 0 {
		cfg.GrantsPerKey = 100
	}
	if cfg.SealLimit == 0 {
		cfg.SealLimit = DefaultSealLimit
	}
	if cfg.StaleVersionAge == 0 {
		cfg.StaleVersionAge = 15 * time.Minute
	}
	if cfg.MaxOnDemandVersion == 0 {
		cfg.MaxOnDemandVersion = DefaultMaxOnDemandVersion
	}

	return &Service{
		token: token,
		store: st,
		log:   log,
		cfg:   cfg,
		cache: make(map[cacheKey]cachedKey),
	}
}

// Region returns the configured region id.
func (s *Service) Region() string { return s.cfg.Region }

var (
	// aliasPattern is the key_alias rule of the API: 1 to 255 of these characters.
	aliasPattern = regexp.MustCompile(`^[a-zA-Z0-9:/_-]{1,255}$`)
	sequenceLen  = 36
)

// isKeyID reports whether s has the key_id format of the API: 36 characters in the
// groups 8-4-4-4-12 of lower-case letters and digits, joined by hyphens. It runs on every
// key lookup, where the equivalent regular expression took about 1.5 µs per request in
// CPU profiles of kmsd under load.
func isKeyID(s string) bool {
	if len(s) != keyIDSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
				return false
			}
		}
	}
	return true
}

// ValidateSequence checks the optional sequence field: a 36-character request serial
// number.
func ValidateSequence(seq string) error {
	if seq != "" && len(seq) != sequenceLen {
		return Errorf(CodeInvalidSequence, "sequence must be 36 characters")
	}
	return nil
}

// newKeyID returns a random UUID (version 4) in lower case.
func newKeyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // since Go 1.24 crypto/rand.Read returns no error (it ends the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// detachedTimeout bounds the store and token calls that a call makes on a context
// detached from its request: the clean-up after a failed key creation, seal count reads
// and a seal-limit rotation. They must go on when the client hangs up or the request
// times out, but must not wait without end for a database that hangs.
const detachedTimeout = 10 * time.Second

// detach returns a context with the values of ctx that its cancellation and deadline do
// not end, bounded by detachedTimeout instead. The caller must call the CancelFunc.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}

// storeError turns a store failure into an *Error.
func storeError(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return &Error{Code: CodeUnavailable, Message: "the metadata store is unavailable; retry later",
			Err: fmt.Errorf("%s: %w", op, err)}
	}
	return &Error{Code: CodeInternal, Message: "internal error", Err: fmt.Errorf("%s: %w", op, err)}
}

// tokenError turns a token failure into an *Error.
func tokenError(op string, err error) error {
	if errors.Is(err, hsm.ErrUnavailable) {
		return &Error{Code: CodeUnavailable, Message: "the key token is unavailable; retry later",
			Err: fmt.Errorf("%s: %w", op, err)}
	}
	return &Error{Code: CodeInternal, Message: "internal error", Err: fmt.Errorf("%s: %w", op, err)}
}

// authorize checks that p may run op, on key k when k is not nil: its role allows op,
// or a grant on k gives op to p. A grant that allows op is added to the Authorization of
// ctx (see WithAuthorization).
func (s *Service) authorize(ctx context.Context, p auth.Principal, op string, k *store.Key) error {
	if auth.Allowed(p.Role, op) {
		return nil
	}
	if k != nil {
		allowed, err := s.grantAllows(ctx, p, op, *k)
		if err != nil {
			return err
		}
		if allowed {
			return nil
		}
		return Errorf(CodeKeyForbidden, "the caller has no permission for %s on this key", op)
	}
	return Errorf(CodeRoleForbidden, "the role %q has no permission for %s", p.Role, op)
}

// lookupKey returns the key named by ref in the caller's project: a key id, or
// "alias/<name>", an alias of the alias API or else the key_alias "<name>". Key ids and
// aliases are served from their caches when fresh.
func (s *Service) lookupKey(ctx context.Context, projectID, ref string) (store.Key, error) {
	if ref == "" {
		return store.Key{}, Errorf(CodeMissingParameter, "key_id is missing")
	}

	if len(ref) > MaxKeyRefLength {
		return store.Key{}, Errorf(CodeInvalidKeyID,
			"key_id is not a valid key id or alias: it is longer than %d bytes", MaxKeyRefLength)
	}
	if _, ok := cutAliasRef(ref); ok {
		return s.lookupAliasRef(ctx, projectID, ref)
	}

	if !isKeyID(ref) {
		return store.Key{}, Errorf(CodeInvalidKeyID, "key_id is not a valid key id")
	}
	return s.lookupKeyID(ctx, projectID, ref)
}

// lookupKeyID returns the key with id ref in the project, from the cache when fresh.
func (s *Service) lookupKeyID(ctx context.Context, projectID, ref string) (store.Key, error) {
	ck := cacheKey{projectID, ref}
	now := s.cfg.Clock()
	s.cacheMu.RLock()
	c, ok := s.cache[ck]
	s.cacheMu.RUnlock()
	if ok && now.Before(c.expires) {
		s.cacheHits.Add(1)
		return c.key, nil
	}
	s.cacheMisses.Add(1)

	k, err := s.store.GetKey(ctx, projectID, ref)
	if errors.Is(err, store.ErrNotFound) {
		s.dropCached(projectID, ref)
		return store.Key{}, errKeyNotFound()
	}
	if err != nil {
		return store.Key{}, storeError("get key", err)
	}

	s.putCached(k)
	return k, nil
}

// MaxKeyRefLength is the length in bytes of the longest key reference that can be valid:
// "alias/" and a 255-character alias. A key id is 36 bytes.
const MaxKeyRefLength = len(aliasPrefix) + 255

// cutAliasRef accepts "alias/<key_alias>" in place of a key id, as the data-key
// operations of the API do.
func cutAliasRef(ref string) (string, bool) {
	const prefix = "alias/"
	if len(ref) > len(prefix) && ref[:len(prefix)] == prefix {
		return ref[len(prefix):], true
	}
	return "", false
}

func (s *Service) putCached(k store.Key) {
	if s.cfg.KeyCacheTTL < 0 {
		return
	}
	s.cacheMu.Lock()
	s.cache[cacheKey{k.ProjectID, k.ID}] = cachedKey{key: k, expires: s.cfg.Clock().Add(s.cfg.KeyCacheTTL)}
	if len(s.cache) > maxCachedKeys {
		s.evictExpiredLocked()
	}
	s.cacheMu.Unlock()
}

// maxCachedKeys bounds the key cache; past it, expired entries are dropped, and if that
// is not enough the whole cache is.
const maxCachedKeys = 100_000

func (s *Service) evictExpiredLocked() {
	now := s.cfg.Clock()
	for k, c := range s.cache {
		if !now.Before(c.expires) {
			delete(s.cache, k)
		}
	}
	if len(s.cache) > maxCachedKeys {
		clear(s.cache)
	}
}

func (s *Service) dropCached(projectID, keyID string) {
	s.cacheMu.Lock()
	delete(s.cache, cacheKey{projectID, keyID})
	s.cacheMu.Unlock()
}

// usableKey checks that k may encrypt or decrypt now.
func usableKey(k store.Key) error {
	switch k.State {
	case store.KeyStateEnabled:
		return nil
	case store.KeyStateDisabled:
		return Errorf(CodeKeyDisabled, "the key is disabled")
	case store.KeyStatePendingDeletion:
		return Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
	default:
		return Errorf(CodeKeyNotEnabled, "the key is not enabled")
	}
}
