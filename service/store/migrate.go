package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// migrationFiles contains one directory per dialect, named like the dialect, of files
// named <version>_<name>.sql. Versions are unique and start at 1. Each concern owns its
// version number (0002 lifecycle, 0003 aliases and tags, 0004 grants, 0005 audit,
// 0006 settings), so a
// build may lack a version below one that it has. A lower version that arrives later is
// still applied, because pending compares sets of versions. A migration only adds
// (tables, columns, indexes, triggers) and fills in only the columns that it adds: it
// never drops or rewrites data, so an older build keeps working against a newer schema
// during a rolling upgrade. A new column that an older build does not write gets its
// value from the database: a default, an identity or a trigger.
//
//go:embed migrations
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the migrations of the dialect in version order.
func loadMigrations(dialectName string) ([]migration, error) {
	dir := path.Join("migrations", dialectName)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations of %s: %w", dialectName, err)
	}

	var migrations []migration
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".sql")
		if !ok {
			continue
		}

		number, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(number)
		if !ok || err != nil || version < 1 {
			return nil, fmt.Errorf("migration file %s: name is not <version>_<name>.sql", e.Name())
		}

		body, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		migrations = append(migrations, migration{version: version, name: name, sql: string(body)})
	}

	slices.SortFunc(migrations, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(migrations); i++ {
		if migrations[i].version == migrations[i-1].version {
			return nil, fmt.Errorf("migrations of %s: version %d appears twice", dialectName,
				migrations[i].version)
		}
	}
	return migrations, nil
}

// migrate applies the migrations not yet recorded in schema_migrations, all in one
// transaction, so that a failed migration leaves the schema as it was. Concurrent
// start-ups are serialised: on PostgreSQL by an advisory lock, on SQLite by the write
// lock that BEGIN IMMEDIATE takes. When nothing is pending, migrate only reads, so a
// read-only database opens.
func (s *SQLStore) migrate(ctx context.Context) error {
	migrations, err := loadMigrations(s.d.name)
	if err != nil {
		return err
	}

	applied, err := appliedMigrations(ctx, s.read)
	if err == nil && len(pending(migrations, applied)) == 0 {
		s.warnUnknownMigrations(migrations, applied)
		return nil
	}

	var done []migration
	err = s.inWriteTx(ctx, "migrate schema", func(tx *sql.Tx) error {
		if s.d.lockMigrations != "" {
			if _, err := tx.ExecContext(ctx, s.d.lockMigrations); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
		}

		if _, err := tx.ExecContext(ctx, s.d.migrationsTable); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}

		// Read again under the lock: another process may have migrated meanwhile.
		applied, err = appliedMigrations(ctx, tx)
		if err != nil {
			return err
		}

		done, err = s.applyMigrations(ctx, tx, pending(migrations, applied))
		return err
	})
	if err != nil {
		return err
	}

	for _, m := range done {
		s.log.Info("schema migration applied", "backend", s.d.name, "version", m.version,
			"name", m.name)
	}
	s.warnUnknownMigrations(migrations, applied)
	return nil
}

func (s *SQLStore) applyMigrations(
	ctx context.Context,
	tx *sql.Tx,
	migrations []migration,
) ([]migration, error) {
	insert := s.d.rebind(
		"INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")

	for _, m := range migrations {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("apply migration %d (%s): %w", m.version, m.name, err)
		}
		appliedAt := s.d.timeValue(currentTime())
		if _, err := tx.ExecContext(ctx, insert, m.version, m.name, appliedAt); err != nil {
			return nil, fmt.Errorf("record migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return migrations, nil
}

// appliedMigrations returns the versions recorded in schema_migrations.
func appliedMigrations(ctx context.Context, q querier) ([]int, error) {
	rows, err := q.QueryContext(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()

	var versions []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return versions, nil
}

func pending(migrations []migration, applied []int) []migration {
	var out []migration
	for _, m := range migrations {
		if !slices.Contains(applied, m.version) {
			out = append(out, m)
		}
	}
	return out
}

// warnUnknownMigrations logs versions applied by a newer build. Migrations only add, so
// this build keeps working, but it does not know what the newer tables are for.
func (s *SQLStore) warnUnknownMigrations(migrations []migration, applied []int) {
	known := 0
	if len(migrations) > 0 {
		known = migrations[len(migrations)-1].version
	}
	for _, v := range applied {
		if v > known {
			s.log.Warn("database schema is newer than this build", "backend", s.d.name,
				"schema_version", v, "known_version", known)
		}
	}
}
