package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const keyColumns = "id, project_id, domain_id, alias, description, key_spec, key_usage, " +
	"origin, state, created_at, deletion_at, rotation_enabled, rotation_interval, " +
	"last_rotation_at, rotation_count, current_version, revision, updated_at"

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

func scanKey(row rowScanner) (Key, error) {
	var k Key
	err := row.Scan(&k.ID, &k.ProjectID, &k.DomainID, &k.Alias, &k.Description, &k.Spec,
		&k.Usage, &k.Origin, &k.State, timeColumn{&k.CreatedAt}, timeColumn{&k.DeletionAt},
		&k.RotationEnabled, &k.RotationInterval, timeColumn{&k.LastRotationAt},
		&k.RotationCount, &k.CurrentVersion, &k.Revision, timeColumn{&k.UpdatedAt})
	return k, err
}

// BeginKeyVersion inserts the (keyID, version) row in state VersionCreating. The key row
// need not exist yet. It returns ErrConflict when the row exists. The database gives the
// row a seq higher than that of every other row (migration 0008), which orders
// ActiveVersions.
func (s *SQLStore) BeginKeyVersion(ctx context.Context, keyID string, version uint32) error {
	_, err := s.write.ExecContext(ctx, s.d.rebind(
		"INSERT INTO key_versions (key_id, version, state, created_at) VALUES (?, ?, ?, ?)"),
		keyID, version, VersionCreating, s.d.timeValue(currentTime()))
	if err != nil {
		return s.wrap(fmt.Sprintf("begin version %d of key %s", version, keyID), err)
	}
	return nil
}

// AbortKeyVersion deletes a VersionCreating row. It returns ErrNotFound when the row does
// not exist and ErrConflict when it is in another state.
func (s *SQLStore) AbortKeyVersion(ctx context.Context, keyID string, version uint32) error {
	op := fmt.Sprintf("abort version %d of key %s", version, keyID)
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.rebind(
			"DELETE FROM key_versions WHERE key_id = ? AND version = ? AND state = ?"),
			keyID, version, VersionCreating)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}

		state, err := s.versionState(ctx, tx, keyID, version)
		if err != nil {
			return err
		}
		return fmt.Errorf("version is %s, not %s: %w", state, VersionCreating, ErrConflict)
	})
}

// CreateKey inserts the key row and, when k.CurrentVersion is not 0, marks that version
// active in the same transaction. A key without material yet (origin "external", state
// KeyStatePendingImport) has CurrentVersion 0. It returns ErrAliasExists when the alias
// is taken in the project, ErrConflict when the key id exists, and ErrNotFound when the
// version was not begun with BeginKeyVersion. A zero CreatedAt is set to now, a zero
// UpdatedAt to CreatedAt; Revision is stored as given.
//
// When maxKeys is above 0, CreateKey counts the project's keys in the same transaction
// and returns ErrLimitExceeded when the project already has maxKeys keys, so concurrent
// creations, on this replica or another, cannot pass the quota together. On PostgreSQL
// the transaction holds an advisory lock on the project id until it ends. On SQLite
// every write transaction begins with BEGIN IMMEDIATE and so already excludes the others.
func (s *SQLStore) CreateKey(ctx context.Context, k Key, maxKeys int) error {
	if k.ID == "" || k.ProjectID == "" {
		return errors.New("create key: key id and project id are required")
	}

	k.CreatedAt = storedTime(k.CreatedAt)
	if k.CreatedAt.IsZero() {
		k.CreatedAt = currentTime()
	}
	k.UpdatedAt = storedTime(k.UpdatedAt)
	if k.UpdatedAt.IsZero() {
		k.UpdatedAt = k.CreatedAt
	}

	return s.inWriteTx(ctx, "create key "+k.ID, func(tx *sql.Tx) error {
		if maxKeys > 0 {
			if err := s.checkKeyQuota(ctx, tx, k.ProjectID, maxKeys); err != nil {
				return err
			}
		}

		_, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO keys ("+keyColumns+") "+
			"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
			k.ID, k.ProjectID, k.DomainID, k.Alias, k.Description, k.Spec, k.Usage,
			k.Origin, k.State, s.d.timeValue(k.CreatedAt), s.d.timeValue(k.DeletionAt),
			k.RotationEnabled, k.RotationInterval, s.d.timeValue(k.LastRotationAt),
			k.RotationCount, k.CurrentVersion, k.Revision, s.d.timeValue(k.UpdatedAt))
		if err != nil {
			return s.aliasError(k, err)
		}

		if k.CurrentVersion == 0 {
			return nil
		}
		return s.activateVersion(ctx, tx, k.ID, k.CurrentVersion)
	})
}

