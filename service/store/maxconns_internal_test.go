package store

import (
	"strings"
	"testing"
)

func TestCutMaxConns(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		wantURL string
		wantN   int
		wantErr bool
	}{
		{"absent", "postgres://u@h/db?sslmode=disable", "postgres://u@h/db?sslmode=disable", postgresMaxConns, false},
		{"set", "postgres://u@h/db?max_conns=64&sslmode=disable", "postgres://u@h/db?sslmode=disable", 64, false},
		{"zero", "postgres://u@h/db?max_conns=0", "", 0, true},
		{"one, too few for a key lock and its job", "postgres://u@h/db?max_conns=1", "", 0, true},
		{"two", "postgres://u@h/db?max_conns=2", "postgres://u@h/db", 2, false},
		{"too many", "postgres://u@h/db?max_conns=5000", "", 0, true},
		{"not a number", "postgres://u@h/db?max_conns=lots", "", 0, true},
		{"given twice", "postgres://u@h/db?max_conns=2&max_conns=4", "", 0, true},
		{"encoded space kept", "postgres://u@h/db?max_conns=4&options=-c%20statement_timeout%3D60000",
			"postgres://u@h/db?options=-c%20statement_timeout%3D60000", 4, false},
		{"encoded name", "postgres://u@h/db?max%5Fconns=8&sslmode=disable",
			"postgres://u@h/db?sslmode=disable", 8, false},
		{"userinfo encoding kept", "postgres://u:p%40ss@h/db?sslmode=disable&max_conns=3",
			"postgres://u:p%40ss@h/db?sslmode=disable", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := cutMaxConns(tt.url)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got != tt.wantURL || n != tt.wantN {
				t.Errorf("cutMaxConns = %q, %d; want %q, %d", got, n, tt.wantURL, tt.wantN)
			}
		})
	}
}

func TestCutMaxConnsHidesPassword(t *testing.T) {
	_, _, err := cutMaxConns("postgres://u:s3cret@h/db?max_conns=x")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v, want one without the password", err)
	}
}
