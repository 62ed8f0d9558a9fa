package main

import (
	"io"
	"log/slog"
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
		{"listen port out of range", []string{"--listen", "127.0.0.1:80000"}, nil, "listen"},
		{"listen port with a sign", []string{"--listen", "127.0.0.1:+5"}, nil, "listen"},
		{"pprof port out of range", []string{"--pprof-listen", "127.0.0.1:65536"}, nil,
			"pprof_listen"},
		{"pprof not on loopback", []string{"--pprof-listen", "0.0.0.0:6060"}, nil,
			"loopback"},
		{"keyword/value database URL", nil,
			map[string]string{"KMS_DATABASE_URL": "host=db password=pw"}, "keyword/value"},
		{"metrics port out of range", []string{"--metrics-listen", "127.0.0.1:-1"}, nil,
			"metrics_listen"},
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

func TestConfigFileValueTypes(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr string // empty for a file that loads
		check   func(config) bool
	}{
		{"string", `{"token_label":"a\"b"}`, "",
			func(c config) bool { return c.TokenLabel == `a"b` }},
		{"number for a whole number", `{"max_sessions":4}`, "",
			func(c config) bool { return c.MaxSessions == 4 }},
		{"digits for a whole number", `{"max_sessions":"4"}`, "",
			func(c config) bool { return c.MaxSessions == 4 }},
		{"boolean", `{"audit":false}`, "", func(c config) bool { return !c.Audit }},
		{"duration string", `{"key_cache_ttl":"2s"}`, "",
			func(c config) bool { return c.KeyCacheTTL == 2*time.Second }},
		{"null string", `{"token_label":null}`, "token_label: invalid value null", nil},
		{"number for a string", `{"region":5}`, "region: invalid value of type number", nil},
		{"array for a string", `{"region":["a"]}`, "region: invalid value of type array", nil},
		{"object for a number", `{"max_sessions":{}}`, "max_sessions: invalid value of type object", nil},
		{"number for a duration", `{"key_cache_ttl":2}`, `with a unit, such as "5s"`, nil},
		{"string for a boolean", `{"audit":"yes"}`, "invalid boolean", nil},
		{"number for a boolean", `{"audit":1}`, "expected true or false", nil},
		{"null file", `null`, "is not a JSON object", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "kmsd.json")
			if err := os.WriteFile(file, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}

			cfg, err := loadConfig([]string{"--config", file}, envFrom(nil), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("error = %v, want none", err)
			}
			if !tt.check(cfg) {
				t.Errorf("setting not applied from %s: %+v", tt.file, cfg)
			}
		})
	}
}

func TestConfigMaskDatabaseURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    string
		secrets []string // substrings that must not remain
	}{
		{"userinfo password", "postgres://kms:s3cret@db:5432/kms",
			"postgres://kms:xxxxx@db:5432/kms", []string{"s3cret"}},
		{"password parameter", "postgres://postgres:PW@127.0.0.1:5432/db?sslmode=disable&password=PW2",
			"postgres://postgres:xxxxx@127.0.0.1:5432/db?sslmode=disable&password=xxxxx",
			[]string{"PW@", "PW2"}},
		{"password parameter without userinfo", "postgresql://db/kms?password=PW2&user=kms",
			"postgresql://db/kms?password=xxxxx&user=kms", []string{"PW2"}},
		{"sslpassword parameter", "postgres://kms@db/kms?sslkey=/k.pem&sslpassword=KEYPW",
			"postgres://kms@db/kms?sslkey=/k.pem&sslpassword=xxxxx", []string{"KEYPW"}},
		{"key containing secret", "postgres://db/kms?client_secret=CS&Password=UP",
			"postgres://db/kms?client_secret=xxxxx&Password=xxxxx", []string{"CS", "UP"}},
		{"percent-encoded key", "postgres://db/kms?pass%77ord=ENC",
			"postgres://db/kms?pass%77ord=xxxxx", []string{"ENC"}},
		{"password with unencoded @ ? and /", "postgres://kms:a@b?c/d@db/kms?password=QP",
			"postgres://kms:xxxxx@db/kms?password=xxxxx", []string{"a@b", "c/d", "QP"}},
		{"@ in a query value", "postgres://kms@db/kms?password=QP&application_name=a@b",
			"postgres://kms@db/kms?password=xxxxx&application_name=a@b", []string{"QP"}},
		{"options parameter", "postgres://kms@db/kms?options=-c%20password%3DOPW",
			"postgres://kms@db/kms?options=xxxxx", []string{"OPW"}},
		{"no secret", "postgres://kms@db:5432/kms?sslmode=require",
			"postgres://kms@db:5432/kms?sslmode=require", nil},
		{"SQLite path", "kms-data/kms.db", "kms-data/kms.db", nil},
		{"SQLite parameters", "file:kms.db?mode=rwc&_auth_pass=AP",
			"file:kms.db?mode=rwc&_auth_pass=xxxxx", []string{"AP"}},
		{"SQLCipher key parameter", "file:kms.db?_pragma_key=PK&_foreign_keys=1",
			"file:kms.db?_pragma_key=xxxxx&_foreign_keys=1", []string{"PK"}},
		{"keyword/value string", "host=db user=kms password=KV dbname=kms",
			"host=db user=kms password=xxxxx dbname=kms", []string{"KV"}},
		{"keyword/value quoted", "host=db password = 'a b\\' c' sslpassword=SP",
			"host=db password = xxxxx sslpassword=xxxxx", []string{"a b", "c'", "SP"}},
		{"keyword/value unterminated quote", "password='open to the end",
			"password=xxxxx", []string{"open"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := maskURL(tt.url)
			if got != tt.want {
				t.Errorf("maskURL(%q) = %q, want %q", tt.url, got, tt.want)
			}
			for _, secret := range tt.secrets {
				if strings.Contains(got, secret) {
					t.Errorf("maskURL(%q) = %q, still contains %q", tt.url, got, secret)
				}
			}
		})
	}
}

