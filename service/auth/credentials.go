package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// SealingKey is the token key that seals every secret key in the store.
var SealingKey = hsm.KeyRef{KeyID: "system-credentials", Version: 1}

// Defaults of CredentialsConfig.
const (
	// DefaultCacheTTL bounds how long an unsealed credential is served from memory, and
	// so how long a credential disabled or deleted on another replica is still accepted
	// here.
	DefaultCacheTTL = 5 * time.Second
	// DefaultMaxCached caps the number of cached credentials.
	DefaultMaxCached = 10000
)

// Lengths of generated values. Access keys are upper-case alphanumerics and secret keys
// mixed-case alphanumerics, as in Huawei Cloud.
const (
	accessKeyLength = 20
	secretKeyLength = 40
	maxSecretLength = 256
)

// Rules for a caller-chosen secret key, which otherwise could be far easier to guess
// than a generated one (40 characters from 62, about 238 bits). They reject short keys and
// keys such as 40 copies of one letter, but cannot tell a random key from a long word.
const (
	minSecretLength   = 32 // characters
	minSecretDistinct = 10 // distinct characters
)

// Credential describes one access key pair, without its secret key.
type Credential struct {
	Principal
	Disabled  bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// CreateRequest describes a credential to create.
type CreateRequest struct {
	// UserID is empty to generate one: 32 lower-case hex digits.
	UserID    string
	ProjectID string
	DomainID  string
	// Role is one of the Role constants.
	Role string
	// AccessKey and SecretKey import an existing pair. A chosen SecretKey needs at least
	// 32 characters, 10 of them distinct. Leave both empty to generate a 20-character
	// access key and a 40-character secret key from the token RNG.
	AccessKey string
	SecretKey string
}

// CredentialsConfig configures Credentials. Zero fields take the Default values.
type CredentialsConfig struct {
	// CacheTTL is how long an unsealed credential is served from memory. It is the
	// upper bound on how long a change made by another replica goes unseen here.
	CacheTTL time.Duration
	// MaxCached caps the number of cached credentials.
	MaxCached int
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
	// Logger receives credential changes. Nil means slog.Default().
	Logger *slog.Logger
}

// Credentials manages access key pairs in a store, with secret keys sealed by the token
// key SealingKey under AES-GCM with AAD "credential:"+access key, so a sealed secret
// copied to another access key's row does not open. It implements CredentialSource.
//
// Lookup serves unsealed credentials from an in-memory cache for up to CacheTTL. Disable,
// Enable and Delete drop the entry of this instance at once, while other instances
// sharing the store see the change within their CacheTTL. Credentials is safe for
// concurrent use.
type Credentials struct {
	store  store.Store
	token  hsm.Token
	ttl    time.Duration
	max    int
	clock  func() time.Time
	logger *slog.Logger

	// keyMu serialises creation of the sealing key, and keyReady is set once it exists.
	keyMu    sync.Mutex
	keyReady bool

	cacheMu sync.Mutex
	cache   map[string]cachedCredential
}

type cachedCredential struct {
	principal Principal
	// key is the secret key with its HMAC states; nil for a disabled credential.
	key      *signingKey
	disabled bool
	expires  time.Time
}

// NewCredentials returns a Credentials over st and tok. The sealing key is generated in
// tok on first use.
func NewCredentials(st store.Store, tok hsm.Token, cfg CredentialsConfig) *Credentials {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.MaxCached <= 0 {
		cfg.MaxCached = DefaultMaxCached
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	return &Credentials{
		store:  st,
		token:  tok,
		ttl:    cfg.CacheTTL,
		max:    cfg.MaxCached,
		clock:  cfg.Clock,
		logger: cfg.Logger,
		cache:  make(map[string]cachedCredential),
	}
}

// Create stores a new credential and returns it with its secret key, which is not
// returned again by any method. It returns an error wrapping ErrInvalidCredential for an
// invalid request, ErrAccessKeyExists when the access key is taken, and an error wrapping
// ErrInvalidCredential and a *store.DomainMismatchError when the project or the chosen
// user id has credentials of another domain. As in Huawei IAM, a project belongs to one
// domain, and a user belongs to one domain and may work in several of its projects.
// Without the check, an admin could name its credentials after another domain's user,
// whose id audit records and grants would then show, and the operator admin could give a
// project's keys to two domains. The store checks and inserts in one transaction, so
// concurrent calls cannot both pass.
func (c *Credentials) Create(ctx context.Context, req CreateRequest) (Credential, string, error) {
	if err := c.completeRequest(ctx, &req); err != nil {
		return Credential{}, "", err
	}

	sealed, err := c.seal(ctx, req.AccessKey, []byte(req.SecretKey))
	if err != nil {
		return Credential{}, "", err
	}

	now := c.clock().UTC()
	row := store.Credential{
		AccessKey:    req.AccessKey,
		SealedSecret: sealed,
		UserID:       req.UserID,
		ProjectID:    req.ProjectID,
		DomainID:     req.DomainID,
		Role:         req.Role,
		CreatedAt:    now,
		UpdatedAt:    now,
	}
	err = c.store.PutCredential(ctx, row)
	var mismatch *store.DomainMismatchError
	if errors.As(err, &mismatch) {
		return Credential{}, "", fmt.Errorf("%w: %w", ErrInvalidCredential, mismatch)
	}
	if errors.Is(err, store.ErrConflict) {
		return Credential{}, "", fmt.Errorf("%w: %s", ErrAccessKeyExists, req.AccessKey)
	}
	if err != nil {
		return Credential{}, "", fmt.Errorf("store credential %s: %w", req.AccessKey, err)
	}

	c.logger.Info("credential created", "access_key", req.AccessKey, "user_id", req.UserID,
		"project_id", req.ProjectID, "role", req.Role)
	return credentialFromRow(row), req.SecretKey, nil
}

// completeRequest validates req and fills in the generated fields.
func (c *Credentials) completeRequest(ctx context.Context, req *CreateRequest) error {
	if err := validateRequest(*req); err != nil {
		return err
	}

	var err error
	if req.UserID == "" {
		if req.UserID, err = c.randomHex(ctx, 16); err != nil {
			return err
		}
	}
	if req.AccessKey == "" {
		if req.AccessKey, err = c.randomString(ctx, upperAlphanumeric, accessKeyLength); err != nil {
			return err
		}
		if req.SecretKey, err = c.randomString(ctx, alphanumeric, secretKeyLength); err != nil {
			return err
		}
	}
	return nil
}

func validateRequest(req CreateRequest) error {
	if !ValidRole(req.Role) {
		return fmt.Errorf("%w: role %q is not one of %v", ErrInvalidCredential, req.Role, Roles())
	}
	if req.UserID != "" && !validID(req.UserID) {
		return fmt.Errorf("%w: user id %q is not 1 to 64 characters of A-Z a-z 0-9 _ -",
			ErrInvalidCredential, req.UserID)
	}
	if req.ProjectID == "" {
		return fmt.Errorf("%w: project id is missing", ErrInvalidCredential)
	}
	if !validID(req.ProjectID) {
		return fmt.Errorf("%w: project id %q is not 1 to 64 characters of A-Z a-z 0-9 _ -",
			ErrInvalidCredential, req.ProjectID)
	}
	if req.DomainID == "" {
		return fmt.Errorf("%w: domain id is missing", ErrInvalidCredential)
	}
	if !validID(req.DomainID) {
		return fmt.Errorf("%w: domain id %q is not 1 to 64 characters of A-Z a-z 0-9 _ -",
			ErrInvalidCredential, req.DomainID)
	}

	if (req.AccessKey == "") != (req.SecretKey == "") {
		return fmt.Errorf("%w: set both access key and secret key, or neither",
			ErrInvalidCredential)
	}
	// A chosen access key must be plausible (plausibleAccessKey): shorter than any secret
	// key, so that a secret key pasted into the wrong field is rejected instead of being
	// sent in every Authorization header and logged. The value is not repeated, for the
	// same reason. It needs a letter or digit, because the admin routes take it as a path
	// segment, where "." and ".." are dot-segments that clients and proxies remove.
	if req.AccessKey != "" &&
		(!plausibleAccessKey(req.AccessKey) || !hasLetterOrDigit(req.AccessKey)) {
		return fmt.Errorf("%w: access key is not 1 to %d characters of A-Z a-z 0-9 _ - . "+
			"with at least one letter or digit", ErrInvalidCredential, minSecretLength-1)
	}
	if len(req.SecretKey) > maxSecretLength {
		return fmt.Errorf("%w: secret key is longer than %d bytes", ErrInvalidCredential,
			maxSecretLength)
	}
	if req.SecretKey != "" {
		return validateChosenSecret(req.SecretKey)
	}
	return nil
}

// validateChosenSecret rejects a caller-chosen secret key shorter than minSecretLength
// characters or with fewer than minSecretDistinct distinct characters. Its errors wrap
// ErrInvalidCredential and never contain the secret key or its length.
func validateChosenSecret(secret string) error {
	advice := fmt.Sprintf("Choose a random secret key of at least %d characters, or "+
		"leave access key and secret key empty to have both generated", minSecretLength)
	if !utf8.ValidString(secret) {
		return fmt.Errorf("%w: secret key is not valid UTF-8. %s", ErrInvalidCredential, advice)
	}
	// A control character, NUL among them, cannot be written reliably in the
	// configuration files and environment variables that SDKs read the secret key from.
	for i, r := range []rune(secret) {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: character %d of the secret key is a control character. %s",
				ErrInvalidCredential, i+1, advice)
		}
	}
	if utf8.RuneCountInString(secret) < minSecretLength {
		return fmt.Errorf("%w: secret key is shorter than %d characters. %s",
			ErrInvalidCredential, minSecretLength, advice)
	}

	distinct := make(map[rune]bool, minSecretDistinct)
	for _, r := range secret {
		distinct[r] = true
		if len(distinct) >= minSecretDistinct {
			return nil
		}
	}
	return fmt.Errorf("%w: secret key has fewer than %d distinct characters. %s",
		ErrInvalidCredential, minSecretDistinct, advice)
}

