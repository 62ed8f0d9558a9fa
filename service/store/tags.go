package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrTagLimit means a change would give a key more tags than the caller's limit.
var ErrTagLimit = errors.New("too many tags on the key")

// TagStore keeps the tags of keys. A tag key is unique per key.
type TagStore interface {
	// PutTags adds tags to the key, replacing the value of a tag key it already has, all
	// or none. It returns ErrNotFound when keyID is not a key of projectID and
	// ErrTagLimit, changing nothing, when the key would then have more than maxTags.
	PutTags(ctx context.Context, projectID, keyID string, tags []Tag, maxTags int) error

	// DeleteTags deletes the tags with the given tag keys from the key and returns how
	// many it deleted. Tag keys that the key lacks are ignored. ErrNotFound when keyID is
	// not a key of projectID.
	DeleteTags(ctx context.Context, projectID, keyID string, tagKeys []string) (int, error)

	// ListKeyTags returns the tags of the key ordered by tag key, or ErrNotFound when
	// keyID is not a key of projectID.
	ListKeyTags(ctx context.Context, projectID, keyID string) ([]Tag, error)

	// ListProjectTags returns every tag key used in the project with its distinct
	// values, both sorted.
	ListProjectTags(ctx context.Context, projectID string) ([]TagValues, error)

	// FindKeysByTags returns one page of the project's keys that match f, with their
	// tags, and the number of keys that match.
	FindKeysByTags(ctx context.Context, projectID string, f TagFilter) ([]TaggedKey, int, error)
}

// Tag is one tag of a key.
type Tag struct {
	Key   string
	Value string
}

// TagValues is a tag key with a set of values.
type TagValues struct {
	Key    string
	Values []string
}

// TaggedKey is a key with its tags, ordered by tag key.
type TaggedKey struct {
	Key  Key
	Tags []Tag
}

// TagFilter selects and pages FindKeysByTags results. Keys are ordered by creation time,
// then id.
type TagFilter struct {
	// Tags must all match: the key has the tag key, with one of Values when Values is
	// not empty. An empty Tags matches every key.
	Tags []TagValues
	// AliasContains, when not empty, keeps keys whose key_alias contains it, ignoring
	// ASCII case.
	AliasContains string
	Offset        int
	// Limit bounds the page. A Limit of 0 returns only the count.
	Limit int
}

// lockKeyRow takes the row lock of the key, so that concurrent tag changes of one key
// run one after the other, and returns ErrNotFound unless keyID is a key of projectID.
// The statement changes no column. On SQLite the writer already excludes every other
// writer, so only PostgreSQL needs the lock.
func (s *SQLStore) lockKeyRow(ctx context.Context, tx *sql.Tx, projectID, keyID string) error {
	res, err := tx.ExecContext(ctx, s.d.rebind(
		"UPDATE keys SET updated_at = updated_at WHERE id = ? AND project_id = ?"), keyID, projectID)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("key %s in project %s: %w", keyID, projectID, ErrNotFound)
	}
	return nil
}

// PutTags upserts tags in one transaction and then checks the key's tag count against
// maxTags. A tag key that appears twice in tags keeps its last value.
func (s *SQLStore) PutTags(
	ctx context.Context,
	projectID, keyID string,
	tags []Tag,
	maxTags int,
) error {
	op := fmt.Sprintf("put %d tags on key %s", len(tags), keyID)
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if err := s.lockKeyRow(ctx, tx, projectID, keyID); err != nil {
			return err
		}

		upsert := s.d.rebind("INSERT INTO key_tags " +
			"(key_id, tag_key, tag_value, project_id, created_at) VALUES (?, ?, ?, ?, ?) " +
			"ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value")
		now := s.d.timeValue(currentTime())
		for _, tag := range tags {
			_, err := tx.ExecContext(ctx, upsert, keyID, tag.Key, tag.Value, projectID, now)
			if err != nil {
				return err
			}
		}

		var count int
		err := tx.QueryRowContext(ctx, s.d.rebind(
			"SELECT COUNT(*) FROM key_tags WHERE key_id = ?"), keyID).Scan(&count)
		if err != nil {
			return err
		}
		if count > maxTags {
			return fmt.Errorf("the key would have %d tags, the limit is %d: %w", count,
				maxTags, ErrTagLimit)
		}
		return nil
	})
}

