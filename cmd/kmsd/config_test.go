package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(nil, envFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q", cfg.Listen)
	}
	if cfg.DataDir != "kms-data" {
		t.Errorf("data_dir = %q", cfg.DataDir)
	}
	if cfg.DatabaseURL != filepath.Join("kms-data", "kms.db") {
		t.Errorf("database_url = %q", cfg.DatabaseURL)
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kmsd.json")
	if err := os.WriteFile(file, []byte(`{"listen":"127.0.0.1:1001","region":"file-1","key_cache_ttl":"3s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envFrom(map[string]string{"KMS_CONFIG": file, "KMS_LISTEN": "127.0.0.1:1002"})

	cfg, err := loadConfig([]string{"--region", "flag-1"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1002" {
		t.Errorf("listen = %q, want the environment's", cfg.Listen)
	}
	if cfg.Region != "flag-1" {
		t.Errorf("region = %q, want the flag's", cfg.Region)
	}
	if cfg.KeyCacheTTL != 3*time.Second {
		t.Errorf("key_cache_ttl = %v, want the file's", cfg.KeyCacheTTL)
	}
}

func TestLoadConfigRejects(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantField string
	}{
		{"bad listen", []string{"--listen", "nope"}, nil, "listen"},
		{"bad duration", nil, map[string]string{"KMS_KEY_CACHE_TTL": "3"}, "KMS_KEY_CACHE_TTL"},
		{"bad number", []string{"--max-sessions", "many"}, nil, "max-sessions"},
		{"too few sessions", []string{"--max-sessions", "1"}, nil, "max_sessions"},
		{"tls cert without key", []string{"--tls-cert", "c.pem"}, nil, "tls_key"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "log_level"},
		{"positional argument", []string{"serve"}, nil, "serve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.args, envFrom(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("error = %v, want one naming %s", err, tt.wantField)
			}
		})
	}
}

func TestConfigFileUnknownSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kmsd.json")
	if err := os.WriteFile(file, []byte(`{"listn":"127.0.0.1:1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig([]string{"--config", file}, envFrom(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "listn") {
		t.Fatalf("error = %v, want one naming listn", err)
	}
}

func TestMaskURL(t *testing.T) {
	got := maskURL("postgres://kms:s3cret@db:5432/kms")
	if strings.Contains(got, "s3cret") {
		t.Fatalf("maskURL left the password: %s", got)
	}
}
