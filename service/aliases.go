package service

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// aliasPrefix starts every alias of the alias API, and every alias reference that
// describe-key and the data-key operations accept in place of a key id.
const aliasPrefix = "alias/"

// ValidateAliasName checks an alias of the alias API: "alias/" and then at least one
// character, 255 characters in all, of [a-zA-Z0-9:/_-], not ending in "/default" (the
// suffix of the service's default keys).
func ValidateAliasName(alias string) error {
	if alias == "" {
		return Errorf(CodeMissingParameter, "alias is missing")
	}
	if !strings.HasPrefix(alias, aliasPrefix) || len(alias) == len(aliasPrefix) ||
		!aliasPattern.MatchString(alias) || strings.HasSuffix(alias, "/default") {
		return Errorf(CodeInvalidAlias, "alias must be \"alias/\" and then a name, 255 "+
			"characters in all, of a-z, A-Z, 0-9, ':', '/', '_', '-', not ending in /default")
	}
	return nil
}

// AliasURN returns the alias resource name of an alias, "kms:<region>:<domain>:alias:<name>",
// where name is the alias without its "alias/" prefix.
func (s *Service) AliasURN(a store.Alias) string {
	name := strings.TrimPrefix(a.Alias, aliasPrefix)
	return "kms:" + s.cfg.Region + ":" + a.DomainID + ":alias:" + name
}

// CreateAlias gives the key keyRef (a key id or an alias reference) the alias. The key
// must not be pending deletion.
func (s *Service) CreateAlias(
	ctx context.Context,
	p auth.Principal,
	keyRef, alias string,
) (store.Alias, error) {
	if err := ValidateAliasName(alias); err != nil {
		return store.Alias{}, err
	}
	k, err := s.aliasTarget(ctx, p, auth.OpCreateAlias, keyRef)
	if err != nil {
		return store.Alias{}, err
	}

	now := s.cfg.Clock().UTC()
	a := store.Alias{ProjectID: p.ProjectID, DomainID: k.DomainID, Alias: alias, KeyID: k.ID,
		CreatedAt: now, UpdatedAt: now}
	err = s.store.CreateAlias(ctx, a)
	switch {
	case errors.Is(err, store.ErrAliasExists):
		return store.Alias{}, Errorf(CodeAliasExists, "the alias is already in use in the project")
	case errors.Is(err, store.ErrNotFound):
		return store.Alias{}, errKeyNotFound()
	case err != nil:
		return store.Alias{}, storeError("create alias", err)
	}

	s.aliases.drop(p.ProjectID, alias)
	s.log.Info("alias created", "key_id", k.ID, "project_id", p.ProjectID,
		"alias", loggedAlias(alias))
	return a, nil
}

// aliasTarget looks up the key that an alias change names, authorizes op on it and
// checks that it is not pending deletion.
func (s *Service) aliasTarget(
	ctx context.Context,
	p auth.Principal,
	op, keyRef string,
) (store.Key, error) {
	k, err := s.lookupKey(ctx, p.ProjectID, keyRef)
	if err != nil {
		return store.Key{}, err
	}
	if err := s.authorize(ctx, p, op, &k); err != nil {
		return store.Key{}, err
	}
	if k.State == store.KeyStatePendingDeletion {
		return store.Key{}, Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
	}
	return k, nil
}

// DeleteAliases deletes aliases of the key keyID, all or none.
func (s *Service) DeleteAliases(
	ctx context.Context,
	p auth.Principal,
	keyID string,
	aliases []string,
) (store.Key, error) {
	if len(aliases) == 0 {
		return store.Key{}, Errorf(CodeMissingParameter, "aliases is missing or empty")
	}
	for _, alias := range aliases {
		if err := ValidateAliasName(alias); err != nil {
			return store.Key{}, err
		}
	}

	k, err := s.lookupKey(ctx, p.ProjectID, keyID)
	if err != nil {
		return store.Key{}, err
	}
	if err := s.authorize(ctx, p, auth.OpDeleteAlias, &k); err != nil {
		return store.Key{}, err
	}

	err = s.store.DeleteAliases(ctx, p.ProjectID, k.ID, aliases)
	if errors.Is(err, store.ErrNotFound) {
		return store.Key{}, Errorf(CodeInvalidParameter,
			"an alias in aliases is not an alias of the key; nothing was deleted")
	}
	if err != nil {
		return store.Key{}, storeError("delete aliases", err)
	}

	for _, alias := range aliases {
		s.aliases.drop(p.ProjectID, alias)
	}
	s.log.Info("aliases deleted", "key_id", k.ID, "project_id", p.ProjectID,
		"count", len(aliases))
	return k, nil
}

