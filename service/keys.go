package service

import (
	"context"
	"errors"
	"strings"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Key specs, usages and origins that create-key accepts today. The store keeps them as
// strings so that RSA, EC and HMAC keys can be added without a schema change.
const (
	SpecAES256           = "AES_256"
	UsageEncryptDecrypt  = "ENCRYPT_DECRYPT"
	OriginKMS            = "kms"
	maxDescriptionLength = 255
)

// CreateKeyInput is a validated create-key request.
type CreateKeyInput struct {
	Alias       string
	Spec        string // empty for AES_256
	Usage       string // empty for ENCRYPT_DECRYPT
	Description string
	Origin      string // empty for kms
}

// ValidateAlias checks a key_alias: 1 to 255 of [a-zA-Z0-9:/_-], not ending in
// "/default" (reserved for the service's default keys).
func ValidateAlias(alias string) error {
	if alias == "" {
		return Errorf(CodeMissingParameter, "key_alias is missing")
	}
	if !aliasPattern.MatchString(alias) || strings.HasSuffix(alias, "/default") {
		return Errorf(CodeInvalidAlias,
			"key_alias must be 1 to 255 characters of a-z, A-Z, 0-9, ':', '/', '_', '-' "+
				"and must not end in /default")
	}
	return nil
}

// ValidateDescription checks a key_description: at most 255 characters, none of them
// ASCII 0 to 31. PostgreSQL cannot store the NUL character in text at all.
func ValidateDescription(d string) error {
	if len([]rune(d)) > maxDescriptionLength {
		return Errorf(CodeInvalidDescription, "key_description is longer than 255 characters")
	}
	if strings.IndexFunc(d, func(r rune) bool { return r < 0x20 }) >= 0 {
		return Errorf(CodeInvalidDescription, "key_description must not contain control "+
			"characters (ASCII 0 to 31)")
	}
	return nil
}

// CreateKey generates a new CMK in the token and records it.
//
// Consistency with the token: a "creating" version row is committed before the token
// object is generated, and the key row only after it exists. When the key row cannot be
// committed, the "creating" row is removed and the token object destroyed at once. When
// the process dies first, the reconciliation job finds the "creating" row later and
// destroys the object. So no key row names a missing object. A token object is left
// without a row only when destroying it fails after its row was removed (see
// destroyUncommitted).
func (s *Service) CreateKey(ctx context.Context, p auth.Principal, in CreateKeyInput) (store.Key, error) {
	if err := s.authorize(ctx, p, "create-key", nil); err != nil {
		return store.Key{}, err
	}

	if err := s.validateCreateKey(&in); err != nil {
		return store.Key{}, err
	}

	// A fast path only: the store counts again in the insert transaction, so concurrent
	// creations cannot pass the quota together.
	if err := s.checkKeyQuota(ctx, p.ProjectID); err != nil {
		return store.Key{}, err
	}

	if _, err := s.store.GetKeyByAlias(ctx, p.ProjectID, in.Alias); err == nil {
		return store.Key{}, Errorf(CodeAliasExists, "the key_alias is already in use")
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Key{}, storeError("check alias", err)
	}

	now := s.cfg.Clock().UTC()
	k := store.Key{
		ID:             newKeyID(),
		ProjectID:      p.ProjectID,
		DomainID:       p.DomainID,
		Alias:          in.Alias,
		Description:    in.Description,
		Spec:           in.Spec,
		Usage:          in.Usage,
		Origin:         in.Origin,
		State:          store.KeyStateEnabled,
		CreatedAt:      now,
		UpdatedAt:      now,
		CurrentVersion: 1,
	}

	if err := s.createKeyObjects(ctx, k); err != nil {
		return store.Key{}, err
	}

	s.log.Info("key created", "key_id", k.ID, "project_id", k.ProjectID, "key_version", 1)
	return k, nil
}

func (s *Service) validateCreateKey(in *CreateKeyInput) error {
	if err := ValidateAlias(in.Alias); err != nil {
		return err
	}
	if err := ValidateDescription(in.Description); err != nil {
		return err
	}

	if in.Spec == "" {
		in.Spec = SpecAES256
	}
	if in.Spec != SpecAES256 {
		return Errorf(CodeInvalidParameter, "key_spec %q is not supported; use AES_256", in.Spec)
	}

	if in.Usage == "" {
		in.Usage = UsageEncryptDecrypt
	}
	if in.Usage != UsageEncryptDecrypt {
		return Errorf(CodeInvalidParameter,
			"key_usage %q is not supported for AES_256; use ENCRYPT_DECRYPT", in.Usage)
	}

	if in.Origin == "" {
		in.Origin = OriginKMS
	}
	if in.Origin != OriginKMS {
		return Errorf(CodeInvalidParameter, "origin %q is not supported; use kms", in.Origin)
	}
	return nil
}

func (s *Service) checkKeyQuota(ctx context.Context, projectID string) error {
	n, err := s.store.CountKeys(ctx, projectID)
	if err != nil {
		return storeError("count keys", err)
	}
	if n >= s.cfg.KeysPerProject {
		return keyQuotaError(s.cfg.KeysPerProject)
	}
	return nil
}

func keyQuotaError(limit int) error {
	return Errorf(CodeKeyQuota, "the project has reached its quota of %d keys", limit)
}

// createKeyObjects runs the three steps of CreateKey that touch the token and the store.
func (s *Service) createKeyObjects(ctx context.Context, k store.Key) error {
	ref := hsm.KeyRef{KeyID: k.ID, Version: 1}

	if err := s.requireCurrentToken(ctx, "create key"); err != nil {
		return err
	}

	if err := s.store.BeginKeyVersion(ctx, k.ID, 1); err != nil {
		return storeError("begin key version", err)
	}

	if err := s.token.GenerateKey(ctx, ref); err != nil {
		s.abortVersion(ctx, ref)
		return tokenError("generate key", err)
	}

	err := s.store.CreateKey(ctx, k, s.cfg.KeysPerProject)
	if err == nil || s.destroyUncommitted(ctx, ref) {
		return nil
	}

	if errors.Is(err, store.ErrAliasExists) {
		return Errorf(CodeAliasExists, "the key_alias is already in use")
	}
	if errors.Is(err, store.ErrLimitExceeded) {
		return keyQuotaError(s.cfg.KeysPerProject)
	}
	return storeError("create key", err)
}

// destroyUncommitted undoes a generated key object whose metadata could not be
// committed, and reports whether the metadata was committed after all, in which case the
// object stays and the caller's write succeeded. A failure here is logged, and a row it
// could not remove is left to Reconcile.
//
// The version's row goes first, because AbortKeyVersion removes it only while it is still
// "creating". A write that failed for the caller may have committed all the same, as when
// a request is cancelled while PostgreSQL commits it, and the object of such a version
// must stay.
//
// NOTE: when the row is gone and destroying the object fails, no row is left that points
// Reconcile at the object, so it stays in the token unused. A later rotation skips its
// version number (generateVersion).
func (s *Service) destroyUncommitted(ctx context.Context, ref hsm.KeyRef) (committed bool) {
	ctx, cancel := detach(ctx)
	defer cancel()
	err := s.store.AbortKeyVersion(ctx, ref.KeyID, ref.Version)
	switch {
	case errors.Is(err, store.ErrConflict):
		s.log.Info("a key version was committed although its write returned an error",
			"key_id", ref.KeyID, "key_version", ref.Version, "error", err)
		return true
	case err != nil && !errors.Is(err, store.ErrNotFound):
		s.log.Warn("removing a creating key version row failed; reconciliation will retry",
			"key_id", ref.KeyID, "key_version", ref.Version, "error", err)
		return false
	}

	if err := s.token.DestroyKey(ctx, ref); err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
		s.log.Warn("destroying an uncommitted key object failed; the object stays unused",
			"key_id", ref.KeyID, "key_version", ref.Version, "error", err)
	}
	return false
}