func TestConfigTokenLabelLength(t *testing.T) {
	tests := []struct {
		label     string
		wantError string // empty for success
	}{
		{strings.Repeat("k", 32), ""},
		{strings.Repeat("k", 33), "longer than the 32 bytes of a PKCS#11 token label"},
		// 11 characters of 3 bytes each: 33 bytes.
		{strings.Repeat("鍵", 11), "is 33 bytes"},
	}
	for _, tt := range tests {
		_, err := loadConfig([]string{"--token-label", tt.label}, envFrom(nil), io.Discard)
		if tt.wantError == "" {
			if err != nil {
				t.Errorf("--token-label of %d bytes: %v", len(tt.label), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantError) {
			t.Errorf("--token-label of %d bytes: error %v, want one containing %q",
				len(tt.label), err, tt.wantError)
		}
	}
}

func TestLoadConfigSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kmsd.json")
	body := `{"max_sessions": 6, "hsm_generates_iv": true, "session_idle_timeout": "2s",
		"token_label": "from-file"}`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(config) bool
	}{
		{"file number", []string{"--config", file}, nil,
			func(c config) bool { return c.MaxSessions == 6 }},
		{"file boolean", []string{"--config", file}, nil,
			func(c config) bool { return c.HSMGeneratesIV }},
		{"file duration", []string{"--config", file}, nil,
			func(c config) bool { return c.SessionIdleTimeout == 2*time.Second }},
		{"environment over file", []string{"--config", file},
			map[string]string{"KMS_TOKEN_LABEL": "from-env"},
			func(c config) bool { return c.TokenLabel == "from-env" }},
		{"flag over environment", []string{"--config", file, "--token-label", "from-flag"},
			map[string]string{"KMS_TOKEN_LABEL": "from-env"},
			func(c config) bool { return c.TokenLabel == "from-flag" }},
		{"environment duration", nil, map[string]string{"KMS_SESSION_IDLE_TIMEOUT": "90s"},
			func(c config) bool { return c.SessionIdleTimeout == 90*time.Second }},
		{"config file from environment", nil, map[string]string{"KMS_CONFIG": file},
			func(c config) bool { return c.TokenLabel == "from-file" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(tt.args, envFrom(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("config = %+v", cfg)
			}
		})
	}
}

func TestLoadConfigRejectsBadValues(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		args      []string
		env       map[string]string
		wantField string
	}{
		{"file bad boolean", `{"hsm_generates_iv": "sometimes"}`, nil, nil, "hsm_generates_iv"},
		{"file bad number", `{"max_sessions": "eight"}`, nil, nil, "max_sessions"},
		{"file not an object", `["listen"]`, nil, nil, "not a JSON object"},
		{"missing file", "", []string{"--config", "/nonexistent/kmsd.json"}, nil,
			"/nonexistent/kmsd.json"},
		{"negative idle timeout", "", []string{"--session-idle-timeout", "-1s"}, nil,
			"session_idle_timeout"},
		{"zero shutdown timeout", "", nil, map[string]string{"KMS_SHUTDOWN_TIMEOUT": "0s"},
			"shutdown_timeout"},
		{"request timeout too short", "", []string{"--request-timeout", "500ms"}, nil,
			"request_timeout"},
		{"request timeout past the write timeout", "", nil,
			map[string]string{"KMS_REQUEST_TIMEOUT": "26s"}, "request_timeout"},
		{"bad log format", "", nil, map[string]string{"KMS_LOG_FORMAT": "xml"}, "log_format"},
		{"body limit too small", "", []string{"--max-body-bytes", "10"}, nil, "max_body_bytes"},
		{"unknown flag", "", []string{"--pin", "1234"}, nil, "pin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				path := filepath.Join(t.TempDir(), "kmsd.json")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", path}, args...)
			}

			_, err := loadConfig(args, envFrom(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("error = %v, want one naming %s", err, tt.wantField)
			}
		})
	}
}

