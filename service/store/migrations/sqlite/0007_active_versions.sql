-- The token check reads the newest active key version at start, before each key
-- creation and when a key object is missing, to find a token older than the store.
CREATE INDEX key_versions_active_idx ON key_versions (created_at) WHERE state = 'active';
