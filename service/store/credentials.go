package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const credentialColumns = "access_key, sealed_secret, user_id, project_id, domain_id, role, " +
	"disabled, created_at, updated_at"

func scanCredential(row rowScanner) (Credential, error) {
	var c Credential
	err := row.Scan(&c.AccessKey, &c.SealedSecret, &c.UserID, &c.ProjectID, &c.DomainID,
		&c.Role, &c.Disabled, timeColumn{&c.CreatedAt}, timeColumn{&c.UpdatedAt})
	return c, err
}

// DomainMismatchError is the error of PutCredential for a credential whose project, or
// whose user id, already has credentials of another domain.
type DomainMismatchError struct {
	// ProjectID is set when the project belongs to another domain, UserID when the user
	// does.
	ProjectID, UserID string
}

func (e *DomainMismatchError) Error() string {
	if e.ProjectID != "" {
		return fmt.Sprintf("project %s belongs to another domain", e.ProjectID)
	}
	return fmt.Sprintf("user id %s belongs to another domain", e.UserID)
}

// credentialLockClass is the first key of the advisory lock that PutCredential holds on
// PostgreSQL while it checks and inserts: the bytes of "kmc" read as a big-endian
// integer, distinct from keyLockClass and migrationLockClass.
const credentialLockClass = "7040355"

// PutCredential inserts c, or returns ErrConflict when the access key exists and a
// *DomainMismatchError when c's project or user id has credentials of another domain, or
// the project has keys of another domain. The
// check and the insert are one transaction, which the single SQLite writer or, on
// PostgreSQL, an advisory lock serialises with other PutCredential calls. A zero
// CreatedAt is set to now, a zero UpdatedAt to CreatedAt.
func (s *SQLStore) PutCredential(ctx context.Context, c Credential) error {
	op := "put credential " + c.AccessKey
	if c.AccessKey == "" || len(c.SealedSecret) == 0 {
		return fmt.Errorf("%s: access key and sealed secret are required", op)
	}

	c.CreatedAt = storedTime(c.CreatedAt)
	if c.CreatedAt.IsZero() {
		c.CreatedAt = currentTime()
	}
	c.UpdatedAt = storedTime(c.UpdatedAt)
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}

	var mismatch *DomainMismatchError
	err := s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		if s.d.name == postgresDialect.name {
			_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock("+credentialLockClass+
				", hashtext(current_schema()))")
			if err != nil {
				return err
			}
		}

		var project, user string
		err := tx.QueryRowContext(ctx, s.d.rebind("SELECT project_id, user_id FROM credentials "+
			"WHERE (project_id = ? OR user_id = ?) AND domain_id <> ? LIMIT 1"),
			c.ProjectID, c.UserID, c.DomainID).Scan(&project, &user)
		switch {
		case err == nil && project == c.ProjectID:
			mismatch = &DomainMismatchError{ProjectID: c.ProjectID}
			return mismatch
		case err == nil:
			mismatch = &DomainMismatchError{UserID: c.UserID}
			return mismatch
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}

		// Keys keep the domain of the credential that created them, so a project whose
		// credentials were all deleted still belongs to its keys' domain.
		var otherDomainKey int
		err = tx.QueryRowContext(ctx, s.d.rebind("SELECT 1 FROM keys "+
			"WHERE project_id = ? AND domain_id <> ? LIMIT 1"), c.ProjectID, c.DomainID).
			Scan(&otherDomainKey)
		switch {
		case err == nil:
			mismatch = &DomainMismatchError{ProjectID: c.ProjectID}
			return mismatch
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}

		_, err = tx.ExecContext(ctx, s.d.rebind("INSERT INTO credentials ("+
			credentialColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
			c.AccessKey, c.SealedSecret, c.UserID, c.ProjectID, c.DomainID, c.Role, c.Disabled,
			s.d.timeValue(c.CreatedAt), s.d.timeValue(c.UpdatedAt))
		return err
	})
	if mismatch != nil {
		return mismatch
	}
	return err
}