func (s *Service) abortVersion(ctx context.Context, ref hsm.KeyRef) {
	ctx, cancel := detach(ctx)
	defer cancel()
	err := s.store.AbortKeyVersion(ctx, ref.KeyID, ref.Version)
	if err != nil {
		s.log.Warn("removing a creating key version row failed; reconciliation will retry",
			"key_id", ref.KeyID, "key_version", ref.Version, "error", err)
	}
}

// DescribeKey returns the key with id (or "alias/<key_alias>") in the caller's project.
func (s *Service) DescribeKey(ctx context.Context, p auth.Principal, keyRef string) (store.Key, error) {
	k, err := s.lookupKey(ctx, p.ProjectID, keyRef)
	if err != nil {
		return store.Key{}, err
	}
	if err := s.authorize(ctx, p, "describe-key", &k); err != nil {
		return store.Key{}, err
	}
	return k, nil
}

// ListKeysInput is a validated list-keys request.
type ListKeysInput struct {
	Limit  int    // 1 to 1000; 0 for the default of 10
	Offset int    // the marker
	State  string // empty for every state
	Spec   string // empty or AES_256 for AES_256 keys only, "ALL" for every spec
}

// ListKeysResult is one page of keys.
type ListKeysResult struct {
	Keys       []store.Key
	Total      int
	NextMarker int // 0 when the page is the last
	Truncated  bool
}