// keyQuotaLockClass is the first key of the per-project advisory lock that CreateKey
// takes on PostgreSQL: the bytes of "kq" read as a big-endian integer. The arbitrary
// constant keeps the lock apart from the migration lock and other advisory lock users.
const keyQuotaLockClass = "27505"

// checkKeyQuota returns ErrLimitExceeded when projectID already has maxKeys keys. On
// PostgreSQL it first takes the project's advisory lock for the rest of tx. Two projects
// whose ids have the same hashtext value share a lock, which only serialises them.
func (s *SQLStore) checkKeyQuota(ctx context.Context, tx *sql.Tx, projectID string, maxKeys int) error {
	if s.d.name == postgresDialect.name {
		_, err := tx.ExecContext(ctx,
			"SELECT pg_advisory_xact_lock("+keyQuotaLockClass+", hashtext($1))", projectID)
		if err != nil {
			return err
		}
	}

	var n int
	err := tx.QueryRowContext(ctx, s.d.rebind(
		"SELECT COUNT(*) FROM keys WHERE project_id = ?"), projectID).Scan(&n)
	if err != nil {
		return err
	}
	if n >= maxKeys {
		return fmt.Errorf("project %s has %d keys, the limit is %d: %w", projectID, n, maxKeys,
			ErrLimitExceeded)
	}
	return nil
}

// ActivateKeyVersion marks version active and stores k as UpdateKey does, with
// CurrentVersion set to version, in one transaction. Older versions stay active, so data
// sealed under them can still be opened. It returns ErrConflict when k.Revision is stale
// or the version is destroyed, and ErrNotFound when the key or the version row is missing.
func (s *SQLStore) ActivateKeyVersion(ctx context.Context, k Key, version uint32) error {
	op := fmt.Sprintf("activate version %d of key %s", version, k.ID)
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if _, err := s.updateKeyRow(ctx, tx, k, &version); err != nil {
			return err
		}
		return s.activateVersion(ctx, tx, k.ID, version)
	})
}

// activateVersion moves a creating or active version row to active.
func (s *SQLStore) activateVersion(
	ctx context.Context,
	q querier,
	keyID string,
	version uint32,
) error {
	res, err := q.ExecContext(ctx, s.d.rebind(
		"UPDATE key_versions SET state = ? WHERE key_id = ? AND version = ? AND state <> ?"),
		VersionActive, keyID, version, VersionDestroyed)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}

	if _, err := s.versionState(ctx, q, keyID, version); err != nil {
		return err
	}
	return fmt.Errorf("version %d is %s: %w", version, VersionDestroyed, ErrConflict)
}

// versionState returns the state of a version row, or ErrNotFound.
func (s *SQLStore) versionState(
	ctx context.Context,
	q querier,
	keyID string,
	version uint32,
) (string, error) {
	var state string
	err := q.QueryRowContext(ctx, s.d.rebind(
		"SELECT state FROM key_versions WHERE key_id = ? AND version = ?"),
		keyID, version).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("version %d: %w", version, ErrNotFound)
	}
	return state, err
}

// GetKey returns the key with id keyID in project projectID, or ErrNotFound.
func (s *SQLStore) GetKey(ctx context.Context, projectID, keyID string) (Key, error) {
	row := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT "+keyColumns+" FROM keys WHERE project_id = ? AND id = ?"), projectID, keyID)
	k, err := scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("get key %s: %w", keyID, ErrNotFound)
	}
	if err != nil {
		return Key{}, s.wrap("get key "+keyID, err)
	}
	return k, nil
}

