package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hsmkms/kms/service/store"
)

// AdminCredentialsFile is the name, inside the data directory, of the file that
// EnsureAdmin writes when it generates the admin secret key.
const AdminCredentialsFile = "admin-credentials.json"

// Environment variables read by AdminEnvFromGetenv.
const (
	EnvAdminAccessKey = "KMS_ADMIN_ACCESS_KEY"
	EnvAdminSecretKey = "KMS_ADMIN_SECRET_KEY"
	EnvProjectID      = "KMS_PROJECT_ID"
	EnvDomainID       = "KMS_DOMAIN_ID"
)

// AdminEnv is the operator's choice for the first admin credential. Empty fields are
// generated.
type AdminEnv struct {
	AccessKey string
	SecretKey string
	ProjectID string
	DomainID  string
}

// AdminEnvFromGetenv reads AdminEnv from the KMS_ADMIN_ACCESS_KEY, KMS_ADMIN_SECRET_KEY,
// KMS_PROJECT_ID and KMS_DOMAIN_ID variables through getenv (usually os.Getenv).
func AdminEnvFromGetenv(getenv func(string) string) AdminEnv {
	return AdminEnv{
		AccessKey: getenv(EnvAdminAccessKey),
		SecretKey: getenv(EnvAdminSecretKey),
		ProjectID: getenv(EnvProjectID),
		DomainID:  getenv(EnvDomainID),
	}
}

// adminFile is the JSON layout of AdminCredentialsFile.
type adminFile struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
	ProjectID string `json:"project_id"`
	DomainID  string `json:"domain_id"`
}

// EnsureAdmin returns the bootstrap admin credential: the oldest enabled admin credential
// of the operator project (by creation time, then by access key). The operator project's
// admins manage the credentials of every project.
//
// The store records the operator project once (store.CredentialStore.RecordOperatorProject)
// and keeps it, so deleting the first admin credential never hands that role to an admin
// of another project. On a store without the record, the project of the oldest admin
// credential, enabled or not, is recorded, which is the project kmsd took before the
// record existed. When the operator project has no enabled admin credential (on a new
// store, or after concurrent calls deleted or disabled the last ones), EnsureAdmin
// creates one in that project. The access and
// secret keys come from env when both are set, and are generated otherwise. Missing
// project and domain ids are generated as 32 lower-case hex digits, like Huawei's.
//
// When EnsureAdmin generates the secret key, it writes dataDir/admin-credentials.json
// (mode 0600, fields access_key, secret_key, project_id and domain_id) before storing the
// credential, so a secret is never stored without the operator being able to read it.
// An existing file there holds the admin secret of another store (a data directory
// started with another --database), so it is renamed to
// admin-credentials.json.replaced-<UTC time> first, and renamed back when storing the
// new credential fails. It logs the file paths, never the secret.
//
// Two replicas that call EnsureAdmin at once on an empty shared store can each create an
// admin credential with generated keys and each generate a sealing key under one label.
// So callers that run replicas hold store.SQLStore.LockBootstrap around it, as kmsd does.
func (c *Credentials) EnsureAdmin(
	ctx context.Context, dataDir string, env AdminEnv,
) (Credential, error) {
	operator, recorded, err := c.store.OperatorProject(ctx)
	if err != nil {
		return Credential{}, fmt.Errorf("find admin credential: %w", err)
	}

	existing, found, err := c.findAdmin(ctx, operator)
	if err != nil {
		return Credential{}, err
	}
	if found {
		c.checkAdminFile(ctx, dataDir)
		if env != (AdminEnv{}) {
			c.logger.Info("the store has an admin credential of the operator project, so "+
				EnvAdminAccessKey+", "+EnvAdminSecretKey+", "+EnvProjectID+" and "+
				EnvDomainID+" are not used", "access_key", existing.AccessKey,
				"operator_project_id", existing.ProjectID)
		}
		if !recorded {
			// A store from before the record, or one whose record was deleted: the
			// warning lets an operator check the project taken.
			c.logger.Warn("the store records no operator project, so the project of the "+
				"oldest admin credential is recorded as the operator project; check that "+
				"it is the right one", "operator_project_id", existing.ProjectID,
				"access_key", existing.AccessKey)
			return c.recordOperator(ctx, existing)
		}
		return existing, nil
	}

	if recorded {
		if env.ProjectID != "" && env.ProjectID != operator {
			return Credential{}, fmt.Errorf("%w: %s is %s, but the store's operator project "+
				"is %s", ErrInvalidCredential, EnvProjectID, env.ProjectID, operator)
		}
		env.ProjectID = operator
		if env.DomainID == "" {
			// Every admin of the project was disabled or deleted. The new one keeps the
			// project's domain, so that the keys and credentials it creates by default,
			// and domain grants, stay in one domain.
			if env.DomainID, err = c.projectDomain(ctx, operator); err != nil {
				return Credential{}, err
			}
		}
	}

	created, err := c.createFirstAdmin(ctx, dataDir, env)
	if err != nil {
		return Credential{}, err
	}
	return c.recordOperator(ctx, created)
}