// GetCredential returns the credential of accessKey, or ErrNotFound.
func (s *SQLStore) GetCredential(ctx context.Context, accessKey string) (Credential, error) {
	op := "get credential " + accessKey
	row := s.read.QueryRowContext(ctx, s.d.rebind(
		"SELECT "+credentialColumns+" FROM credentials WHERE access_key = ?"), accessKey)
	c, err := scanCredential(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Credential{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Credential{}, s.wrap(op, err)
	}
	return c, nil
}

// ListCredentials returns every credential, ordered by access key.
func (s *SQLStore) ListCredentials(ctx context.Context) ([]Credential, error) {
	rows, err := s.read.QueryContext(ctx,
		"SELECT "+credentialColumns+" FROM credentials ORDER BY access_key")
	if err != nil {
		return nil, s.wrap("list credentials", err)
	}
	defer rows.Close()

	var creds []Credential
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, s.wrap("list credentials", err)
		}
		creds = append(creds, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("list credentials", err)
	}
	return creds, nil
}

// SetCredentialDisabled disables or enables a credential and sets its UpdatedAt to now.
// It returns ErrNotFound when the access key does not exist.
func (s *SQLStore) SetCredentialDisabled(
	ctx context.Context,
	accessKey string,
	disabled bool,
) error {
	op := fmt.Sprintf("set credential %s disabled=%t", accessKey, disabled)
	res, err := s.write.ExecContext(ctx, s.d.rebind(
		"UPDATE credentials SET disabled = ?, updated_at = ? WHERE access_key = ?"),
		disabled, s.d.timeValue(currentTime()), accessKey)
	return s.checkOneRow(op, res, err)
}

// DeleteCredential deletes a credential. It returns ErrNotFound when the access key does
// not exist.
func (s *SQLStore) DeleteCredential(ctx context.Context, accessKey string) error {
	res, err := s.write.ExecContext(ctx, s.d.rebind(
		"DELETE FROM credentials WHERE access_key = ?"), accessKey)
	return s.checkOneRow("delete credential "+accessKey, res, err)
}

// checkOneRow wraps the error of a single-row write, or returns ErrNotFound when the
// write matched no row.
func (s *SQLStore) checkOneRow(op string, res sql.Result, err error) error {
	if err != nil {
		return s.wrap(op, err)
	}

	n, err := res.RowsAffected()
	if err != nil {
		return s.wrap(op, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// operatorProjectSetting is the settings row that names the operator project.
const operatorProjectSetting = "operator_project_id"

// OperatorProject returns the recorded operator project, and false when none is recorded.
func (s *SQLStore) OperatorProject(ctx context.Context) (string, bool, error) {
	var project string
	err := s.read.QueryRowContext(ctx, s.d.rebind("SELECT value FROM settings WHERE name = ?"),
		operatorProjectSetting).Scan(&project)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.wrap("get operator project", err)
	}
	return project, true, nil
}

// RecordOperatorProject records projectID as the operator project unless one is recorded
// already, and returns the recorded one. It reads back through the write connection, so
// the value it returns is the committed one even where reads go to other connections.
func (s *SQLStore) RecordOperatorProject(ctx context.Context, projectID string) (string, error) {
	const op = "record operator project"
	if projectID == "" {
		return "", fmt.Errorf("%s: the project id is empty", op)
	}

	_, err := s.write.ExecContext(ctx, s.d.rebind(
		"INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"),
		operatorProjectSetting, projectID)
	if err != nil {
		return "", s.wrap(op, err)
	}

	var recorded string
	err = s.write.QueryRowContext(ctx, s.d.rebind("SELECT value FROM settings WHERE name = ?"),
		operatorProjectSetting).Scan(&recorded)
	if err != nil {
		return "", s.wrap(op, err)
	}
	return recorded, nil
}