func TestConfigLogValuesListEverySetting(t *testing.T) {
	cfg := defaultConfig()
	cfg.DatabaseURL = "postgres://kms:s3cret@127.0.0.1:5432/kms?password=s3cret2"

	values := cfg.logValues()
	logged := map[string]any{}
	for i := 0; i+1 < len(values); i += 2 {
		logged[values[i].(string)] = values[i+1]
	}

	for name := range fieldsByTag("json") {
		if _, ok := logged[name]; !ok {
			t.Errorf("logValues has no %s", name)
		}
	}
	if got := logged["database_url"].(string); strings.Contains(got, "s3cret") {
		t.Errorf("database_url logged with a password: %s", got)
	}
	if got := logged["shutdown_timeout"]; got != "35s" {
		t.Errorf("shutdown_timeout logged as %v, want 35s", got)
	}
}

func TestConfigLogValuesAbsolutePaths(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.DataDir = "kms-data"
	cfg.DatabaseURL = filepath.Join("kms-data", "kms.db")

	values := cfg.logValues()
	logged := map[string]any{}
	for i := 0; i+1 < len(values); i += 2 {
		logged[values[i].(string)] = values[i+1]
	}

	if got, want := logged["data_dir"], filepath.Join(wd, "kms-data"); got != want {
		t.Errorf("data_dir logged as %v, want %s", got, want)
	}
	if got, want := logged["database_url"], filepath.Join(wd, "kms-data", "kms.db"); got != want {
		t.Errorf("database_url logged as %v, want %s", got, want)
	}
}

func TestTrustedProxiesValidation(t *testing.T) {
	for _, tc := range []struct {
		value    string
		networks int
		ok       bool
	}{
		{"", 0, true},
		{"10.0.0.0/8", 1, true},
		{"10.0.0.0/8, 127.0.0.1,::1", 3, true},
		{"fd00::/8", 1, true},
		{"proxy.example", 0, false},
		{"10.0.0.0/33", 0, false},
	} {
		_, err := loadConfig([]string{"--trusted-proxies", tc.value}, envFrom(nil), io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("--trusted-proxies %q: error %v, want ok=%v", tc.value, err, tc.ok)
		}
		networks, _ := parseTrustedProxies(tc.value)
		if tc.ok && len(networks) != tc.networks {
			t.Errorf("--trusted-proxies %q: %d networks, want %d", tc.value, len(networks),
				tc.networks)
		}
	}
}

func TestBooleanFlags(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantFsync bool
		wantLevel string
		wantError string // empty for success
	}{
		{"alone means true", []string{"--audit-fsync", "--log-level", "warn"}, true, "warn", ""},
		{"value after =", []string{"--audit-fsync=false", "--log-level", "warn"}, false, "warn", ""},
		{"true after =", []string{"--audit-fsync=true"}, true, "info", ""},
		{"value after a space", []string{"--audit-fsync", "false"}, false, "",
			"give the boolean flag --audit-fsync its value with =, as in --audit-fsync=false"},
		{"invalid value", []string{"--audit-fsync=maybe"}, false, "",
			`flag --audit-fsync: invalid boolean "maybe"`},
		{"stray word", []string{"--log-level", "warn", "extra"}, false, "",
			`unexpected argument "extra": kmsd takes only flags`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, ok := loadConfigCase(t, tt.args, tt.wantError)
			if !ok {
				return
			}
			if cfg.AuditFsync != tt.wantFsync {
				t.Errorf("audit_fsync %v, want %v", cfg.AuditFsync, tt.wantFsync)
			}
			if cfg.LogLevel != tt.wantLevel {
				t.Errorf("log_level %q, want %q", cfg.LogLevel, tt.wantLevel)
			}
		})
	}
}

