// Package store keeps the service's metadata in SQL: keys and their versions,
// credentials, and (in later files) grants, aliases, tags and the audit trail. Key
// material never reaches the store: a key version row names a token object, nothing
// more.
//
// One implementation serves two backends through database/sql: SQLite (the embedded
// default, github.com/mattn/go-sqlite3) and PostgreSQL (github.com/jackc/pgx/v5).
// Open picks the backend from the database URL.
//
// # Concurrency
//
// A Store is safe for concurrent use. Every method that changes several rows does so in
// one transaction.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them with %w, so test them with errors.Is.
var (
	// ErrNotFound means no row matches (in the caller's project, where one is given).
	ErrNotFound = errors.New("not found")

	// ErrAliasExists means another key of the same project already has the alias.
	ErrAliasExists = errors.New("alias already exists")

	// ErrConflict means the row changed since it was read (optimistic concurrency on
	// Key.Revision) or a row with the same primary key exists.
	ErrConflict = errors.New("conflicting change")

	// ErrUnavailable means the database could not be reached or refused the write, or a
	// chain file could not be written. The call may succeed when retried later.
	ErrUnavailable = errors.New("store unavailable")
)

// Key states as the Huawei Cloud KMS API v1.0 spells them on the wire.
const (
	KeyStatePendingActivation = "1"
	KeyStateEnabled           = "2"
	KeyStateDisabled          = "3"
	KeyStatePendingDeletion   = "4"
	KeyStatePendingImport     = "5"
)

// Key is the metadata of one customer master key.
type Key struct {
	ID          string // 36-character UUID, lower case
	ProjectID   string
	DomainID    string
	Alias       string // key_alias, unique per project
	Description string
	Spec        string // key_spec, for example "AES_256"
	Usage       string // key_usage, for example "ENCRYPT_DECRYPT"
	Origin      string // "kms" or "external"
	State       string // one of the KeyState constants
	CreatedAt   time.Time
	// DeletionAt is when a key pending deletion is destroyed; zero when none is scheduled.
	DeletionAt time.Time

	RotationEnabled bool
	// RotationInterval is in days (30 to 365).
	RotationInterval int
	// LastRotationAt is zero until the first rotation.
	LastRotationAt time.Time
	// RotationCount counts completed rotations.
	RotationCount int

	// CurrentVersion is the key version that new seals use.
	CurrentVersion uint32

	// Revision increases by one on every UpdateKey; UpdateKey fails with ErrConflict
	// when the stored revision differs from the one read.
	Revision int64
	// UpdatedAt is the time of the last change.
	UpdatedAt time.Time
}

// Key version states. A version is "creating" from the moment its token object is about
// to be generated until the metadata that references it is committed, so that a crash
// in between leaves a row that reconciliation finds, never an unreferenced object.
const (
	VersionCreating  = "creating"
	VersionActive    = "active"
	VersionDestroyed = "destroyed"
)

// KeyVersion is one token object of a key.
type KeyVersion struct {
	KeyID   string
	Version uint32
	State   string // one of the Version constants
	// CreatedAt is the time read from the clock of the replica that began the version.
	// Replica clocks can disagree, so it does not order versions (see ActiveVersions).
	CreatedAt time.Time
	// ProjectID is the project of the key. Only ActiveVersions fills it.
	ProjectID string
}

// ListKeysFilter selects and pages ListKeys results. Keys are ordered by creation time,
// then id.
type ListKeysFilter struct {
	State  string // empty for every state
	Spec   string // empty for every spec
	Offset int
	Limit  int // at least 1
}