// checkAdminFile logs a warning when dataDir/admin-credentials.json names an access key
// that the store does not hold, because kmsctl with that file gets 401. The file was then
// written for another store (the data directory was used with another --database), or
// its credential was deleted. A missing or unreadable file is not reported.
func (c *Credentials) checkAdminFile(ctx context.Context, dataDir string) {
	path := filepath.Join(dataDir, AdminCredentialsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var file adminFile
	if err := json.Unmarshal(data, &file); err != nil || file.AccessKey == "" {
		return
	}

	_, err = c.store.GetCredential(ctx, file.AccessKey)
	if errors.Is(err, store.ErrNotFound) {
		c.logger.Warn("the admin credentials file names an access key that this store "+
			"does not hold, so kmsctl with it gets 401; it was written for another store "+
			"or its credential was deleted: delete the file or replace it",
			"path", path, "access_key", file.AccessKey)
	}
}

// recordOperator records the project of admin as the operator project unless one is
// recorded already, and returns the bootstrap admin of the recorded project.
func (c *Credentials) recordOperator(ctx context.Context, admin Credential) (Credential, error) {
	operator, err := c.store.RecordOperatorProject(ctx, admin.ProjectID)
	if err != nil {
		return Credential{}, fmt.Errorf("record operator project: %w", err)
	}
	if operator == admin.ProjectID {
		return admin, nil
	}

	// Another replica recorded its own admin's project first.
	existing, found, err := c.findAdmin(ctx, operator)
	if err != nil {
		return Credential{}, err
	}
	if !found {
		return Credential{}, fmt.Errorf("the operator project %s has no admin credential",
			operator)
	}
	return existing, nil
}

// createFirstAdmin creates an admin credential from env, as EnsureAdmin describes.
func (c *Credentials) createFirstAdmin(
	ctx context.Context, dataDir string, env AdminEnv,
) (Credential, error) {
	req, err := c.adminRequest(ctx, env)
	if err != nil {
		return Credential{}, err
	}

	if env.SecretKey != "" {
		return c.createAdmin(ctx, req)
	}

	path := filepath.Join(dataDir, AdminCredentialsFile)
	keptPath, err := keepAdminFile(path)
	if err != nil {
		return Credential{}, err
	}
	if err := writeAdminFile(path, req); err != nil {
		return Credential{}, errors.Join(err, restoreAdminFile(keptPath, path))
	}

	created, err := c.createAdmin(ctx, req)
	if err != nil {
		// The file names a credential that was never stored. The next start writes it again.
		_ = os.Remove(path)
		return Credential{}, errors.Join(err, restoreAdminFile(keptPath, path))
	}
	if keptPath != "" {
		c.logger.Warn("the data directory had an admin credentials file of a credential "+
			"that this store lacks or holds disabled; it was renamed", "path", keptPath)
	}

	c.logger.Info("admin credential generated, secret key written to file",
		"access_key", created.AccessKey, "project_id", created.ProjectID, "path", path)
	return created, nil
}

// projectDomain returns the domain of the oldest credential of project, enabled or not,
// or "" when the project has none.
func (c *Credentials) projectDomain(ctx context.Context, project string) (string, error) {
	credentials, err := c.List(ctx)
	if err != nil {
		return "", fmt.Errorf("find the operator project's domain: %w", err)
	}

	var oldest Credential
	for _, credential := range credentials {
		if credential.ProjectID == project &&
			(oldest.AccessKey == "" || credential.CreatedAt.Before(oldest.CreatedAt)) {
			oldest = credential
		}
	}
	return oldest.DomainID, nil
}

// findAdmin returns the oldest enabled admin credential of project, or the oldest admin
// credential of any project, enabled or not, when project is empty (a store that records
// no operator project, where kmsd has always taken that one).
func (c *Credentials) findAdmin(ctx context.Context, project string) (Credential, bool, error) {
	credentials, err := c.List(ctx)
	if err != nil {
		return Credential{}, false, fmt.Errorf("find admin credential: %w", err)
	}

	// List orders by access key, so the first of equally old admins is kept.
	var oldest Credential
	found := false
	for _, credential := range credentials {
		if credential.Role != RoleAdmin ||
			(project != "" && (credential.ProjectID != project || credential.Disabled)) {
			continue
		}
		if !found || credential.CreatedAt.Before(oldest.CreatedAt) {
			oldest, found = credential, true
		}
	}
	return oldest, found, nil
}

// adminRequest turns env into a complete CreateRequest, generating what env leaves
// empty.
func (c *Credentials) adminRequest(ctx context.Context, env AdminEnv) (CreateRequest, error) {
	if (env.AccessKey == "") != (env.SecretKey == "") {
		return CreateRequest{}, fmt.Errorf("%w: set both %s and %s, or neither",
			ErrInvalidCredential, EnvAdminAccessKey, EnvAdminSecretKey)
	}

	req := CreateRequest{
		ProjectID: env.ProjectID,
		DomainID:  env.DomainID,
		Role:      RoleAdmin,
		AccessKey: env.AccessKey,
		SecretKey: env.SecretKey,
	}

	var err error
	if req.ProjectID == "" {
		if req.ProjectID, err = c.randomHex(ctx, 16); err != nil {
			return CreateRequest{}, err
		}
	}
	if req.DomainID == "" {
		if req.DomainID, err = c.randomHex(ctx, 16); err != nil {
			return CreateRequest{}, err
		}
	}
	if err := c.completeRequest(ctx, &req); err != nil {
		return CreateRequest{}, err
	}
	return req, nil
}

// createAdmin stores req. An access key that already exists (another replica stored the
// same operator-chosen key first) counts as success.
func (c *Credentials) createAdmin(ctx context.Context, req CreateRequest) (Credential, error) {
	created, _, err := c.Create(ctx, req)
	if errors.Is(err, ErrAccessKeyExists) {
		existing, found, findErr := c.findAdmin(ctx, req.ProjectID)
		if findErr == nil && found {
			return existing, nil
		}
		if findErr == nil {
			// The key is another credential's, so retrying cannot succeed.
			return Credential{}, fmt.Errorf("%w: %s names the access key of another "+
				"credential, not of an admin of project %s", ErrInvalidCredential,
				EnvAdminAccessKey, req.ProjectID)
		}
	}
	if err != nil {
		return Credential{}, fmt.Errorf("create admin credential: %w", err)
	}
	return created, nil
}

// writeAdminFile writes the credential to path with mode 0600, through a temporary file
// and a rename, so a reader never sees a partial file.
func writeAdminFile(path string, req CreateRequest) error {
	data, err := json.MarshalIndent(adminFile{
		AccessKey: req.AccessKey,
		SecretKey: req.SecretKey,
		ProjectID: req.ProjectID,
		DomainID:  req.DomainID,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	data = append(data, '\n')

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create data directory for %s: %w", path, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), AdminCredentialsFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())

	// CreateTemp makes the file with mode 0600, so the secret is never readable by others.
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

// keepAdminFile renames an existing file at path to path.replaced-<UTC time> and returns
// the new name, or "" when there is no file.
func keepAdminFile(path string) (string, error) {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	kept := path + ".replaced-" + time.Now().UTC().Format("20060102T150405.000Z")
	if err := os.Rename(path, kept); err != nil {
		return "", fmt.Errorf("keep the existing %s: %w", path, err)
	}
	return kept, nil
}

// restoreAdminFile renames kept back to path, when kept is not "".
func restoreAdminFile(kept, path string) error {
	if kept == "" {
		return nil
	}
	if err := os.Rename(kept, path); err != nil {
		return fmt.Errorf("restore %s from %s: %w", path, kept, err)
	}
	return nil
}