// DeleteTags deletes the tags with the given tag keys from the key in one transaction.
func (s *SQLStore) DeleteTags(
	ctx context.Context,
	projectID, keyID string,
	tagKeys []string,
) (int, error) {
	op := fmt.Sprintf("delete %d tags of key %s", len(tagKeys), keyID)
	deleted := 0
	err := s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		deleted = 0
		if err := s.lockKeyRow(ctx, tx, projectID, keyID); err != nil {
			return err
		}

		remove := s.d.rebind("DELETE FROM key_tags WHERE key_id = ? AND tag_key = ?")
		for _, tagKey := range tagKeys {
			res, err := tx.ExecContext(ctx, remove, keyID, tagKey)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			deleted += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// ListKeyTags returns the tags of the key ordered by tag key. The key check and the tags
// come from one snapshot.
func (s *SQLStore) ListKeyTags(ctx context.Context, projectID, keyID string) ([]Tag, error) {
	var tags []Tag
	err := s.inReadTx(ctx, "list tags of key "+keyID, func(tx *sql.Tx) error {
		if err := s.checkKeyInProject(ctx, tx, projectID, keyID); err != nil {
			return err
		}

		byKey, err := s.queryTags(ctx, tx, []string{keyID})
		tags = byKey[keyID]
		return err
	})
	if err != nil {
		return nil, err
	}
	return tags, nil
}

// queryTags returns the tags of the keys, by key id, each list ordered by tag key.
func (s *SQLStore) queryTags(ctx context.Context, q querier, keyIDs []string) (map[string][]Tag, error) {
	byKey := make(map[string][]Tag, len(keyIDs))
	if len(keyIDs) == 0 {
		return byKey, nil
	}

	args := make([]any, len(keyIDs))
	for i, id := range keyIDs {
		args[i] = id
	}
	rows, err := q.QueryContext(ctx, s.d.rebind("SELECT key_id, tag_key, tag_value FROM key_tags "+
		"WHERE key_id IN ("+placeholders(len(keyIDs))+") ORDER BY key_id, tag_key"), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()

	for rows.Next() {
		var keyID string
		var tag Tag
		if err := rows.Scan(&keyID, &tag.Key, &tag.Value); err != nil {
			return nil, err
		}
		byKey[keyID] = append(byKey[keyID], tag)
	}
	return byKey, rows.Err()
}

// placeholders returns n comma-separated "?".
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// ListProjectTags returns every tag key of the project's keys with its distinct values.
func (s *SQLStore) ListProjectTags(ctx context.Context, projectID string) ([]TagValues, error) {
	op := "list tags of project " + projectID
	rows, err := s.read.QueryContext(ctx, s.d.rebind("SELECT DISTINCT tag_key, tag_value "+
		"FROM key_tags WHERE project_id = ? ORDER BY tag_key, tag_value"), projectID)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()

	var tags []TagValues
	for rows.Next() {
		var key, value string
		if err := rows.Scan(&key, &value); err != nil {
			return nil, s.wrap(op, err)
		}
		if n := len(tags); n > 0 && tags[n-1].Key == key {
			tags[n-1].Values = append(tags[n-1].Values, value)
			continue
		}
		tags = append(tags, TagValues{Key: key, Values: []string{value}})
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return tags, nil
}

// FindKeysByTags returns one page of the project's keys that match f, with their tags,
// and the number of matching keys. The page, the count and the tags come from one
// snapshot. f.Limit and f.Offset must not be negative.
func (s *SQLStore) FindKeysByTags(
	ctx context.Context,
	projectID string,
	f TagFilter,
) ([]TaggedKey, int, error) {
	if f.Limit < 0 || f.Offset < 0 {
		return nil, 0, fmt.Errorf("find keys by tags: invalid page (offset %d, limit %d): "+
			"neither may be negative", f.Offset, f.Limit)
	}
	where, args := tagFilterCondition(projectID, f)

	var found []TaggedKey
	var total int
	err := s.inReadTx(ctx, "find keys by tags in project "+projectID, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM keys"+where),
			args...).Scan(&total)
		if err != nil || f.Limit == 0 {
			return err
		}

		keys, err := s.queryKeys(ctx, tx, "SELECT "+keyColumns+" FROM keys"+where+
			" ORDER BY created_at, id LIMIT ? OFFSET ?", append(args, f.Limit, f.Offset)...)
		if err != nil {
			return err
		}

		byKey, err := s.queryTags(ctx, tx, keyIDsOf(keys))
		if err != nil {
			return err
		}
		for _, k := range keys {
			found = append(found, TaggedKey{Key: k, Tags: byKey[k.ID]})
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return found, total, nil
}

// tagFilterCondition returns the WHERE clause over the keys table that f selects, with
// its arguments.
func tagFilterCondition(projectID string, f TagFilter) (string, []any) {
	where := " WHERE project_id = ?"
	args := []any{projectID}

	if f.AliasContains != "" {
		// The pattern escapes LIKE's wildcards so that they match themselves.
		where += ` AND LOWER(alias) LIKE ? ESCAPE '\'`
		escaped := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(f.AliasContains)
		args = append(args, "%"+strings.ToLower(escaped)+"%")
	}

	for _, tag := range f.Tags {
		where += " AND EXISTS (SELECT 1 FROM key_tags t WHERE t.key_id = keys.id AND t.tag_key = ?"
		args = append(args, tag.Key)
		if len(tag.Values) > 0 {
			where += " AND t.tag_value IN (" + placeholders(len(tag.Values)) + ")"
			for _, v := range tag.Values {
				args = append(args, v)
			}
		}
		where += ")"
	}
	return where, args
}

func keyIDsOf(keys []Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}
