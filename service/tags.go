package service

import (
	"context"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// Tag limits of the Huawei Cloud KMS API v1.0. Lengths count Unicode characters.
const (
	MaxTagsPerKey     = 10
	MaxTagKeyLength   = 36
	MaxTagValueLength = 43
)

// Limits of a resource_instances request. The limits on filter tags and values are
// this service's choice: the API documents only that they exist (KMS.0407, KMS.0413).
const (
	DefaultTagQueryLimit = 10
	MaxTagQueryLimit     = 1000
	MaxFilterTags        = 10
	MaxFilterTagValues   = 10
	MaxMatchValueLength  = 255
)

// Tag batch and resource_instances actions.
const (
	TagActionCreate = "create"
	TagActionDelete = "delete"
	TagQueryFilter  = "filter"
	TagQueryCount   = "count"
)

// matchResourceName is the only match key of resource_instances: the key_alias.
const matchResourceName = "resource_name"

// forbiddenTagChars are the characters, besides ASCII 0 to 31, that neither a tag key
// nor a tag value may contain.
const forbiddenTagChars = `*<>\=`

// validTagText reports whether s has no forbidden character.
func validTagText(s string) bool {
	for _, r := range s {
		if r < 0x20 || strings.ContainsRune(forbiddenTagChars, r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// ValidateTagKey checks a tag key: 1 to 36 characters without ASCII 0 to 31, '*', '<',
// '>', '\' or '='.
func ValidateTagKey(key string) error {
	if key == "" {
		return Errorf(CodeInvalidTagKey, "the tag key is empty")
	}
	if utf8.RuneCountInString(key) > MaxTagKeyLength {
		return Errorf(CodeTagKeyLength, "a tag key must be 1 to %d characters", MaxTagKeyLength)
	}
	if !validTagText(key) {
		return Errorf(CodeInvalidTagKey,
			`a tag key must not contain control characters or any of * < > \ =`)
	}
	return nil
}

// ValidateTagValue checks a tag value: 0 to 43 characters without ASCII 0 to 31, '*',
// '<', '>', '\' or '='.
func ValidateTagValue(value string) error {
	if utf8.RuneCountInString(value) > MaxTagValueLength {
		return Errorf(CodeTagValueLength, "a tag value must be 0 to %d characters",
			MaxTagValueLength)
	}
	if !validTagText(value) {
		return Errorf(CodeInvalidTagValue,
			`a tag value must not contain control characters or any of * < > \ =`)
	}
	return nil
}

// systemTagPrefix starts the keys of Huawei Cloud's system tags, which tenants cannot
// add. Deleting such a tag stays allowed, so that one added before kmsd checked the
// prefix can still be removed.
const systemTagPrefix = "_sys_"

// validateTags checks a list of tags to add: 1 to MaxTagsPerKey tags with valid, unique
// keys that neither start or end with white space nor start with systemTagPrefix, and
// valid values.
func validateTags(tags []store.Tag) error {
	if len(tags) == 0 {
		return Errorf(CodeTagListEmpty, "the tag list is empty")
	}
	if len(tags) > MaxTagsPerKey {
		return Errorf(CodeInvalidTagListSize, "the tag list has %d tags, at most %d are allowed",
			len(tags), MaxTagsPerKey)
	}

	seen := make(map[string]bool, len(tags))
	for _, tag := range tags {
		if err := ValidateTagKey(tag.Key); err != nil {
			return err
		}
		if strings.TrimSpace(tag.Key) != tag.Key {
			return Errorf(CodeInvalidTagKey,
				"a tag key must not start or end with white space, as in Huawei Cloud")
		}
		if strings.HasPrefix(tag.Key, systemTagPrefix) {
			return Errorf(CodeInvalidTagKey, "tag keys starting with %s are reserved for "+
				"system tags", systemTagPrefix)
		}
		if err := ValidateTagValue(tag.Value); err != nil {
			return err
		}
		if seen[tag.Key] {
			return Errorf(CodeInvalidTagList, "the tag list has the tag key %q twice", tag.Key)
		}
		seen[tag.Key] = true
	}
	return nil
}

// taggedKey looks up the key keyID (a key id, never an alias, because it is a path segment)
// and authorizes op on it.
func (s *Service) taggedKey(ctx context.Context, p auth.Principal, op, keyID string) (store.Key, error) {
	if keyID != "" && !isKeyID(keyID) {
		return store.Key{}, Errorf(CodeInvalidKeyID, "key_id is not a valid key id")
	}
	k, err := s.lookupKey(ctx, p.ProjectID, keyID)
	if err != nil {
		return store.Key{}, err
	}
	if err := s.authorize(ctx, p, op, &k); err != nil {
		return store.Key{}, err
	}
	return k, nil
}

// CreateTag adds a tag to the key, or replaces the value of its tag with the same key.
func (s *Service) CreateTag(ctx context.Context, p auth.Principal, keyID string, tag store.Tag) error {
	if err := validateTags([]store.Tag{tag}); err != nil {
		return err
	}
	k, err := s.taggedKey(ctx, p, auth.OpCreateTag, keyID)
	if err != nil {
		return err
	}
	return s.putTags(ctx, k, []store.Tag{tag})
}

// putTags stores tags on k, within MaxTagsPerKey.
func (s *Service) putTags(ctx context.Context, k store.Key, tags []store.Tag) error {
	err := s.store.PutTags(ctx, k.ProjectID, k.ID, tags, MaxTagsPerKey)
	switch {
	case errors.Is(err, store.ErrTagLimit):
		return Errorf(CodeTooManyTags, "a key may have at most %d tags", MaxTagsPerKey)
	case errors.Is(err, store.ErrNotFound):
		s.dropCached(k.ProjectID, k.ID)
		return errKeyNotFound()
	case err != nil:
		return storeError("put tags", err)
	}

	s.log.Info("tags created", "key_id", k.ID, "project_id", k.ProjectID, "count", len(tags))
	return nil
}

// DeleteTag deletes the tag with tagKey from the key. Deleting a tag the key lacks
// succeeds.
func (s *Service) DeleteTag(ctx context.Context, p auth.Principal, keyID, tagKey string) error {
	if err := ValidateTagKey(tagKey); err != nil {
		return err
	}
	k, err := s.taggedKey(ctx, p, auth.OpDeleteTag, keyID)
	if err != nil {
		return err
	}
	return s.deleteTags(ctx, k, []string{tagKey})
}

func (s *Service) deleteTags(ctx context.Context, k store.Key, tagKeys []string) error {
	deleted, err := s.store.DeleteTags(ctx, k.ProjectID, k.ID, tagKeys)
	if errors.Is(err, store.ErrNotFound) {
		s.dropCached(k.ProjectID, k.ID)
		return errKeyNotFound()
	}
	if err != nil {
		return storeError("delete tags", err)
	}

	s.log.Info("tags deleted", "key_id", k.ID, "project_id", k.ProjectID, "count", deleted,
		"requested", len(tagKeys))
	return nil
}

// BatchTags creates (action "create") or deletes (action "delete") tags of the key, all
// or none. A delete checks only the tag keys, and ignores tag keys the key lacks.
func (s *Service) BatchTags(
	ctx context.Context,
	p auth.Principal,
	keyID, action string,
	tags []store.Tag,
) error {
	switch action {
	case TagActionCreate:
		if err := validateTags(tags); err != nil {
			return err
		}
	case TagActionDelete:
		if err := validateTagKeys(tags); err != nil {
			return err
		}
	case "":
		return Errorf(CodeMissingParameter, "action is missing")
	default:
		return Errorf(CodeInvalidTagAction, "action must be create or delete")
	}

	k, err := s.taggedKey(ctx, p, auth.OpBatchTags, keyID)
	if err != nil {
		return err
	}
	if action == TagActionCreate {
		return s.putTags(ctx, k, tags)
	}

	keys := make([]string, len(tags))
	for i, tag := range tags {
		keys[i] = tag.Key
	}
	return s.deleteTags(ctx, k, keys)
}

// validateTagKeys checks the tag keys of a batch delete.
func validateTagKeys(tags []store.Tag) error {
	if len(tags) == 0 {
		return Errorf(CodeTagListEmpty, "the tag list is empty")
	}
	if len(tags) > MaxTagsPerKey {
		return Errorf(CodeInvalidTagListSize, "the tag list has %d tags, at most %d are allowed",
			len(tags), MaxTagsPerKey)
	}
	for _, tag := range tags {
		if err := ValidateTagKey(tag.Key); err != nil {
			return err
		}
	}
	return nil
}

// ListKeyTags returns the tags of the key, ordered by tag key.
func (s *Service) ListKeyTags(ctx context.Context, p auth.Principal, keyID string) ([]store.Tag, error) {
	k, err := s.taggedKey(ctx, p, auth.OpListKeyTags, keyID)
	if err != nil {
		return nil, err
	}

	tags, err := s.store.ListKeyTags(ctx, p.ProjectID, k.ID)
	if errors.Is(err, store.ErrNotFound) {
		s.dropCached(p.ProjectID, k.ID)
		return nil, errKeyNotFound()
	}
	if err != nil {
		return nil, storeError("list key tags", err)
	}
	return tags, nil
}

// ListProjectTags returns every tag key of the project's keys with its values.
func (s *Service) ListProjectTags(ctx context.Context, p auth.Principal) ([]store.TagValues, error) {
	if err := s.authorize(ctx, p, auth.OpListProjectTags, nil); err != nil {
		return nil, err
	}

	tags, err := s.store.ListProjectTags(ctx, p.ProjectID)
	if err != nil {
		return nil, storeError("list project tags", err)
	}
	return tags, nil
}

// TagMatch is one entry of the matches of a resource_instances request.
type TagMatch struct {
	Key   string
	Value string
}

// ResourceInstancesInput is a resource_instances request.
type ResourceInstancesInput struct {
	Action  string // TagQueryFilter or TagQueryCount
	Limit   int    // 1 to MaxTagQueryLimit, or 0 for DefaultTagQueryLimit. Count ignores it.
	Offset  int
	Tags    []store.TagValues
	Matches []TagMatch
}

// ResourceInstancesResult is a page of keys (empty for count) and the number that match.
type ResourceInstancesResult struct {
	Keys  []store.TaggedKey
	Total int
}

// FindKeysByTags returns the project's keys whose tags match every entry of in.Tags (a
// tag key with one of its values, or with any value when none is given) and whose
// key_alias contains the resource_name match, ignoring ASCII case.
func (s *Service) FindKeysByTags(
	ctx context.Context,
	p auth.Principal,
	in ResourceInstancesInput,
) (ResourceInstancesResult, error) {
	if err := s.authorize(ctx, p, auth.OpListResourceInstances, nil); err != nil {
		return ResourceInstancesResult{}, err
	}

	f, err := tagFilter(in)
	if err != nil {
		return ResourceInstancesResult{}, err
	}

	found, total, err := s.store.FindKeysByTags(ctx, p.ProjectID, f)
	if err != nil {
		return ResourceInstancesResult{}, storeError("find keys by tags", err)
	}
	return ResourceInstancesResult{Keys: found, Total: total}, nil
}

// tagFilter validates a resource_instances request and returns its store filter.
func tagFilter(in ResourceInstancesInput) (store.TagFilter, error) {
	var f store.TagFilter
	switch in.Action {
	case TagQueryFilter:
		if in.Limit == 0 {
			in.Limit = DefaultTagQueryLimit
		}
		if in.Limit < 1 || in.Limit > MaxTagQueryLimit {
			return f, Errorf(CodeInvalidTagLimit, "limit must be 1 to %d", MaxTagQueryLimit)
		}
		f.Limit = in.Limit
	case TagQueryCount:
		// count returns only the total, so limit is not used.
	case "":
		return f, Errorf(CodeMissingParameter, "action is missing")
	default:
		return f, Errorf(CodeInvalidTagAction, "action must be filter or count")
	}

	if in.Offset < 0 {
		return f, Errorf(CodeInvalidTagOffset, "offset must be 0 or more")
	}
	f.Offset = in.Offset

	tags, err := validateFilterTags(in.Tags)
	if err != nil {
		return f, err
	}
	f.Tags = tags

	f.AliasContains, err = resourceNameMatch(in.Matches)
	return f, err
}

// validateFilterTags checks the tags of a resource_instances request and drops repeated
// values.
func validateFilterTags(tags []store.TagValues) ([]store.TagValues, error) {
	if len(tags) > MaxFilterTags {
		return nil, Errorf(CodeInvalidTagListSize, "tags has %d entries, at most %d are allowed",
			len(tags), MaxFilterTags)
	}

	seen := make(map[string]bool, len(tags))
	out := make([]store.TagValues, 0, len(tags))
	for _, tag := range tags {
		if err := ValidateTagKey(tag.Key); err != nil {
			return nil, err
		}
		if seen[tag.Key] {
			return nil, Errorf(CodeInvalidTagList, "tags has the tag key %q twice", tag.Key)
		}
		seen[tag.Key] = true

		if len(tag.Values) > MaxFilterTagValues {
			return nil, Errorf(CodeTooManyTagValues,
				"the tag key %q has %d values, at most %d are allowed", tag.Key,
				len(tag.Values), MaxFilterTagValues)
		}
		values := make([]string, 0, len(tag.Values))
		for _, v := range tag.Values {
			if err := ValidateTagValue(v); err != nil {
				return nil, err
			}
			if !slices.Contains(values, v) {
				values = append(values, v)
			}
		}
		out = append(out, store.TagValues{Key: tag.Key, Values: values})
	}
	return out, nil
}

// resourceNameMatch returns the value of the one "resource_name" match, or "" when there
// is none.
func resourceNameMatch(matches []TagMatch) (string, error) {
	if len(matches) > 1 {
		return "", Errorf(CodeInvalidMatches, "matches may have one entry, resource_name")
	}
	if len(matches) == 0 {
		return "", nil
	}

	m := matches[0]
	if m.Key != matchResourceName {
		return "", Errorf(CodeInvalidMatchKey, "the match key must be resource_name")
	}
	if utf8.RuneCountInString(m.Value) > MaxMatchValueLength || !utf8.ValidString(m.Value) ||
		strings.ContainsRune(m.Value, 0) {
		return "", Errorf(CodeInvalidMatchValue, "the match value must be 0 to %d characters, "+
			"without the NUL character", MaxMatchValueLength)
	}
	return m.Value, nil
}
