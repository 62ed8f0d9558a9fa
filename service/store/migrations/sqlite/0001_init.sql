-- Keys, key versions and credentials. Times are INTEGER milliseconds since the Unix
-- epoch in UTC, and NULL stands for the zero time. Booleans are INTEGER 0 or 1.
-- STRICT makes SQLite reject a value of the wrong type instead of storing it.

-- One row per customer master key. Key material lives in the token: no column holds it.
CREATE TABLE keys (
    id                TEXT    NOT NULL PRIMARY KEY,
    project_id        TEXT    NOT NULL,
    domain_id         TEXT    NOT NULL,
    alias             TEXT    NOT NULL DEFAULT '',
    description       TEXT    NOT NULL DEFAULT '',
    key_spec          TEXT    NOT NULL,
    key_usage         TEXT    NOT NULL,
    origin            TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    deletion_at       INTEGER,
    rotation_enabled  INTEGER NOT NULL DEFAULT 0 CHECK (rotation_enabled IN (0, 1)),
    rotation_interval INTEGER NOT NULL DEFAULT 0,
    last_rotation_at  INTEGER,
    rotation_count    INTEGER NOT NULL DEFAULT 0,
    current_version   INTEGER NOT NULL DEFAULT 0
                      CHECK (current_version BETWEEN 0 AND 4294967295),
    revision          INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL
) STRICT;

-- An alias is unique within a project. Keys without an alias store '' and are exempt.
CREATE UNIQUE INDEX keys_project_alias_idx ON keys (project_id, alias) WHERE alias <> '';

-- ListKeys pages a project's keys in creation order.
CREATE INDEX keys_project_created_idx ON keys (project_id, created_at, id);

-- The deletion and rotation schedulers scan these subsets.
CREATE INDEX keys_deletion_idx ON keys (deletion_at) WHERE state = '4';
CREATE INDEX keys_rotation_idx ON keys (state) WHERE rotation_enabled = 1;

-- One row per token object of a key. A row is written (state 'creating') before its
-- object is generated and may exist before its key row does, so key_id has no foreign key.
CREATE TABLE key_versions (
    key_id     TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    state      TEXT    NOT NULL CHECK (state IN ('creating', 'active', 'destroyed')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) STRICT;

-- Reconciliation looks for versions left in 'creating' by a crash.
CREATE INDEX key_versions_creating_idx ON key_versions (created_at) WHERE state = 'creating';

-- AK/SK credentials. sealed_secret is the secret key sealed by a token key, never the
-- secret key itself.
CREATE TABLE credentials (
    access_key    TEXT    NOT NULL PRIMARY KEY,
    sealed_secret BLOB    NOT NULL,
    user_id       TEXT    NOT NULL,
    project_id    TEXT    NOT NULL,
    domain_id     TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Grants, aliases (the newer alias API), tags and the audit trail arrive in later
-- migrations.