// validID reports whether id is 1 to 64 characters of A-Z a-z 0-9 _ -, which covers
// Huawei's 32-hex-digit project, domain and user ids.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}

	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isUnreserved(c) || c == '~' || c == '.' {
			return false
		}
	}
	return true
}

// Lookup returns the principal and secret key of accessKey, from the cache when an entry
// younger than CacheTTL exists. It returns an error wrapping ErrUnknownAccessKey or
// ErrDisabledAccessKey when the key cannot sign, and a wrapped store or token error
// otherwise. The returned secret is shared with the cache: do not modify it.
func (c *Credentials) Lookup(ctx context.Context, accessKey string) (Principal, []byte, error) {
	p, key, err := c.lookupSigningKey(ctx, accessKey)
	if err != nil {
		return Principal{}, nil, err
	}
	return p, key.secret, nil
}

// lookupSigningKey is Lookup with the signing key of the cache entry, which lives as
// long as the entry, so that a new entry, and with it a changed secret, gets new HMAC
// states.
func (c *Credentials) lookupSigningKey(ctx context.Context, accessKey string) (Principal, *signingKey, error) {
	now := c.clock()
	if entry, ok := c.cached(accessKey, now); ok {
		return entryResult(accessKey, entry)
	}

	row, err := c.store.GetCredential(ctx, accessKey)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, nil, fmt.Errorf("%w: %s", ErrUnknownAccessKey, accessKey)
	}
	if err != nil {
		return Principal{}, nil, fmt.Errorf("get credential %s: %w", accessKey, err)
	}

	entry := cachedCredential{
		principal: credentialFromRow(row).Principal,
		disabled:  row.Disabled,
		expires:   now.Add(c.ttl),
	}
	if !row.Disabled {
		secret, err := c.open(ctx, accessKey, row.SealedSecret)
		if err != nil {
			return Principal{}, nil, err
		}
		entry.key = newSigningKey(secret)
	}

	c.remember(accessKey, entry, now)
	return entryResult(accessKey, entry)
}

