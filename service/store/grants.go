package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrLimitExceeded means a write would pass a configured limit, such as the number of
// grants on one key.
var ErrLimitExceeded = errors.New("limit exceeded")

// Grantee principal types of the Huawei Cloud KMS API v1.0.
const (
	// GranteeUser names a user id: the grant applies to credentials of that user.
	GranteeUser = "user"
	// GranteeDomain names a domain id: the grant applies to every user of that domain.
	GranteeDomain = "domain"
)

// Grant is a permission on one key given to a user or a domain.
type Grant struct {
	ID        string // 64 lower-case hex digits
	KeyID     string
	ProjectID string // the project of the key
	Name      string // may be empty
	// GranteeType is GranteeUser or GranteeDomain.
	GranteeType string
	// Grantee is a user id or a domain id, as GranteeType says.
	Grantee string
	// RetiringPrincipal is the user id that may retire the grant besides the grantee;
	// empty when there is none.
	RetiringPrincipal string
	// IssuingPrincipal is the user id that created the grant.
	IssuingPrincipal string
	// Operations are the API operation names the grant allows on the key, none of which
	// may contain a comma.
	Operations []string
	CreatedAt  time.Time
}

// GrantPage selects one page of a grant listing. Grants are ordered by creation time,
// then id.
type GrantPage struct {
	Offset int
	Limit  int // at least 1
}

// GrantStore keeps grants: permissions on one key given to another principal. Grants
// are scoped by the project of their key, so no method finds a grant of another project.
// DeleteKey deletes the grants of the key with it.
type GrantStore interface {
	// CreateGrant inserts g unless the key already has maxPerKey grants, in which case it
	// returns ErrLimitExceeded. It returns ErrNotFound when the key does not exist in
	// g.ProjectID and ErrConflict when the grant id exists.
	CreateGrant(ctx context.Context, g Grant, maxPerKey int) error

	// GetGrant returns the grant with id grantID in project, or ErrNotFound.
	GetGrant(ctx context.Context, projectID, grantID string) (Grant, error)

	// ListGrants returns one page of the grants on a key and how many it has in all.
	ListGrants(ctx context.Context, projectID, keyID string, p GrantPage) ([]Grant, int, error)

	// ListRetirableGrants returns one page of the grants in project whose retiring
	// principal is userID, and how many there are in all.
	ListRetirableGrants(
		ctx context.Context,
		projectID, userID string,
		p GrantPage,
	) ([]Grant, int, error)

	// ListGranteeGrants returns the grants on a key whose grantee is the user userID or
	// the domain domainID.
	ListGranteeGrants(ctx context.Context, keyID, userID, domainID string) ([]Grant, error)

	// HasGranteeGrants reports whether the user userID or the domain domainID is the
	// grantee of any grant in project.
	HasGranteeGrants(ctx context.Context, projectID, userID, domainID string) (bool, error)

	// DeleteGrant deletes the grant with id grantID in project, or returns ErrNotFound.
	DeleteGrant(ctx context.Context, projectID, grantID string) error

	// MaxGrantsPerKey returns the number of grants on the key of project that has the
	// most grants, or 0 when project has no grants.
	MaxGrantsPerKey(ctx context.Context, projectID string) (int, error)
}

const grantColumns = "id, key_id, project_id, name, grantee_type, grantee, " +
	"retiring_principal, issuing_principal, operations, created_at"

// granteeCondition matches the grants of one user or of that user's domain; its
// placeholders take the user id, then the domain id.
const granteeCondition = "((grantee_type = 'user' AND grantee = ?) OR " +
	"(grantee_type = 'domain' AND grantee = ?))"

func scanGrant(row rowScanner) (Grant, error) {
	var g Grant
	var operations string
	err := row.Scan(&g.ID, &g.KeyID, &g.ProjectID, &g.Name, &g.GranteeType, &g.Grantee,
		&g.RetiringPrincipal, &g.IssuingPrincipal, &operations, timeColumn{&g.CreatedAt})
	if operations != "" {
		g.Operations = strings.Split(operations, ",")
	}
	return g, err
}

