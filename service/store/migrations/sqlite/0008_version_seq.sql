-- seq numbers the key versions in the order in which the store recorded them
-- (BeginKeyVersion), so the newest version is the one with the highest seq whatever the
-- clock that stamped created_at. created_at stays that clock's reading. SQLite cannot
-- add a column whose default is computed, so the trigger below numbers each new row.
ALTER TABLE key_versions ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;

-- The existing rows are numbered 1 to n in created_at order, the order that
-- ActiveVersions used before this migration, so the newest version stays the same.
UPDATE key_versions SET seq = ordered.n
FROM (
    SELECT key_id, version,
           row_number() OVER (ORDER BY created_at, key_id, version) AS n
    FROM key_versions
) AS ordered
WHERE key_versions.key_id = ordered.key_id AND key_versions.version = ordered.version;

-- ActiveVersions reads the versions by seq, newest first, and the trigger reads the
-- highest seq. The created_at index of 0007 stays for older builds.
CREATE UNIQUE INDEX key_versions_seq_idx ON key_versions (seq);

-- Numbers each inserted row after every row in the table, whichever build inserts it.
-- Writers take the database's write lock one at a time, so no two rows get the same
-- number. After DeleteKey removes the row with the highest seq, the next row gets that
-- number again, which still puts it after every row left.
CREATE TRIGGER key_versions_seq_insert AFTER INSERT ON key_versions
BEGIN
    UPDATE key_versions SET seq = (SELECT MAX(seq) FROM key_versions) + 1
    WHERE key_id = NEW.key_id AND version = NEW.version;
END;
