-- Aliases of the alias API and tags of keys. Times are timestamptz with millisecond
-- precision. DeleteKey removes a key's aliases and tags in its own transaction, before
-- the key row, so the foreign keys never block it.

-- One row per alias. An alias ("alias/<name>") is unique within a project and names one
-- key of that project; associate moves it to another key.
CREATE TABLE aliases (
    project_id TEXT           NOT NULL,
    alias      TEXT           NOT NULL,
    key_id     TEXT           NOT NULL REFERENCES keys (id),
    domain_id  TEXT           NOT NULL,
    created_at TIMESTAMPTZ(3) NOT NULL,
    updated_at TIMESTAMPTZ(3) NOT NULL,
    PRIMARY KEY (project_id, alias)
);

-- list-aliases filters by key, and DeleteKey finds a key's aliases.
CREATE INDEX aliases_key_idx ON aliases (key_id, alias);

-- One row per tag of a key. A tag key is unique per key. project_id repeats the key's
-- project so that project tags and resource_instances need no join to find them.
CREATE TABLE key_tags (
    key_id     TEXT           NOT NULL REFERENCES keys (id),
    tag_key    TEXT           NOT NULL,
    tag_value  TEXT           NOT NULL,
    project_id TEXT           NOT NULL,
    created_at TIMESTAMPTZ(3) NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);

-- Project tags and resource_instances look tags up by project and tag key.
CREATE INDEX key_tags_project_idx ON key_tags (project_id, tag_key, tag_value);