// GetKeyByAlias returns the key with the key_alias alias in project projectID, or
// ErrNotFound. An empty alias matches no key.
func (s *SQLStore) GetKeyByAlias(ctx context.Context, projectID, alias string) (Key, error) {
	op := fmt.Sprintf("get key by alias %q", alias)
	if alias == "" {
		return Key{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}

	row := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT "+keyColumns+" FROM keys WHERE project_id = ? AND alias = ?"), projectID, alias)
	k, err := scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Key{}, s.wrap(op, err)
	}
	return k, nil
}

// ListKeys returns one page of the project's keys, ordered by creation time then id, and
// the number of keys that match the filter. The page and the count come from one
// snapshot. f.Limit must be at least 1 and f.Offset not negative.
func (s *SQLStore) ListKeys(
	ctx context.Context,
	projectID string,
	f ListKeysFilter,
) ([]Key, int, error) {
	if f.Limit < 1 || f.Offset < 0 {
		return nil, 0, fmt.Errorf("list keys: invalid page (offset %d, limit %d): "+
			"limit must be at least 1 and offset not negative", f.Offset, f.Limit)
	}

	where := " WHERE project_id = ?"
	args := []any{projectID}
	if f.State != "" {
		where += " AND state = ?"
		args = append(args, f.State)
	}
	if f.Spec != "" {
		where += " AND key_spec = ?"
		args = append(args, f.Spec)
	}

	var keys []Key
	var total int
	err := s.inReadTx(ctx, "list keys of project "+projectID, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM keys"+where),
			args...).Scan(&total)
		if err != nil {
			return err
		}

		page := append(args, f.Limit, f.Offset)
		keys, err = s.queryKeys(ctx, tx, "SELECT "+keyColumns+" FROM keys"+where+
			" ORDER BY created_at, id LIMIT ? OFFSET ?", page...)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return keys, total, nil
}

// queryKeys runs a query that selects keyColumns and returns its rows.
func (s *SQLStore) queryKeys(
	ctx context.Context,
	q querier,
	query string,
	args ...any,
) ([]Key, error) {
	rows, err := q.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()

	var keys []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// CountKeys returns how many keys the project has, in every state.
func (s *SQLStore) CountKeys(ctx context.Context, projectID string) (int, error) {
	var n int
	err := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT COUNT(*) FROM keys WHERE project_id = ?"), projectID).Scan(&n)
	if err != nil {
		return 0, s.wrap("count keys of project "+projectID, err)
	}
	return n, nil
}

// UpdateKey stores the mutable fields of k if the stored revision equals k.Revision, and
// returns the stored key with its new revision and UpdatedAt. The mutable fields are
// Alias, Description, State, DeletionAt, the rotation fields and RotationCount. Only
// ActivateKeyVersion changes CurrentVersion. ErrNotFound when the key does not exist in
// k.ProjectID, ErrConflict on a stale revision, ErrAliasExists on a taken alias.
func (s *SQLStore) UpdateKey(ctx context.Context, k Key) (Key, error) {
	var updated Key
	err := s.inWriteTx(ctx, "update key "+k.ID, func(tx *sql.Tx) error {
		var err error
		updated, err = s.updateKeyRow(ctx, tx, k, nil)
		return err
	})
	if err != nil {
		return Key{}, err
	}
	return updated, nil
}

// updateKeyRow stores the mutable fields of k, and the current version when it is not
// nil, with an optimistic check of k.Revision.
func (s *SQLStore) updateKeyRow(
	ctx context.Context,
	tx *sql.Tx,
	k Key,
	currentVersion *uint32,
) (Key, error) {
	set := "alias = ?, description = ?, state = ?, deletion_at = ?, rotation_enabled = ?, " +
		"rotation_interval = ?, last_rotation_at = ?, rotation_count = ?, " +
		"revision = revision + 1, updated_at = ?"
	args := []any{k.Alias, k.Description, k.State, s.d.timeValue(k.DeletionAt),
		k.RotationEnabled, k.RotationInterval, s.d.timeValue(k.LastRotationAt),
		k.RotationCount, s.d.timeValue(currentTime())}
	if currentVersion != nil {
		set += ", current_version = ?"
		args = append(args, *currentVersion)
	}
	args = append(args, k.ID, k.ProjectID, k.Revision)

	row := tx.QueryRowContext(ctx, s.d.rebind("UPDATE keys SET "+set+
		" WHERE id = ? AND project_id = ? AND revision = ? RETURNING "+keyColumns), args...)
	updated, err := scanKey(row)
	if err == nil {
		return updated, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Key{}, s.aliasError(k, err)
	}

	var stored int64
	err = tx.QueryRowContext(ctx, s.d.rebind(
		"SELECT revision FROM keys WHERE id = ? AND project_id = ?"),
		k.ID, k.ProjectID).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("key %s in project %s: %w", k.ID, k.ProjectID, ErrNotFound)
	}
	if err != nil {
		return Key{}, err
	}
	return Key{}, fmt.Errorf("stored revision is %d, the update is based on %d: %w",
		stored, k.Revision, ErrConflict)
}

