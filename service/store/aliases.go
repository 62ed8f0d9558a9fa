package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AliasStore keeps the aliases of the alias API (create, delete, list, associate),
// which are separate from a key's key_alias. An alias is unique within a project and
// names one key of that project.
type AliasStore interface {
	// CreateAlias inserts a. It returns ErrNotFound when a.KeyID is not a key of
	// a.ProjectID and ErrAliasExists when the project already has the alias.
	CreateAlias(ctx context.Context, a Alias) error

	// GetAlias returns the alias of the project, or ErrNotFound.
	GetAlias(ctx context.Context, projectID, alias string) (Alias, error)

	// ListAliases returns one page of the project's aliases, of keyID only when it is
	// not empty, ordered by alias, and the number of aliases that match.
	ListAliases(ctx context.Context, projectID string, f ListAliasesFilter) ([]Alias, int, error)

	// DeleteAliases deletes the aliases of keyID, all or none. It returns ErrNotFound,
	// deleting nothing, when one of them is not an alias of that key in the project.
	DeleteAliases(ctx context.Context, projectID, keyID string, aliases []string) error

	// AssociateAlias moves an existing alias to targetKeyID and returns it. It returns
	// ErrNotFound when the alias or the target key is not in the project.
	AssociateAlias(ctx context.Context, projectID, alias, targetKeyID string) (Alias, error)
}

// Alias is one alias of the alias API.
type Alias struct {
	ProjectID string
	DomainID  string
	Alias     string // the full name, "alias/<name>"
	KeyID     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ListAliasesFilter selects and pages ListAliases results.
type ListAliasesFilter struct {
	KeyID  string // empty for the aliases of every key
	Offset int
	Limit  int // at least 1
}

const aliasColumns = "project_id, domain_id, alias, key_id, created_at, updated_at"

func scanAlias(row rowScanner) (Alias, error) {
	var a Alias
	err := row.Scan(&a.ProjectID, &a.DomainID, &a.Alias, &a.KeyID, timeColumn{&a.CreatedAt},
		timeColumn{&a.UpdatedAt})
	return a, err
}

// CreateAlias inserts a after checking, in the same transaction, that its key belongs to
// a.ProjectID. A zero CreatedAt is set to now and a zero UpdatedAt to CreatedAt.
func (s *SQLStore) CreateAlias(ctx context.Context, a Alias) error {
	a.CreatedAt = storedTime(a.CreatedAt)
	if a.CreatedAt.IsZero() {
		a.CreatedAt = currentTime()
	}
	a.UpdatedAt = storedTime(a.UpdatedAt)
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = a.CreatedAt
	}

	op := fmt.Sprintf("create alias %q for key %s", a.Alias, a.KeyID)
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if err := s.checkKeyInProject(ctx, tx, a.ProjectID, a.KeyID); err != nil {
			return err
		}

		_, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO aliases ("+aliasColumns+") "+
			"VALUES (?, ?, ?, ?, ?, ?)"), a.ProjectID, a.DomainID, a.Alias, a.KeyID,
			s.d.timeValue(a.CreatedAt), s.d.timeValue(a.UpdatedAt))
		if err != nil && errors.Is(s.d.classify(err), ErrConflict) {
			// The primary key (project_id, alias) is the only unique constraint.
			return fmt.Errorf("alias %q in project %s: %w", a.Alias, a.ProjectID, ErrAliasExists)
		}
		return err
	})
}

// checkKeyInProject returns ErrNotFound unless keyID is a key of projectID.
func (s *SQLStore) checkKeyInProject(ctx context.Context, q querier, projectID, keyID string) error {
	var one int
	err := q.QueryRowContext(ctx, s.d.rebind(
		"SELECT 1 FROM keys WHERE id = ? AND project_id = ?"), keyID, projectID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("key %s in project %s: %w", keyID, projectID, ErrNotFound)
	}
	return err
}

