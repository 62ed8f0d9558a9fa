package store

import (
	"path/filepath"
	"testing"
)

func TestSQLiteConnectionSettings(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatalf("Open failed: %v", err)
	}
	t.Cleanup(func() { s.Close() })

	// PRAGMA values: synchronous 2 is FULL; busy_timeout is in milliseconds.
	tests := []struct {
		name   string
		pool   string
		pragma string
		want   string
	}{
		{name: "writer journal mode", pool: "write", pragma: "journal_mode", want: "wal"},
		{name: "writer synchronous", pool: "write", pragma: "synchronous", want: "2"},
		{name: "writer foreign keys", pool: "write", pragma: "foreign_keys", want: "1"},
		{name: "writer busy timeout", pool: "write", pragma: "busy_timeout", want: "5000"},
		{name: "writer not query only", pool: "write", pragma: "query_only", want: "0"},
		{name: "reader journal mode", pool: "read", pragma: "journal_mode", want: "wal"},
		{name: "reader foreign keys", pool: "read", pragma: "foreign_keys", want: "1"},
		{name: "reader busy timeout", pool: "read", pragma: "busy_timeout", want: "5000"},
		{name: "reader query only", pool: "read", pragma: "query_only", want: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := s.write
			if tc.pool == "read" {
				db = s.read
			}

			var got string
			if err := db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
			}
			if got != tc.want {
				t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
			}
		})
	}

	if s.write.Stats().MaxOpenConnections != 1 {
		t.Errorf("writer pool allows %d connections, want 1", s.write.Stats().MaxOpenConnections)
	}
}