// CreateGrant inserts g after checking, in the same transaction, that its key exists in
// g.ProjectID and has fewer than maxPerKey grants. On PostgreSQL the key row is locked
// for the transaction, so concurrent creations on one key cannot pass the limit
// together; on SQLite every write transaction already excludes the others. A zero
// CreatedAt is set to now.
func (s *SQLStore) CreateGrant(ctx context.Context, g Grant, maxPerKey int) error {
	op := "create grant on key " + g.KeyID
	if g.ID == "" || g.KeyID == "" || g.ProjectID == "" || len(g.Operations) == 0 {
		return fmt.Errorf("%s: grant id, key id, project id and operations are required", op)
	}
	for _, name := range g.Operations {
		if name == "" || strings.Contains(name, ",") {
			return fmt.Errorf("%s: operation name %q is empty or contains a comma", op, name)
		}
	}

	g.CreatedAt = storedTime(g.CreatedAt)
	if g.CreatedAt.IsZero() {
		g.CreatedAt = currentTime()
	}

	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if err := s.lockGrantedKey(ctx, tx, g.ProjectID, g.KeyID); err != nil {
			return err
		}

		var n int
		err := tx.QueryRowContext(ctx, s.d.rebind(
			"SELECT COUNT(*) FROM grants WHERE key_id = ?"), g.KeyID).Scan(&n)
		if err != nil {
			return err
		}
		if n >= maxPerKey {
			return fmt.Errorf("the key has %d grants, the limit is %d: %w", n, maxPerKey,
				ErrLimitExceeded)
		}

		_, err = tx.ExecContext(ctx, s.d.rebind("INSERT INTO grants ("+grantColumns+") "+
			"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
			g.ID, g.KeyID, g.ProjectID, g.Name, g.GranteeType, g.Grantee,
			g.RetiringPrincipal, g.IssuingPrincipal, strings.Join(g.Operations, ","),
			s.d.timeValue(g.CreatedAt))
		return err
	})
}

// lockGrantedKey checks that the key exists in project and, on PostgreSQL, locks its row
// until the transaction ends.
func (s *SQLStore) lockGrantedKey(ctx context.Context, tx *sql.Tx, projectID, keyID string) error {
	query := "SELECT id FROM keys WHERE project_id = ? AND id = ?"
	if s.d.name == postgresDialect.name {
		query += " FOR UPDATE"
	}

	var id string
	err := tx.QueryRowContext(ctx, s.d.rebind(query), projectID, keyID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("key %s in project %s: %w", keyID, projectID, ErrNotFound)
	}
	return err
}

// GetGrant returns the grant with id grantID in project projectID, or ErrNotFound.
func (s *SQLStore) GetGrant(ctx context.Context, projectID, grantID string) (Grant, error) {
	op := "get grant " + grantID
	row := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT "+grantColumns+" FROM grants WHERE project_id = ? AND id = ?"),
		projectID, grantID)
	g, err := scanGrant(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Grant{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Grant{}, s.wrap(op, err)
	}
	return g, nil
}

// ListGrants returns one page of the grants on keyID in projectID, ordered by creation
// time then id, and the number of grants on the key. The page and the count come from
// one snapshot.
func (s *SQLStore) ListGrants(
	ctx context.Context,
	projectID, keyID string,
	p GrantPage,
) ([]Grant, int, error) {
	return s.pageGrants(ctx, "list grants of key "+keyID, p,
		" WHERE project_id = ? AND key_id = ?", projectID, keyID)
}

// ListRetirableGrants returns one page of the grants in projectID whose retiring
// principal is userID, ordered by creation time then id, and their number. An empty
// userID matches no grant.
func (s *SQLStore) ListRetirableGrants(
	ctx context.Context,
	projectID, userID string,
	p GrantPage,
) ([]Grant, int, error) {
	return s.pageGrants(ctx, "list grants retirable by "+userID, p,
		" WHERE project_id = ? AND retiring_principal = ? AND retiring_principal <> ''",
		projectID, userID)
}

