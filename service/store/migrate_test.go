package store

import (
	"regexp"
	"testing"
)

// destructive matches statements that remove or rewrite stored data.
var destructive = regexp.MustCompile(`(?i)\b(DROP|TRUNCATE|DELETE|RENAME|UPDATE)\b`)

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
