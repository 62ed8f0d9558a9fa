package store

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestSecretValues(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want []string
	}{
		{
			name: "password and options, longest first",
			url:  "postgres://kms:pa55word@127.0.0.1/db?options=-c%20app.key%3DS3CRETvalue%20-c%20x%3Don",
			want: []string{"-c app.key=S3CRETvalue -c x=on", "S3CRETvalue", "pa55word"},
		},
		{
			name: "joined -c and double dash",
			url:  "postgres://kms@127.0.0.1/db?options=-capp.a%3Dfirst1%20--app.b%3Dsecond2",
			want: []string{"-capp.a=first1 --app.b=second2", "second2", "first1"},
		},
		{
			name: "escaped space kept in the value",
			url:  "postgres://kms@127.0.0.1/db?options=-c%20app.key%3Dtwo%5C%20words",
			want: []string{`-c app.key=two\ words`, "two words"},
		},
		{
			name: "other run-time parameters are not secret",
			url:  "postgres://kms@127.0.0.1/db?application_name=kmsd-replica&search_path=tenant",
			want: nil,
		},
		{
			name: "short values are left alone",
			url:  "postgres://kms:pw@127.0.0.1/db?options=-c%20x%3Don",
			want: []string{"-c x=on"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(tt.url)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}

			got := secretValues(cfg)
			if !slices.Equal(got, tt.want) {
				t.Errorf("secretValues = %q, want %q", got, tt.want)
			}
		})
	}
}