func (s *SQLStore) pageGrants(
	ctx context.Context,
	op string,
	p GrantPage,
	where string,
	args ...any,
) ([]Grant, int, error) {
	if p.Limit < 1 || p.Offset < 0 {
		return nil, 0, fmt.Errorf("%s: invalid page (offset %d, limit %d): limit must be at "+
			"least 1 and offset not negative", op, p.Offset, p.Limit)
	}

	var grants []Grant
	var total int
	err := s.inReadTx(ctx, op, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM grants"+where),
			args...).Scan(&total)
		if err != nil {
			return err
		}

		page := append(args, p.Limit, p.Offset)
		grants, err = s.queryGrants(ctx, tx, "SELECT "+grantColumns+" FROM grants"+where+
			" ORDER BY created_at, id LIMIT ? OFFSET ?", page...)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return grants, total, nil
}

// ListGranteeGrants returns the grants on keyID whose grantee is the user userID or the
// domain domainID, ordered by creation time then id. Empty ids match nothing.
func (s *SQLStore) ListGranteeGrants(
	ctx context.Context,
	keyID, userID, domainID string,
) ([]Grant, error) {
	grants, err := s.queryGrants(ctx, s.read, "SELECT "+grantColumns+" FROM grants "+
		"WHERE key_id = ? AND grantee <> '' AND "+granteeCondition+" ORDER BY created_at, id",
		keyID, userID, domainID)
	if err != nil {
		return nil, s.wrap("list grants of the caller on key "+keyID, err)
	}
	return grants, nil
}

// HasGranteeGrants reports whether the user userID or the domain domainID is the grantee
// of any grant in projectID. Empty ids match nothing.
func (s *SQLStore) HasGranteeGrants(
	ctx context.Context,
	projectID, userID, domainID string,
) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM (SELECT 1 FROM grants "+
		"WHERE project_id = ? AND grantee <> '' AND "+granteeCondition+" LIMIT 1) AS g"),
		projectID, userID, domainID).Scan(&n)
	if err != nil {
		return false, s.wrap("check grants of the caller in project "+projectID, err)
	}
	return n > 0, nil
}

// DeleteGrant deletes the grant with id grantID in projectID, or returns ErrNotFound.
func (s *SQLStore) DeleteGrant(ctx context.Context, projectID, grantID string) error {
	res, err := s.write.ExecContext(ctx, s.d.rebind(
		"DELETE FROM grants WHERE project_id = ? AND id = ?"), projectID, grantID)
	return s.checkOneRow("delete grant "+grantID, res, err)
}

// MaxGrantsPerKey returns the number of grants on the key of projectID that has the most
// grants, or 0 when projectID has no grants. It is one query, whatever the number of keys.
func (s *SQLStore) MaxGrantsPerKey(ctx context.Context, projectID string) (int, error) {
	var n int
	err := s.read.QueryRowContext(ctx, s.d.rebind("SELECT COALESCE(MAX(n), 0) FROM "+
		"(SELECT COUNT(*) AS n FROM grants WHERE project_id = ? GROUP BY key_id) AS g"),
		projectID).Scan(&n)
	if err != nil {
		return 0, s.wrap("count grants per key in project "+projectID, err)
	}
	return n, nil
}

// queryGrants runs a query that selects grantColumns and returns its rows.
func (s *SQLStore) queryGrants(
	ctx context.Context,
	q querier,
	query string,
	args ...any,
) ([]Grant, error) {
	rows, err := q.QueryContext(ctx, s.d.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()

	var grants []Grant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, err
		}
		grants = append(grants, g)
	}
	return grants, rows.Err()
}

// deleteKeyGrants deletes the grants on keyID, inside the DeleteKey transaction and
// before the key row, which the grants reference.
func (s *SQLStore) deleteKeyGrants(ctx context.Context, tx *sql.Tx, keyID string) error {
	_, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM grants WHERE key_id = ?"), keyID)
	if err != nil {
		return fmt.Errorf("delete grants of key %s: %w", keyID, err)
	}
	return nil
}