func TestTrustsEveryAddress(t *testing.T) {
	// Networks of every IPv4 address but 255.255.255.255: each one halves what is left.
	const allButLastIPv4 = "0.0.0.0/1,128.0.0.0/2,192.0.0.0/3,224.0.0.0/4,240.0.0.0/5," +
		"248.0.0.0/6,252.0.0.0/7,254.0.0.0/8,255.0.0.0/9,255.128.0.0/10,255.192.0.0/11," +
		"255.224.0.0/12,255.240.0.0/13,255.248.0.0/14,255.252.0.0/15,255.254.0.0/16," +
		"255.255.0.0/17,255.255.128.0/18,255.255.192.0/19,255.255.224.0/20," +
		"255.255.240.0/21,255.255.248.0/22,255.255.252.0/23,255.255.254.0/24," +
		"255.255.255.0/25,255.255.255.128/26,255.255.255.192/27,255.255.255.224/28," +
		"255.255.255.240/29,255.255.255.248/30,255.255.255.252/31,255.255.255.254"

	tests := []struct {
		name  string
		value string
		want  bool
	}{
		{"empty", "", false},
		{"private networks", "10.0.0.0/8, 127.0.0.1", false},
		{"half of IPv4", "0.0.0.0/1", false},
		{"every IPv4 address", "0.0.0.0/0", true},
		{"every IPv6 address", "::/0", true},
		{"one network of several", "10.0.0.0/8,0.0.0.0/0", true},
		{"IPv4-mapped network of every IPv4 address", "::ffff:0.0.0.0/96", true},
		{"two halves of IPv4", "0.0.0.0/1,128.0.0.0/1", true},
		{"two halves of IPv6", "::/1,8000::/1", true},
		{"halves with a gap", "0.0.0.0/2,128.0.0.0/1", false},
		{"every IPv4 address but the last", allButLastIPv4, false},
		{"same plus the last address", allButLastIPv4 + ",255.255.255.255", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			networks, err := parseTrustedProxies(tt.value)
			if err != nil {
				t.Fatalf("parseTrustedProxies(%q): %v", tt.value, err)
			}
			if got := trustsEveryAddress(networks); got != tt.want {
				t.Errorf("trustsEveryAddress(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

func TestMaxTokenCallsValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--max-token-calls", "0"}, true},
		{[]string{"--max-token-calls", "8"}, true},
		{[]string{"--max-token-calls", "9"}, false},
		{[]string{"--max-token-calls", "16", "--max-sessions", "16"}, true},
		{[]string{"--max-token-calls", "-1"}, false},
	} {
		_, err := loadConfig(tc.args, envFrom(nil), io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

func TestConfigRiskySettings(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		wantWarning string // empty for none
		wantError   string // empty for a valid configuration
	}{
		{name: "defaults"},
		{name: "Huawei's date window", args: []string{"--auth-window", "15m"}},
		{name: "longer date window", args: []string{"--auth-window", "2h"},
			wantWarning: "auth_window is 2h0m0s"},
		{name: "date window over a day", args: []string{"--auth-window", "240h"},
			wantError: "auth_window: must be 1m to 24h0m0s"},
		{name: "short lockout", args: []string{"--auth-lockout", "1ns"},
			wantWarning: "auth_lockout is 1ns"},
		{name: "many failures", args: []string{"--auth-max-failures", "1000000"},
			wantWarning: "auth_max_failures is 1000000"},
		{name: "large bodies", args: []string{"--max-body-bytes", "2097152"},
			wantWarning: "max_body_bytes is 2097152"},
		{name: "bodies over the limit", args: []string{"--max-body-bytes", "1000000000"},
			wantError: "max_body_bytes: must be 1024 to 67108864"},
		{name: "PostgreSQL with the default timeouts",
			args: []string{"--database", "postgres://kms@127.0.0.1/kms"}},
		{name: "PostgreSQL with a short shutdown",
			args:        []string{"--database", "postgres://kms@127.0.0.1/kms", "--shutdown-timeout", "15s"},
			wantWarning: "shutdown_timeout is 15s"},
		{name: "PostgreSQL with a long request timeout",
			args:        []string{"--database", "postgres://kms@127.0.0.1/kms", "--request-timeout", "20s"},
			wantWarning: "request_timeout (20s)"},
		{name: "SQLite with a short shutdown", args: []string{"--shutdown-timeout", "1s"}},
		{name: "in-memory SQLite", args: []string{"--database", ":memory:"},
			wantWarning: "in-memory SQLite database"},
		{name: "in-memory SQLite file", args: []string{"--database", "file:kms.db?mode=memory"},
			wantWarning: "in-memory SQLite database"},
		{name: "read-only SQLite", args: []string{"--database", "sqlite:kms.db?mode=ro"},
			wantError: "open the SQLite store read-only"},
		{name: "immutable SQLite", args: []string{"--database", "file:kms.db?immutable=1"},
			wantError: "open the SQLite store read-only"},
		{name: "SQLite not immutable", args: []string{"--database", "file:kms.db?immutable=0"}},
		{name: "SQLite URL with another host",
			args:      []string{"--database", "file://db.example/kms.db"},
			wantError: `names the host "db.example"`},
		{name: "repeated SQLite mode",
			args:      []string{"--database", "file:kms.db?mode=memory&mode=rwc"},
			wantError: "sets mode more than once"},
		{name: "SQLite file", args: []string{"--database", "sqlite:kms.db?_busy_timeout=100"}},
		{name: "PostgreSQL URL with one slash",
			args:      []string{"--database", "postgres:/postgres:SECRET9@127.0.0.1/db"},
			wantError: "database_url: starts like a PostgreSQL URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, ok := loadConfigCase(t, tt.args, tt.wantError)
			if !ok {
				return
			}

			warnings := cfg.warnings()
			if tt.wantWarning == "" {
				if len(warnings) != 0 {
					t.Errorf("warnings %q, want none", warnings)
				}
				return
			}
			if len(warnings) != 1 || !strings.Contains(warnings[0], tt.wantWarning) {
				t.Errorf("warnings %q, want one containing %q", warnings, tt.wantWarning)
			}
		})
	}
}

// loadConfigCase loads the configuration of args and fails t unless the error contains
// wantError, or unless there is none when wantError is empty. It returns false when
// loading failed as expected, so the case has nothing more to check.
func loadConfigCase(t *testing.T, args []string, wantError string) (config, bool) {
	t.Helper()

	cfg, err := loadConfig(args, envFrom(nil), io.Discard)
	if wantError != "" {
		if err == nil || !strings.Contains(err.Error(), wantError) {
			t.Fatalf("error %v, want one containing %q", err, wantError)
		}
		return config{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg, true
}

func TestConfigDatabaseURLValidation(t *testing.T) {
	tests := []struct {
		name        string
		databaseURL string
		wantError   string // empty for a valid setting
	}{
		{"relative SQLite path", "./data/kms.db", ""},
		{"absolute SQLite path", "/var/lib/kms/kms.db", ""},
		{"SQLite URI parameters", "file:kms.db?_busy_timeout=5000", ""},
		{"colon in a SQLite file name", "kms:backup.db", ""},
		{"URL-like SQLite path after ./", "./pg:/kms.db", ""},
		{"in-memory SQLite", ":memory:", ""},
		{"PostgreSQL URL", "postgres://kms:PWSECRET@127.0.0.1/db", ""},
		{"PostgreSQL URL, postgresql scheme", "postgresql://kms:PWSECRET@127.0.0.1/db", ""},
		{"short scheme, one slash", "pg:/kms:PWSECRET@127.0.0.1/db",
			"database_url: has an unsupported URL scheme"},
		{"short scheme", "pg://kms:PWSECRET@127.0.0.1/db",
			"database_url: has an unsupported URL scheme"},
		{"encoded colon", "postgresql%3A//kms:PWSECRET@127.0.0.1/db",
			"database_url: has an unsupported URL scheme"},
		{"encoded colon and slashes", "postgres%3A%2F%2Fkms:PWSECRET@127.0.0.1/db",
			"database_url: has an unsupported URL scheme"},
		{"MySQL", "mysql://kms:PWSECRET@127.0.0.1/db",
			"database_url: has an unsupported URL scheme"},
		{"unencoded @ in a PostgreSQL password", "postgres://kms:Se@PWSECRET@127.0.0.1/db",
			"database_url: has more than one \"@\""},
		{"userinfo without scheme", "kms:PWSECRET@127.0.0.1/db",
			"database_url: contains user:password@"},
		{"PostgreSQL scheme with one slash", "postgres:/kms:PWSECRET@127.0.0.1/db",
			"database_url: starts like a PostgreSQL URL"},
		{"PostgreSQL port out of range", "postgres://kms:PWSECRET@127.0.0.1:70000/db",
			"database_url: invalid database URL: invalid port"},
		{"PostgreSQL port not a number", "postgres://kms:PWSECRET@127.0.0.1:x/db",
			"database_url: invalid database URL: invalid port after the host name"},
		{"max_conns given twice", "postgres://kms@127.0.0.1/db?max_conns=2&max_conns=PWSECRET",
			"database_url: max_conns is given more than once"},
		{"connect_timeout not a number",
			"postgres://kms:PWSECRET@127.0.0.1/db?connect_timeout=abc",
			"database_url: invalid database URL: invalid connect_timeout"},
		{"unknown sslmode", "postgres://kms:PWSECRET@127.0.0.1/db?sslmode=bogus",
			"database_url: invalid database URL: failed to configure TLS (sslmode is invalid)"},
		{"unknown target_session_attrs",
			"postgres://kms:PWSECRET@127.0.0.1/db?target_session_attrs=sometimes",
			"database_url: invalid database URL: unknown target_session_attrs value: sometimes"},
		{"secret inside a TLS error",
			"postgres://kms@127.0.0.1/db?sslmode=verify-full&sslrootcert=/nonexistent/PWSECRET.pem" +
				"&sslpassword=PWSECRET",
			"database_url: invalid database URL: failed to configure TLS (unable to read CA file"},
		{"max_conns out of range", "postgres://kms:PWSECRET@127.0.0.1/db?max_conns=1",
			"database_url: max_conns \"1\" in the database URL: expected 2 to 1000"},
	}
	for _, tt := range tests {
		sources := map[string]struct {
			args []string
			env  map[string]string
		}{
			"flag":        {args: []string{"--database", tt.databaseURL}},
			"environment": {env: map[string]string{"KMS_DATABASE_URL": tt.databaseURL}},
		}
		for source, in := range sources {
			t.Run(tt.name+" from "+source, func(t *testing.T) {
				cfg, err := loadConfig(in.args, envFrom(in.env), io.Discard)
				if tt.wantError == "" {
					if err != nil {
						t.Fatalf("loadConfig: %v", err)
					}
					if cfg.DatabaseURL != tt.databaseURL {
						t.Errorf("database_url = %q, want %q", cfg.DatabaseURL, tt.databaseURL)
					}
					return
				}

				if err == nil {
					t.Fatalf("loadConfig accepted %q", tt.databaseURL)
				}
				if !strings.Contains(err.Error(), tt.wantError) {
					t.Errorf("error %q, want one containing %q", err, tt.wantError)
				}
				if strings.Contains(err.Error(), "PWSECRET") {
					t.Errorf("error %q contains the password", err)
				}
			})
		}
	}
}

// TestTokenConfigPINSources checks where the token PIN comes from, and that KMS_PIN and
// a PIN file together are rejected instead of one silently winning.
func TestTokenConfigPINSources(t *testing.T) {
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte("file-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pinFile string
		envPIN  string
		wantPIN string
		wantErr string
	}{
		{"PIN file only", pinFile, "", "file-pin", ""},
		{"KMS_PIN only", "", "env-pin", "env-pin", ""},
		{"both", pinFile, "env-pin", "", "both KMS_PIN and a PIN file"},
		{"neither", "", "", "", "no user PIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config{PKCS11Module: "/opt/vendor/libpkcs11.so", TokenLabel: "kms",
				PINFile: tt.pinFile}
			getenv := func(name string) string {
				if name == "KMS_PIN" {
					return tt.envPIN
				}
				return ""
			}

			hc, err := tokenConfig(cfg, getenv, slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("tokenConfig error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("tokenConfig: %v", err)
			}
			if hc.PIN != tt.wantPIN {
				t.Errorf("PIN = %q, want %q", hc.PIN, tt.wantPIN)
			}
		})
	}
}