func entryResult(accessKey string, entry cachedCredential) (Principal, *signingKey, error) {
	if entry.disabled {
		return Principal{}, nil, fmt.Errorf("%w: %s", ErrDisabledAccessKey, accessKey)
	}
	return entry.principal, entry.key, nil
}

// Get returns the credential of accessKey, enabled or not, read from the store and not
// from the cache. It returns an error wrapping ErrUnknownAccessKey when no credential
// has the key.
func (c *Credentials) Get(ctx context.Context, accessKey string) (Credential, error) {
	row, err := c.store.GetCredential(ctx, accessKey)
	if errors.Is(err, store.ErrNotFound) {
		return Credential{}, fmt.Errorf("%w: %s", ErrUnknownAccessKey, accessKey)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("get credential %s: %w", accessKey, err)
	}
	return credentialFromRow(row), nil
}

// List returns every credential, ordered by access key, without secret keys.
func (c *Credentials) List(ctx context.Context) ([]Credential, error) {
	rows, err := c.store.ListCredentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}

	credentials := make([]Credential, 0, len(rows))
	for _, row := range rows {
		credentials = append(credentials, credentialFromRow(row))
	}
	return credentials, nil
}

// Disable stops accessKey from signing. It returns an error wrapping ErrUnknownAccessKey
// when no credential has the key.
func (c *Credentials) Disable(ctx context.Context, accessKey string) error {
	return c.setDisabled(ctx, accessKey, true)
}

