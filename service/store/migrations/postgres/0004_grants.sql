-- Grants: permissions on one key given to a user or a domain. Times are timestamptz with
-- millisecond precision, as in the first migration.

-- One row per grant. The store removes a key's grants in the transaction that removes
-- the key row. operations is a comma-separated list of operation names, none of which
-- contains a comma.
CREATE TABLE grants (
    id                 TEXT           NOT NULL PRIMARY KEY,
    key_id             TEXT           NOT NULL REFERENCES keys (id),
    project_id         TEXT           NOT NULL,
    name               TEXT           NOT NULL DEFAULT '',
    grantee_type       TEXT           NOT NULL CHECK (grantee_type IN ('user', 'domain')),
    grantee            TEXT           NOT NULL,
    retiring_principal TEXT           NOT NULL DEFAULT '',
    issuing_principal  TEXT           NOT NULL DEFAULT '',
    operations         TEXT           NOT NULL,
    created_at         TIMESTAMPTZ(3) NOT NULL
);

-- list-grants pages a key's grants in creation order, and authorization looks up the
-- grants of one grantee on one key.
CREATE INDEX grants_key_created_idx ON grants (key_id, created_at, id);
CREATE INDEX grants_key_grantee_idx ON grants (key_id, grantee_type, grantee);

-- Authorization checks whether a grantee holds any grant in a project.
CREATE INDEX grants_project_grantee_idx ON grants (project_id, grantee_type, grantee);

-- list-retirable-grants pages the grants that one principal may retire.
CREATE INDEX grants_project_retiring_idx ON grants (project_id, retiring_principal, created_at, id)
    WHERE retiring_principal <> '';