// aliasError turns a violation of the alias index into ErrAliasExists and returns other
// errors unchanged.
func (s *SQLStore) aliasError(k Key, err error) error {
	if s.d.isAliasViolation(err) {
		return fmt.Errorf("alias %q in project %s: %w", k.Alias, k.ProjectID, ErrAliasExists)
	}
	return err
}

// ListKeyVersions returns every version row of the key, oldest first. A key without
// versions, or without a row, has an empty list.
func (s *SQLStore) ListKeyVersions(ctx context.Context, keyID string) ([]KeyVersion, error) {
	versions, err := s.queryVersions(ctx,
		"SELECT key_id, version, state, created_at FROM key_versions WHERE key_id = ? "+
			"ORDER BY version", keyID)
	if err != nil {
		return nil, s.wrap("list versions of key "+keyID, err)
	}
	return versions, nil
}

// ActiveVersions implements KeyStore.
func (s *SQLStore) ActiveVersions(
	ctx context.Context, limit int, deletedAfter time.Time,
) ([]KeyVersion, error) {
	query := "SELECT v.key_id, v.version, v.created_at, k.project_id FROM key_versions v " +
		"JOIN keys k ON k.id = v.key_id WHERE v.state = ? " +
		"AND (k.state <> ? OR k.deletion_at > ?) ORDER BY v.seq DESC"
	args := []any{VersionActive, KeyStatePendingDeletion, s.d.timeValue(deletedAfter)}
	if limit > 0 {
		query += " LIMIT ?"
		args = append(args, limit)
	}

	rows, err := s.read.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, s.wrap("list active key versions", err)
	}
	defer rows.Close()

	var versions []KeyVersion
	for rows.Next() {
		v := KeyVersion{State: VersionActive}
		if err := rows.Scan(&v.KeyID, &v.Version, timeColumn{&v.CreatedAt}, &v.ProjectID); err != nil {
			return nil, s.wrap("list active key versions", err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("list active key versions", err)
	}
	return versions, nil
}

func (s *SQLStore) queryVersions(
	ctx context.Context,
	query string,
	args ...any,
) ([]KeyVersion, error) {
	rows, err := s.read.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()

	var versions []KeyVersion
	for rows.Next() {
		var v KeyVersion
		if err := rows.Scan(&v.KeyID, &v.Version, &v.State, timeColumn{&v.CreatedAt}); err != nil {
			return nil, err
		}
		versions = append(versions, v)
	}
	return versions, rows.Err()
}

// MarkVersionDestroyed sets a version row, in any state, to VersionDestroyed. It returns
// ErrNotFound when the row does not exist.
func (s *SQLStore) MarkVersionDestroyed(ctx context.Context, keyID string, version uint32) error {
	op := fmt.Sprintf("mark version %d of key %s destroyed", version, keyID)
	res, err := s.write.ExecContext(ctx, s.d.rebind(
		"UPDATE key_versions SET state = ? WHERE key_id = ? AND version = ?"),
		VersionDestroyed, keyID, version)
	return s.checkOneRow(op, res, err)
}

// DeleteKey deletes the key row, its aliases, its tags, its grants and its version rows in one
// transaction. It returns ErrNotFound when the key row does not exist and ErrConflict,
// deleting nothing, while any version is not VersionDestroyed.
//
// On PostgreSQL a BeginKeyVersion that commits while DeleteKey runs can leave its
// creating row behind the deleted key. ListStaleVersions reports such a row later, so
// no token object goes unrecorded.
func (s *SQLStore) DeleteKey(ctx context.Context, keyID string) error {
	return s.inWriteTx(ctx, "delete key "+keyID, func(tx *sql.Tx) error {
		if err := s.deleteKeyAliasesAndTags(ctx, tx, keyID); err != nil {
			return err
		}
		if err := s.deleteKeyGrants(ctx, tx, keyID); err != nil {
			return err
		}

		res, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM keys WHERE id = ?"), keyID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}

		// Delete the destroyed versions, then count what is left, so that a version row
		// inserted meanwhile is never deleted with them.
		_, err = tx.ExecContext(ctx, s.d.rebind(
			"DELETE FROM key_versions WHERE key_id = ? AND state = ?"), keyID, VersionDestroyed)
		if err != nil {
			return err
		}

		var remaining int
		err = tx.QueryRowContext(ctx, s.d.rebind(
			"SELECT COUNT(*) FROM key_versions WHERE key_id = ?"), keyID).Scan(&remaining)
		if err != nil {
			return err
		}
		if remaining > 0 {
			return fmt.Errorf("key versions not yet destroyed: %d: %w", remaining, ErrConflict)
		}
		return nil
	})
}

// ListKeysDueForDeletion returns keys in KeyStatePendingDeletion whose DeletionAt is at or
// before now, in every project, ordered by DeletionAt then id.
func (s *SQLStore) ListKeysDueForDeletion(ctx context.Context, now time.Time) ([]Key, error) {
	keys, err := s.queryKeys(ctx, s.read, "SELECT "+keyColumns+" FROM keys "+
		"WHERE state = ? AND deletion_at IS NOT NULL AND deletion_at <= ? "+
		"ORDER BY deletion_at, id", KeyStatePendingDeletion, s.d.timeValue(now))
	if err != nil {
		return nil, s.wrap("list keys due for deletion", err)
	}
	return keys, nil
}

// ListKeysDueForRotation returns keys in KeyStateEnabled with rotation on whose last
// rotation (or creation) plus RotationInterval days is at or before now, in every
// project, ordered by creation time then id. A day is 24 hours.
func (s *SQLStore) ListKeysDueForRotation(ctx context.Context, now time.Time) ([]Key, error) {
	keys, err := s.queryKeys(ctx, s.read, "SELECT "+keyColumns+" FROM keys "+
		"WHERE state = ? AND rotation_enabled = ? AND rotation_interval > 0 AND "+
		s.d.rotationDue+" ORDER BY created_at, id",
		KeyStateEnabled, true, s.d.timeValue(now))
	if err != nil {
		return nil, s.wrap("list keys due for rotation", err)
	}
	return keys, nil
}

// ListStaleVersions returns VersionCreating rows created before olderThan, oldest first.
func (s *SQLStore) ListStaleVersions(
	ctx context.Context,
	olderThan time.Time,
) ([]KeyVersion, error) {
	versions, err := s.queryVersions(ctx,
		"SELECT key_id, version, state, created_at FROM key_versions "+
			"WHERE state = ? AND created_at < ? ORDER BY created_at, key_id, version",
		VersionCreating, s.d.timeValue(olderThan))
	if err != nil {
		return nil, s.wrap("list stale key versions", err)
	}
	return versions, nil
}