// Enable lets a disabled accessKey sign again. It returns an error wrapping
// ErrUnknownAccessKey when no credential has the key.
func (c *Credentials) Enable(ctx context.Context, accessKey string) error {
	return c.setDisabled(ctx, accessKey, false)
}

func (c *Credentials) setDisabled(ctx context.Context, accessKey string, disabled bool) error {
	err := c.store.SetCredentialDisabled(ctx, accessKey, disabled)
	c.forget(accessKey)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownAccessKey, accessKey)
	}
	if err != nil {
		return fmt.Errorf("set credential %s disabled=%t: %w", accessKey, disabled, err)
	}

	c.logger.Info("credential changed", "access_key", accessKey, "disabled", disabled)
	return nil
}

// Delete removes the credential of accessKey. It returns an error wrapping
// ErrUnknownAccessKey when no credential has the key.
func (c *Credentials) Delete(ctx context.Context, accessKey string) error {
	err := c.store.DeleteCredential(ctx, accessKey)
	c.forget(accessKey)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownAccessKey, accessKey)
	}
	if err != nil {
		return fmt.Errorf("delete credential %s: %w", accessKey, err)
	}

	c.logger.Info("credential deleted", "access_key", accessKey)
	return nil
}

func credentialFromRow(row store.Credential) Credential {
	return Credential{
		Principal: Principal{
			AccessKey: row.AccessKey,
			UserID:    row.UserID,
			ProjectID: row.ProjectID,
			DomainID:  row.DomainID,
			Role:      row.Role,
		},
		Disabled:  row.Disabled,
		CreatedAt: row.CreatedAt,
		UpdatedAt: row.UpdatedAt,
	}
}

// hasLetterOrDigit reports whether s contains an ASCII letter or digit.
func hasLetterOrDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			return true
		}
	}
	return false
}