// Credential is an access key pair of the AK/SK signature scheme. The secret key is
// stored only sealed by a token key; SealedSecret is that ciphertext.
type Credential struct {
	AccessKey    string
	SealedSecret []byte
	UserID       string
	ProjectID    string
	DomainID     string
	Role         string
	Disabled     bool
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Store is the metadata store: one interface per concern, each declared in the file of
// that concern, all implemented by *SQLStore. Every method takes a context that bounds
// its database calls.
type Store interface {
	KeyStore
	LifecycleStore
	CredentialStore
	AliasStore
	TagStore
	GrantStore
	AuditStore
	JobStore

	// Ping checks that the database answers.
	Ping(ctx context.Context) error

	// CheckWrite checks that the database commits writes, which Ping does not, because
	// a database can respond to pings while every write fails. See SQLStore.CheckWrite.
	CheckWrite(ctx context.Context) error

	// Close closes the database. Calls after the first return nil.
	Close() error
}

// KeyStore keeps keys and their versions.
type KeyStore interface {

	// BeginKeyVersion records the intent to generate the token object of (keyID,
	// version) with state VersionCreating. Call it before GenerateKey.
	BeginKeyVersion(ctx context.Context, keyID string, version uint32) error

	// AbortKeyVersion deletes a VersionCreating row, after its token object was destroyed
	// or never made. Deleting a row in another state returns ErrConflict.
	AbortKeyVersion(ctx context.Context, keyID string, version uint32) error

	// CreateKey inserts the key row and marks version k.CurrentVersion active, in one
	// transaction. It returns ErrAliasExists when the alias is taken in the project.
	// When maxKeys is above 0 it returns ErrLimitExceeded when the project already has
	// maxKeys keys, counted in the same transaction so that concurrent calls cannot pass
	// the limit together; 0 means no limit.
	CreateKey(ctx context.Context, k Key, maxKeys int) error

	// ActivateKeyVersion marks version active and makes it the key's current version, in
	// one transaction with the key update k (whose Revision must match the stored one).
	ActivateKeyVersion(ctx context.Context, k Key, version uint32) error

	// GetKey returns the key with id in project. ErrNotFound when it does not exist or
	// belongs to another project.
	GetKey(ctx context.Context, projectID, keyID string) (Key, error)

	// GetKeyByAlias returns the key with the key_alias alias in project.
	GetKeyByAlias(ctx context.Context, projectID, alias string) (Key, error)

	// ListKeys returns one page of the project's keys and the total count that matches
	// the filter.
	ListKeys(ctx context.Context, projectID string, f ListKeysFilter) ([]Key, int, error)

	// CountKeys returns how many keys the project has, in every state.
	CountKeys(ctx context.Context, projectID string) (int, error)

	// UpdateKey stores k if the stored revision equals k.Revision and returns the key
	// with its new revision. ErrConflict otherwise; ErrAliasExists on a taken alias.
	UpdateKey(ctx context.Context, k Key) (Key, error)

	// ListKeyVersions returns every version row of the key, oldest first.
	ListKeyVersions(ctx context.Context, keyID string) ([]KeyVersion, error)

	// ActiveVersions returns the active key versions, newest first, at most limit of them,
	// or all when limit is 0. Newest means recorded last by BeginKeyVersion, whatever
	// CreatedAt the creating replica's clock gave it. Each version has a token object,
	// unless the token is older than the store. A key pending deletion whose deletion
	// time is at or before deletedAfter may have lost its objects already, so its
	// versions are left out.
	ActiveVersions(ctx context.Context, limit int, deletedAfter time.Time) ([]KeyVersion, error)

	// MarkVersionDestroyed records that the token object of a version is gone.
	MarkVersionDestroyed(ctx context.Context, keyID string, version uint32) error

	// DeleteKey deletes the key row, its aliases, its tags and its version rows. It
	// returns ErrConflict while any version is not VersionDestroyed, so metadata never
	// claims a key is gone while one of its token objects remains.
	DeleteKey(ctx context.Context, keyID string) error
}

// LifecycleStore finds the keys that background jobs act on.
type LifecycleStore interface {
	// ListKeysDueForDeletion returns keys pending deletion whose DeletionAt is at or
	// before now, in every project.
	ListKeysDueForDeletion(ctx context.Context, now time.Time) ([]Key, error)

	// ListKeysDueForRotation returns enabled keys with rotation on whose last rotation
	// (or creation) plus RotationInterval days is at or before now.
	ListKeysDueForRotation(ctx context.Context, now time.Time) ([]Key, error)

	// ListStaleVersions returns VersionCreating rows created before olderThan.
	ListStaleVersions(ctx context.Context, olderThan time.Time) ([]KeyVersion, error)
}

// CredentialStore keeps access key pairs.
type CredentialStore interface {
	// PutCredential inserts c, or returns ErrConflict when the access key exists and a
	// *DomainMismatchError when c's project or user id has credentials of another domain.
	PutCredential(ctx context.Context, c Credential) error

	// GetCredential returns the credential of accessKey, or ErrNotFound.
	GetCredential(ctx context.Context, accessKey string) (Credential, error)

	// ListCredentials returns every credential, ordered by access key.
	ListCredentials(ctx context.Context) ([]Credential, error)

	// SetCredentialDisabled disables or enables a credential.
	SetCredentialDisabled(ctx context.Context, accessKey string, disabled bool) error

	// DeleteCredential deletes a credential.
	DeleteCredential(ctx context.Context, accessKey string) error

	// OperatorProject returns the recorded operator project, whose admins manage the
	// credentials of every project, and false when none is recorded.
	OperatorProject(ctx context.Context) (string, bool, error)

	// RecordOperatorProject records projectID as the operator project unless one is
	// recorded already, and returns the recorded one. The record is never changed, so
	// concurrent callers all get the first value stored.
	RecordOperatorProject(ctx context.Context, projectID string) (string, error)
}
