package store

import (
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store/storetest"
)

// destructive matches statements that remove stored data or rename what contains it.
// UPDATE is checked by updateStatement instead.
var destructive = regexp.MustCompile(`(?i)\b(DROP|TRUNCATE|DELETE|RENAME)\b`)

// updateStatement matches each UPDATE, and captures its table and the first column that
// it sets when it has the form "UPDATE table SET column =". A migration may update only
// a column that it adds. Only the first assignment of a SET is checked.
var updateStatement = regexp.MustCompile(`(?i)\bUPDATE\b(?:\s+(\w+)\s+SET\s+(\w+)\s*=)?`)

func TestMigrationFiles(t *testing.T) {
	sqlite, err := loadMigrations(sqliteDialect.name)
	if err != nil {
		t.Fatalf("load SQLite migrations: %v", err)
	}
	postgres, err := loadMigrations(postgresDialect.name)
	if err != nil {
		t.Fatalf("load PostgreSQL migrations: %v", err)
	}

	if len(sqlite) != len(postgres) {
		t.Fatalf("SQLite has %d migrations, PostgreSQL %d: every version needs both",
			len(sqlite), len(postgres))
	}
	for i := range sqlite {
		if sqlite[i].name != postgres[i].name {
			t.Errorf("migration %d is %q on SQLite and %q on PostgreSQL", i+1, sqlite[i].name,
				postgres[i].name)
		}
	}

	for _, m := range append(sqlite, postgres...) {
		if loc := destructive.FindStringIndex(m.sql); loc != nil {
			t.Errorf("migration %d (%s) contains %q: migrations only add", m.version, m.name,
				m.sql[loc[0]:loc[1]])
		}
		checkUpdates(t, m)
	}
}

// checkUpdates fails t for each UPDATE of m that sets a column m does not add.
func checkUpdates(t *testing.T, m migration) {
	t.Helper()

	for _, match := range updateStatement.FindAllStringSubmatch(m.sql, -1) {
		table, column := match[1], match[2]
		if table == "" {
			t.Errorf("migration %d (%s) contains an UPDATE that is not of the form "+
				"UPDATE table SET column =", m.version, m.name)
			continue
		}

		added := regexp.MustCompile(`(?i)\bALTER\s+TABLE\s+` + table + `\s+ADD\s+COLUMN\s+` +
			column + `\b`)
		if !added.MatchString(m.sql) {
			t.Errorf("migration %d (%s) updates %s.%s, a column that it does not add: "+
				"migrations only fill in the columns that they add", m.version, m.name, table,
				column)
		}
	}
}

func TestRebind(t *testing.T) {
	tests := []struct {
		name    string
		dialect dialect
		query   string
		want    string
	}{
		{name: "sqlite unchanged", dialect: sqliteDialect, query: "a = ? AND b = ?",
			want: "a = ? AND b = ?"},
		{name: "postgres numbered", dialect: postgresDialect, query: "a = ? AND b = ?",
			want: "a = $1 AND b = $2"},
		{name: "postgres without placeholders", dialect: postgresDialect, query: "SELECT 1",
			want: "SELECT 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.dialect.rebind(tc.query); got != tc.want {
				t.Errorf("rebind(%q) = %q, want %q", tc.query, got, tc.want)
			}
		})
	}
}