// ListAliasesInput is a validated list-aliases request.
type ListAliasesInput struct {
	KeyID  string // empty for the aliases of every key of the project
	Limit  int    // 1 to MaxListLimit, or 0 for DefaultListLimit
	Offset int    // the marker
}

// ListAliasesResult is one page of aliases.
type ListAliasesResult struct {
	Aliases    []store.Alias
	Total      int
	NextMarker int // 0 when the page is the last
	Truncated  bool
}

// ListAliases lists the aliases of the project, or of one of its keys.
func (s *Service) ListAliases(
	ctx context.Context,
	p auth.Principal,
	in ListAliasesInput,
) (ListAliasesResult, error) {
	if err := s.authorize(ctx, p, auth.OpListAliases, nil); err != nil {
		return ListAliasesResult{}, err
	}

	if in.Limit == 0 {
		in.Limit = DefaultListLimit
	}
	if in.Limit < 1 || in.Limit > MaxListLimit {
		return ListAliasesResult{}, Errorf(CodeInvalidLimit, "limit must be 1 to %d", MaxListLimit)
	}
	if in.Offset < 0 {
		return ListAliasesResult{}, Errorf(CodeInvalidMarker, "marker must be 0 or more")
	}
	if in.KeyID != "" {
		if _, err := s.lookupKey(ctx, p.ProjectID, in.KeyID); err != nil {
			return ListAliasesResult{}, err
		}
	}

	f := store.ListAliasesFilter{KeyID: in.KeyID, Offset: in.Offset, Limit: in.Limit}
	aliases, total, err := s.store.ListAliases(ctx, p.ProjectID, f)
	if err != nil {
		return ListAliasesResult{}, storeError("list aliases", err)
	}

	res := ListAliasesResult{Aliases: aliases, Total: total}
	if next := in.Offset + len(aliases); next < total {
		res.NextMarker = next
		res.Truncated = true
	}
	return res, nil
}

// AssociateAlias moves an existing alias of the project to the key targetKeyRef, which
// must not be pending deletion.
func (s *Service) AssociateAlias(
	ctx context.Context,
	p auth.Principal,
	alias, targetKeyRef string,
) (store.Alias, error) {
	if err := ValidateAliasName(alias); err != nil {
		return store.Alias{}, err
	}
	if targetKeyRef == "" {
		return store.Alias{}, Errorf(CodeMissingParameter, "target_key_id is missing")
	}
	k, err := s.aliasTarget(ctx, p, auth.OpAssociateAlias, targetKeyRef)
	if err != nil {
		return store.Alias{}, err
	}

	a, err := s.store.AssociateAlias(ctx, p.ProjectID, alias, k.ID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Alias{}, Errorf(CodeInvalidParameter, "the alias does not exist in the project")
	}
	if err != nil {
		return store.Alias{}, storeError("associate alias", err)
	}

	s.aliases.drop(p.ProjectID, alias)
	s.log.Info("alias associated", "key_id", k.ID, "project_id", p.ProjectID,
		"alias", loggedAlias(alias))
	return a, nil
}

// UpdateKeyAlias sets the key_alias of a key that is not pending deletion.
func (s *Service) UpdateKeyAlias(
	ctx context.Context,
	p auth.Principal,
	keyID, keyAlias string,
) (store.Key, error) {
	if err := ValidateAlias(keyAlias); err != nil {
		return store.Key{}, err
	}
	return s.updateKey(ctx, p, auth.OpUpdateKeyAlias, keyID, func(k *store.Key) {
		k.Alias = keyAlias
	})
}