// GetAlias returns the alias of the project, or ErrNotFound.
func (s *SQLStore) GetAlias(ctx context.Context, projectID, alias string) (Alias, error) {
	op := fmt.Sprintf("get alias %q", alias)
	row := s.read.QueryRowContext(ctx, s.d.rebind("SELECT "+aliasColumns+
		" FROM aliases WHERE project_id = ? AND alias = ?"), projectID, alias)
	a, err := scanAlias(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Alias{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Alias{}, s.wrap(op, err)
	}
	return a, nil
}

// ListAliases returns one page of the project's aliases, ordered by alias, and the number
// of aliases that match the filter, from one snapshot. f.Limit must be at least 1 and
// f.Offset not negative.
func (s *SQLStore) ListAliases(
	ctx context.Context,
	projectID string,
	f ListAliasesFilter,
) ([]Alias, int, error) {
	if f.Limit < 1 || f.Offset < 0 {
		return nil, 0, fmt.Errorf("list aliases: invalid page (offset %d, limit %d): "+
			"limit must be at least 1 and offset not negative", f.Offset, f.Limit)
	}

	where := " WHERE project_id = ?"
	args := []any{projectID}
	if f.KeyID != "" {
		where += " AND key_id = ?"
		args = append(args, f.KeyID)
	}

	var aliases []Alias
	var total int
	err := s.inReadTx(ctx, "list aliases of project "+projectID, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM aliases"+where),
			args...).Scan(&total)
		if err != nil {
			return err
		}

		rows, err := tx.QueryContext(ctx, s.d.rebind("SELECT "+aliasColumns+" FROM aliases"+
			where+" ORDER BY alias LIMIT ? OFFSET ?"), append(args, f.Limit, f.Offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()

		for rows.Next() {
			a, err := scanAlias(rows)
			if err != nil {
				return err
			}
			aliases = append(aliases, a)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	return aliases, total, nil
}

// DeleteAliases deletes the given aliases of keyID in one transaction. It returns
// ErrNotFound, deleting nothing, when one of them is not an alias of keyID in projectID.
// Repeated names count once.
func (s *SQLStore) DeleteAliases(
	ctx context.Context,
	projectID, keyID string,
	aliases []string,
) error {
	op := fmt.Sprintf("delete %d aliases of key %s", len(aliases), keyID)
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		seen := make(map[string]bool, len(aliases))
		for _, alias := range aliases {
			if seen[alias] {
				continue
			}
			seen[alias] = true

			res, err := tx.ExecContext(ctx, s.d.rebind(
				"DELETE FROM aliases WHERE project_id = ? AND alias = ? AND key_id = ?"),
				projectID, alias, keyID)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("alias %q of key %s: %w", alias, keyID, ErrNotFound)
			}
		}
		return nil
	})
}

// AssociateAlias moves an existing alias to targetKeyID, a key of the same project, and
// returns the alias with its new UpdatedAt. Moving an alias to the key it already names
// only changes UpdatedAt.
func (s *SQLStore) AssociateAlias(
	ctx context.Context,
	projectID, alias, targetKeyID string,
) (Alias, error) {
	var updated Alias
	op := fmt.Sprintf("associate alias %q with key %s", alias, targetKeyID)
	err := s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if err := s.checkKeyInProject(ctx, tx, projectID, targetKeyID); err != nil {
			return err
		}

		row := tx.QueryRowContext(ctx, s.d.rebind("UPDATE aliases SET key_id = ?, "+
			"updated_at = ? WHERE project_id = ? AND alias = ? RETURNING "+aliasColumns),
			targetKeyID, s.d.timeValue(currentTime()), projectID, alias)
		var err error
		updated, err = scanAlias(row)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("alias %q in project %s: %w", alias, projectID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return Alias{}, err
	}
	return updated, nil
}

// deleteKeyAliasesAndTags deletes every alias and tag of keyID. DeleteKey calls it first
// in its transaction, because both tables reference the key row.
func (s *SQLStore) deleteKeyAliasesAndTags(ctx context.Context, tx *sql.Tx, keyID string) error {
	for _, table := range []string{"aliases", "key_tags"} {
		_, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM "+table+" WHERE key_id = ?"), keyID)
		if err != nil {
			return fmt.Errorf("delete %s of the key: %w", strings.ReplaceAll(table, "_", " "), err)
		}
	}
	return nil
}