// Limits of list-keys paging.
const (
	DefaultListLimit = 10
	MaxListLimit     = 1000
)

// ListKeys lists the caller's project keys.
func (s *Service) ListKeys(ctx context.Context, p auth.Principal, in ListKeysInput) (ListKeysResult, error) {
	if err := s.authorize(ctx, p, "list-keys", nil); err != nil {
		return ListKeysResult{}, err
	}

	if in.Limit == 0 {
		in.Limit = DefaultListLimit
	}
	if in.Limit < 1 || in.Limit > MaxListLimit {
		return ListKeysResult{}, Errorf(CodeInvalidLimit, "limit must be 1 to %d", MaxListLimit)
	}
	if in.Offset < 0 {
		return ListKeysResult{}, Errorf(CodeInvalidMarker, "marker must be 0 or more")
	}
	switch in.State {
	case "", store.KeyStatePendingActivation, store.KeyStateEnabled, store.KeyStateDisabled,
		store.KeyStatePendingDeletion, store.KeyStatePendingImport:
	default:
		return ListKeysResult{}, Errorf(CodeInvalidParameter, "key_state must be 1 to 5")
	}

	f := store.ListKeysFilter{State: in.State, Offset: in.Offset, Limit: in.Limit}
	switch in.Spec {
	case "", SpecAES256:
		f.Spec = SpecAES256 // without ALL, only AES_256 keys are listed, as Huawei's API does
	case "ALL":
	case "SM4", "RSA_2048", "RSA_3072", "RSA_4096", "EC_P256", "EC_P384", "SM2":
		f.Spec = in.Spec // filter values of Huawei's API for specs that kmsd does not create
	default:
		return ListKeysResult{}, Errorf(CodeInvalidParameter,
			"key_spec %q is not one of AES_256, SM4, RSA_2048, RSA_3072, RSA_4096, EC_P256, "+
				"EC_P384, SM2 and ALL", in.Spec)
	}

	keys, total, err := s.store.ListKeys(ctx, p.ProjectID, f)
	if err != nil {
		return ListKeysResult{}, storeError("list keys", err)
	}

	res := ListKeysResult{Keys: keys, Total: total}
	if next := in.Offset + len(keys); next < total {
		res.NextMarker = next
		res.Truncated = true
	}
	return res, nil
}
