-- The audit trail: one hash chain per replica start, and signed checkpoints over it.
-- Times are INTEGER milliseconds since the Unix epoch in UTC, as in 0001. Hashes are
-- 32-byte SHA-256 values. No column holds a plaintext, a data key, a secret key or a
-- ciphertext. Rows are only ever inserted: nothing updates or deletes them.

-- One row per chain. host and started_at are informational: neither is hashed nor
-- signed, so verification does not depend on them.
CREATE TABLE audit_chains (
    chain_id   TEXT    NOT NULL PRIMARY KEY,
    started_at INTEGER NOT NULL,
    host       TEXT    NOT NULL DEFAULT ''
) STRICT;

-- One row per API call. seq counts from 1 within the chain; prev_hash is empty for
-- seq 1 and the hash of record seq - 1 otherwise. WITHOUT ROWID keeps the rows in the
-- primary key's B-tree, so an insert writes one B-tree instead of a table and an index.
CREATE TABLE audit_records (
    chain_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    time        INTEGER NOT NULL,
    request_id  TEXT    NOT NULL,
    access_key  TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    project_id  TEXT    NOT NULL,
    source_ip   TEXT    NOT NULL,
    operation   TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    key_version INTEGER NOT NULL CHECK (key_version BETWEEN 0 AND 4294967295),
    grant_id    TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    error_code  TEXT    NOT NULL,
    sequence    TEXT    NOT NULL,
    prev_hash   BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    PRIMARY KEY (chain_id, seq)
) STRICT, WITHOUT ROWID;

-- ListAuditChains finds the chains whose audit_chains row is missing by their first
-- record, so that deleting a chain row does not hide its records from verification.
CREATE INDEX audit_records_first_idx ON audit_records (chain_id) WHERE seq = 1;

-- One row per signed checkpoint: an ECDSA P-256 signature by the token key
-- system-audit over (chain_id, seq, record_hash).
CREATE TABLE audit_checkpoints (
    chain_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    record_hash BLOB    NOT NULL,
    signature   BLOB    NOT NULL,
    PRIMARY KEY (chain_id, seq)
) STRICT;