// TestMigrationNumbersExistingVersions applies the migrations before 0008 to a new
// database and inserts version rows in another order than their created_at order. Opening
// the store applies 0008, which must number the rows 1 to n in created_at order, then key
// id, then version. A row inserted afterwards must get the next number, both without a
// seq value, as an older build inserts it, and through BeginKeyVersion.
func TestMigrationNumbersExistingVersions(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		ctx := t.Context()
		d, driver := sqliteDialect, "sqlite3"
		if b.Name == storetest.Postgres {
			d, driver = postgresDialect, "pgx"
		}
		db, err := sql.Open(driver, b.URL)
		if err != nil {
			t.Fatalf("open %s directly: %v", b.Name, err)
		}
		t.Cleanup(func() { db.Close() })

		migrateBefore(t, db, d, 8)
		insert := d.rebind(
			"INSERT INTO key_versions (key_id, version, state, created_at) VALUES (?, ?, ?, ?)")
		base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		rows := []struct {
			keyID     string
			version   uint32
			createdAt time.Time
		}{
			{"c", 1, base.Add(2 * time.Minute)},
			{"b", 2, base.Add(time.Minute)},
			{"a", 1, base},
			{"b", 1, base.Add(time.Minute)},
			{"a", 2, base.Add(time.Minute)},
		}
		for _, r := range rows {
			_, err := db.ExecContext(ctx, insert, r.keyID, r.version, VersionActive,
				d.timeValue(r.createdAt))
			if err != nil {
				t.Fatalf("insert version %s/%d: %v", r.keyID, r.version, err)
			}
		}

		s, err := Open(ctx, b.URL, nil)
		if err != nil {
			t.Fatalf("Open with migration 0008 pending: %v", err)
		}
		t.Cleanup(func() { s.Close() })

		want := []string{"a/1 seq 1", "a/2 seq 2", "b/1 seq 3", "b/2 seq 4", "c/1 seq 5"}
		if got := versionSeqs(t, db); !slices.Equal(got, want) {
			t.Errorf("after migration 0008 the versions are %v, want %v", got, want)
		}

		// An hour before every other row, as a replica whose clock runs behind stamps it.
		_, err = db.ExecContext(ctx, insert, "d", 1, VersionCreating,
			d.timeValue(base.Add(-time.Hour)))
		if err != nil {
			t.Fatalf("insert version d/1 without seq: %v", err)
		}
		if err := s.BeginKeyVersion(ctx, "e", 1); err != nil {
			t.Fatalf("BeginKeyVersion(e, 1): %v", err)
		}
		want = append(want, "d/1 seq 6", "e/1 seq 7")
		if got := versionSeqs(t, db); !slices.Equal(got, want) {
			t.Errorf("after two inserts the versions are %v, want %v", got, want)
		}
	})
}

// migrateBefore applies the migrations of d below version to db and records them, as a
// build without the later migrations left the database.
func migrateBefore(t *testing.T, db *sql.DB, d dialect, version int) {
	t.Helper()

	migrations, err := loadMigrations(d.name)
	if err != nil {
		t.Fatalf("load %s migrations: %v", d.name, err)
	}
	if _, err := db.ExecContext(t.Context(), d.migrationsTable); err != nil {
		t.Fatalf("create schema_migrations: %v", err)
	}

	record := d.rebind("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
	for _, m := range migrations {
		if m.version >= version {
			break
		}
		if _, err := db.ExecContext(t.Context(), m.sql); err != nil {
			t.Fatalf("apply migration %d (%s): %v", m.version, m.name, err)
		}
		_, err := db.ExecContext(t.Context(), record, m.version, m.name,
			d.timeValue(time.Now()))
		if err != nil {
			t.Fatalf("record migration %d (%s): %v", m.version, m.name, err)
		}
	}
}

// versionSeqs returns every version row as "key_id/version seq n", in seq order.
func versionSeqs(t *testing.T, db *sql.DB) []string {
	t.Helper()

	rows, err := db.QueryContext(t.Context(),
		"SELECT key_id, version, seq FROM key_versions ORDER BY seq")
	if err != nil {
		t.Fatalf("read key_versions: %v", err)
	}
	defer rows.Close()

	var versions []string
	for rows.Next() {
		var keyID string
		var version, seq int64
		if err := rows.Scan(&keyID, &version, &seq); err != nil {
			t.Fatalf("read key_versions: %v", err)
		}
		versions = append(versions, fmt.Sprintf("%s/%d seq %d", keyID, version, seq))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read key_versions: %v", err)
	}
	return versions
}
