-- Settings that the whole store shares, one row per name. A row is inserted once and
-- never updated, so every replica reads the value that the first writer recorded.
-- operator_project_id names the project whose admins manage every project's credentials.
-- The exception is write_check, which every readiness check rewrites to prove that the
-- database commits writes (SQLStore.CheckWrite).
CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