// UpdateKeyDescription sets the key_description of a key that is not pending deletion.
func (s *Service) UpdateKeyDescription(
	ctx context.Context,
	p auth.Principal,
	keyID, description string,
) (store.Key, error) {
	if err := ValidateDescription(description); err != nil {
		return store.Key{}, err
	}
	return s.updateKey(ctx, p, auth.OpUpdateKeyDescription, keyID, func(k *store.Key) {
		k.Description = description
	})
}

// updateKey applies set to a key that is not pending deletion, through changeKey.
func (s *Service) updateKey(
	ctx context.Context,
	p auth.Principal,
	op, keyID string,
	set func(k *store.Key),
) (store.Key, error) {
	k, err := s.changeKey(ctx, p, op, keyID, func(k *store.Key, _ time.Time) error {
		if k.State == store.KeyStatePendingDeletion {
			return Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
		}
		set(k)
		return nil
	})
	if errors.Is(err, store.ErrAliasExists) {
		return store.Key{}, Errorf(CodeAliasExists, "the key_alias is already in use")
	}
	if err != nil {
		return store.Key{}, err
	}

	s.log.Info("key updated", "operation", op, "key_id", k.ID, "project_id", k.ProjectID)
	return k, nil
}

// lookupAliasRef resolves "alias/<name>": first as an alias of the alias API, then as a
// key_alias "<name>".
func (s *Service) lookupAliasRef(ctx context.Context, projectID, ref string) (store.Key, error) {
	keyID, ok := s.aliases.get(projectID, ref, s.cfg.Clock())
	if !ok {
		a, err := s.store.GetAlias(ctx, projectID, ref)
		switch {
		case err == nil:
			keyID = a.KeyID
			s.aliases.put(projectID, ref, keyID, s.cfg.Clock(), s.cfg.KeyCacheTTL)
		case !errors.Is(err, store.ErrNotFound):
			return store.Key{}, storeError("get alias", err)
		}
	}
	if keyID != "" {
		return s.lookupKeyID(ctx, projectID, keyID)
	}

	k, err := s.store.GetKeyByAlias(ctx, projectID, strings.TrimPrefix(ref, aliasPrefix))
	if errors.Is(err, store.ErrNotFound) {
		return store.Key{}, errKeyNotFound()
	}
	if err != nil {
		return store.Key{}, storeError("get key by alias", err)
	}
	s.putCached(k)
	return k, nil
}

// aliasCache maps (project, alias) to a key id for KeyCacheTTL. The zero value is an
// empty cache. It is safe for concurrent use. A change on this replica drops the
// entry at once; a change on another replica takes effect within KeyCacheTTL.
type aliasCache struct {
	mu      sync.RWMutex
	entries map[aliasCacheKey]cachedAlias
}

type aliasCacheKey struct{ projectID, alias string }

type cachedAlias struct {
	keyID   string
	expires time.Time
}

func (c *aliasCache) get(projectID, alias string, now time.Time) (string, bool) {
	c.mu.RLock()
	e, ok := c.entries[aliasCacheKey{projectID, alias}]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return "", false
	}
	return e.keyID, true
}

// put stores an entry that expires ttl after now, unless ttl is negative (the cache is
// off). When the cache has maxCachedKeys entries, they are all dropped first.
func (c *aliasCache) put(projectID, alias, keyID string, now time.Time, ttl time.Duration) {
	if ttl < 0 {
		return
	}
	c.mu.Lock()
	if c.entries == nil || len(c.entries) >= maxCachedKeys {
		c.entries = make(map[aliasCacheKey]cachedAlias)
	}
	c.entries[aliasCacheKey{projectID, alias}] = cachedAlias{keyID: keyID, expires: now.Add(ttl)}
	c.mu.Unlock()
}

func (c *aliasCache) drop(projectID, alias string) {
	c.mu.Lock()
	delete(c.entries, aliasCacheKey{projectID, alias})
	c.mu.Unlock()
}

// loggedAlias returns alias, or Redacted when it can be a secret that a client sent as
// an alias by mistake (MaybeSecret).
func loggedAlias(alias string) string {
	if MaybeSecret(alias) {
		return Redacted
	}
	return alias
}
