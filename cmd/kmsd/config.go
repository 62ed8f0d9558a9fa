package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// config is every setting of kmsd. Each field has a flag, a KMS_* environment variable
// and a key in the optional JSON config file; the precedence is flag, then environment,
// then config file, then the default.
type config struct {
	DataDir     string `json:"data_dir" env:"KMS_DATA_DIR" flag:"data-dir" help:"data directory of the embedded default: token, PINs, SQLite file, admin credentials"`
	Listen      string `json:"listen" env:"KMS_LISTEN" flag:"listen" help:"address to serve HTTP(S) on"`
	DatabaseURL string `json:"database_url" env:"KMS_DATABASE_URL" flag:"database" help:"metadata store: a SQLite file path or a postgres:// URL (default <data-dir>/kms.db)"`

	PKCS11Module   string `json:"pkcs11_module" env:"KMS_PKCS11_MODULE" flag:"pkcs11-module" help:"PKCS#11 library path; empty selects the embedded SoftHSM2 token in the data directory"`
	TokenLabel     string `json:"token_label" env:"KMS_TOKEN_LABEL" flag:"token-label" help:"label of the PKCS#11 token to use"`
	PINFile        string `json:"pin_file" env:"KMS_PIN_FILE" flag:"pin-file" help:"file holding the token user PIN (the PIN itself may come from KMS_PIN, never from a flag)"`
	MaxSessions    int    `json:"max_sessions" env:"KMS_MAX_SESSIONS" flag:"max-sessions" help:"PKCS#11 sessions in the pool"`
	MaxTokenCalls  int    `json:"max_token_calls" env:"KMS_MAX_TOKEN_CALLS" flag:"max-token-calls" help:"token calls in progress at once, the rest wait in arrival order; 0: 1 for the embedded SoftHSM2 token, whose operations contend for process-wide locks, and max_sessions for a vendor module"`
	HSMGeneratesIV bool   `json:"hsm_generates_iv" env:"KMS_HSM_GENERATES_IV" flag:"hsm-generates-iv" help:"let the token choose GCM IVs (HSMs in FIPS mode)"`

	AcceptRestoredToken string `json:"accept_restored_token" env:"KMS_ACCEPT_RESTORED_TOKEN" flag:"accept-restored-token" help:"accept a token restored from a backup after the live token was lost: the key version that kmsd names when it finds the token older than the store; the key versions the token lacks are then marked lost"`

	SessionIdleTimeout time.Duration `json:"session_idle_timeout" env:"KMS_SESSION_IDLE_TIMEOUT" flag:"session-idle-timeout" help:"close pooled PKCS#11 sessions idle longer than this; set below the idle limit of the HSM or a firewall on the way; 0 keeps them open"`

	TLSCert string `json:"tls_cert" env:"KMS_TLS_CERT" flag:"tls-cert" help:"PEM certificate file; with --tls-key, serve HTTPS"`
	TLSKey  string `json:"tls_key" env:"KMS_TLS_KEY" flag:"tls-key" help:"PEM private key file of --tls-cert"`

	Region             string        `json:"region" env:"KMS_REGION" flag:"region" help:"region id reported in key metadata"`
	KeysPerProject     int           `json:"keys_per_project" env:"KMS_KEYS_PER_PROJECT" flag:"keys-per-project" help:"key quota of each project"`
	MaxOnDemandVersion int           `json:"max_on_demand_version" env:"KMS_MAX_ON_DEMAND_VERSION" flag:"max-on-demand-version" help:"highest key version number that rotate-on-demand creates (scheduled and seal-limit rotations go past it)"`
	GrantsPerKey       int           `json:"grants_per_key" env:"KMS_GRANTS_PER_KEY" flag:"grants-per-key" help:"grant quota of each key"`
	KeyCacheTTL        time.Duration `json:"key_cache_ttl" env:"KMS_KEY_CACHE_TTL" flag:"key-cache-ttl" help:"how long key metadata is served from memory (bounds staleness across replicas)"`
	CredCacheTTL       time.Duration `json:"credential_cache_ttl" env:"KMS_CREDENTIAL_CACHE_TTL" flag:"credential-cache-ttl" help:"how long credentials are served from memory"`
	AuthWindow         time.Duration `json:"auth_window" env:"KMS_AUTH_WINDOW" flag:"auth-window" help:"accepted X-Sdk-Date skew"`
	AuthFailures       int           `json:"auth_max_failures" env:"KMS_AUTH_MAX_FAILURES" flag:"auth-max-failures" help:"consecutive signature failures that lock an access key"`
	AuthLockout        time.Duration `json:"auth_lockout" env:"KMS_AUTH_LOCKOUT" flag:"auth-lockout" help:"how long a locked access key stays locked"`
	MaxBodyBytes       int64         `json:"max_body_bytes" env:"KMS_MAX_BODY_BYTES" flag:"max-body-bytes" help:"largest request body accepted, in bytes"`

	Audit                   bool          `json:"audit" env:"KMS_AUDIT" flag:"audit" help:"record every API call in the tamper-evident audit trail; false turns the trail off"`
	AuditBatchSize          int           `json:"audit_batch_size" env:"KMS_AUDIT_BATCH_SIZE" flag:"audit-batch-size" help:"maximum audit records per commit (database transaction or chain file write)"`
	AuditMaxDelay           time.Duration `json:"audit_max_delay" env:"KMS_AUDIT_MAX_DELAY" flag:"audit-max-delay" help:"how long every audit record waits for others to share its transaction, whatever the load (0: use audit_batch_wait)"`
	AuditBatchWait          time.Duration `json:"audit_batch_wait" env:"KMS_AUDIT_BATCH_WAIT" flag:"audit-batch-wait" help:"with audit_max_delay 0: under heavy load (32 or more client connections, 4 or more records waiting), the longest an audit transaction waits for more records; a lone caller or a few never wait (0: no wait)"`
	AuditFsync              bool          `json:"audit_fsync" env:"KMS_AUDIT_FSYNC" flag:"audit-fsync" help:"on SQLite, fsync every audit commit (survives power loss; about one disk flush per batch); false survives a process crash"`
	AuditCheckpointRecords  int           `json:"audit_checkpoint_records" env:"KMS_AUDIT_CHECKPOINT_RECORDS" flag:"audit-checkpoint-records" help:"audit records between two signed checkpoints"`
	AuditCheckpointInterval time.Duration `json:"audit_checkpoint_interval" env:"KMS_AUDIT_CHECKPOINT_INTERVAL" flag:"audit-checkpoint-interval" help:"maximum time an audit record stays without a signed checkpoint"`

	JobInterval     time.Duration `json:"job_interval" env:"KMS_JOB_INTERVAL" flag:"job-interval" help:"how often the background jobs run: key deletion, scheduled rotation, reconciliation of interrupted key creations, and the seal count flush"`
	SealLimit       int64         `json:"seal_limit" env:"KMS_SEAL_LIMIT" flag:"seal-limit" help:"seals (encryptions) after which a key version is rotated; AES-GCM with random IVs allows 2^32"`
	StaleVersionAge time.Duration `json:"stale_version_age" env:"KMS_STALE_VERSION_AGE" flag:"stale-version-age" help:"age after which reconciliation removes a key version left half-created by a crash"`

	TrustedProxies  string        `json:"trusted_proxies" env:"KMS_TRUSTED_PROXIES" flag:"trusted-proxies" help:"comma-separated addresses or CIDR networks of the reverse proxies in front of kmsd; for calls from them the audit trail records the client address from X-Forwarded-For (empty: the connection's address, and forwarding headers are ignored)"`
	MetricsListen   string        `json:"metrics_listen" env:"KMS_METRICS_LISTEN" flag:"metrics-listen" help:"where GET /metrics is served: empty for the API listener, host:port for a listener of its own, off for nowhere (metrics are unauthenticated)"`
	PprofListen     string        `json:"pprof_listen" env:"KMS_PPROF_LISTEN" flag:"pprof-listen" help:"loopback address serving Go profiles under /debug/pprof/ (empty: off); never expose it, profiles show memory"`
	ShutdownTimeout time.Duration `json:"shutdown_timeout" env:"KMS_SHUTDOWN_TIMEOUT" flag:"shutdown-timeout" help:"how long SIGTERM waits for in-flight requests; with PostgreSQL at least request_timeout plus 20s"`
	RequestTimeout  time.Duration `json:"request_timeout" env:"KMS_REQUEST_TIMEOUT" flag:"request-timeout" help:"with PostgreSQL, how long a call may wait for the database before it gets 503 KMS.0102, 1s to 25s"`
	LogLevel        string        `json:"log_level" env:"KMS_LOG_LEVEL" flag:"log-level" help:"debug, info, warn or error"`
	LogFormat       string        `json:"log_format" env:"KMS_LOG_FORMAT" flag:"log-format" help:"text or json"`
}

func defaultConfig() config {
	return config{
		DataDir:            "kms-data",
		Listen:             "127.0.0.1:8080",
		TokenLabel:         "kms",
		MaxSessions:        8,
		Region:             "local-1",
		KeysPerProject:     20,
		MaxOnDemandVersion: service.DefaultMaxOnDemandVersion,
		GrantsPerKey:       100,
		KeyCacheTTL:        time.Second,
		CredCacheTTL:       5 * time.Second,
		AuthWindow:         15 * time.Minute,
		AuthFailures:       5,
		AuthLockout:        5 * time.Minute,
		MaxBodyBytes:       64 << 10,
		ShutdownTimeout:    35 * time.Second,
		RequestTimeout:     defaultRequestTimeout,
		JobInterval:        time.Minute,
		SealLimit:          int64(service.DefaultSealLimit),
		StaleVersionAge:    15 * time.Minute,
		LogLevel:           "info",
		LogFormat:          "text",

		Audit:                   true,
		AuditBatchSize:          audit.DefaultBatchSize,
		AuditMaxDelay:           audit.DefaultMaxDelay,
		AuditBatchWait:          audit.DefaultBatchWait,
		AuditCheckpointRecords:  audit.DefaultCheckpointRecords,
		AuditCheckpointInterval: audit.DefaultCheckpointInterval,
	}
}

// usageText is the start of the usage that -h and --help print, before the flags.
const usageText = `Usage: kmsd [flags]

kmsd is the key management server. With no flags it runs the embedded default: a
SoftHSM2 token and a SQLite file in ./kms-data, serving on 127.0.0.1:8080.

Every setting is a flag, a KMS_* environment variable and a key of the JSON file named
by --config. A flag wins over the environment, which wins over the file. A boolean flag
alone means true, and it takes a value only with "=", as in --audit=false. Flags start
with - or --.

Flags:
`

// loadConfig applies the config file, the environment and the flags over the defaults,
// in that order, and validates the result.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()

	fs := flag.NewFlagSet("kmsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", getenv("KMS_CONFIG"), "optional JSON config file (env KMS_CONFIG)")
	set := registerFlags(fs)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		previous := ""
		if i := len(args) - fs.NArg() - 1; i >= 0 {
			previous = args[i]
		}
		_, err := strconv.ParseBool(fs.Arg(0))
		if err == nil && strings.HasPrefix(previous, "-") && !strings.Contains(previous, "=") {
			return config{}, fmt.Errorf("unexpected argument %q: give the boolean flag %s its "+
				"value with =, as in %s=%s", fs.Arg(0), previous, previous, fs.Arg(0))
		}
		return config{}, fmt.Errorf("unexpected argument %q: kmsd takes only flags", fs.Arg(0))
	}

	if *configFile != "" {
		if err := readConfigFile(*configFile, &cfg); err != nil {
			return config{}, err
		}
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return config{}, err
	}
	if err := set(&cfg); err != nil {
		return config{}, err
	}

	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = filepath.Join(cfg.DataDir, "kms.db")
	}
	return cfg, cfg.validate()
}

func readConfigFile(path string, cfg *config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}

	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("config file %s is not a JSON object: %w", path, err)
	}
	if raw == nil {
		return fmt.Errorf("config file %s is not a JSON object: it is null", path)
	}

	fields := fieldsByTag("json")
	for name, value := range raw {
		f, ok := fields[name]
		if !ok {
			return fmt.Errorf("config file %s: unknown setting %q", path, name)
		}
		text, err := configText(value, f.value(cfg))
		if err == nil {
			err = setField(f.value(cfg), text)
		}
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
	}
	return nil
}

// configText returns the text that setField takes for raw, the JSON value of a setting
// whose field is v in a config file. Every setting takes a JSON string, a whole-number
// setting also a JSON number and a boolean one true or false. Any other JSON type, null
// included, is an error.
func configText(raw json.RawMessage, v reflect.Value) (string, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var value any
	if err := decoder.Decode(&value); err != nil {
		return "", fmt.Errorf("invalid JSON value: %w", err)
	}

	isWholeNumber := v.Type() != durationType && (v.Kind() == reflect.Int ||
		v.Kind() == reflect.Int64)
	switch x := value.(type) {
	case string:
		return x, nil
	case json.Number:
		if isWholeNumber {
			return x.String(), nil
		}
	case bool:
		if v.Kind() == reflect.Bool {
			return strconv.FormatBool(x), nil
		}
	}

	want := "a JSON string"
	switch {
	case v.Type() == durationType:
		want = `a JSON string with a unit, such as "5s"`
	case isWholeNumber:
		want = "a JSON number or string of digits"
	case v.Kind() == reflect.Bool:
		want = "true or false"
	}
	return "", fmt.Errorf("invalid value %s: expected %s", jsonKind(value), want)
}

// jsonKind names the JSON type of a value that encoding/json decoded into an any, with
// numbers as json.Number.
func jsonKind(value any) string {
	switch value.(type) {
	case nil:
		return "null"
	case string:
		return "of type string"
	case json.Number:
		return "of type number"
	case bool:
		return "of type boolean"
	case []any:
		return "of type array"
	default:
		return "of type object"
	}
}

func applyEnv(cfg *config, getenv func(string) string) error {
	for name, f := range fieldsByTag("env") {
		v := getenv(name)
		if v == "" {
			continue
		}
		if err := setField(f.value(cfg), v); err != nil {
			return fmt.Errorf("environment variable %s: %w", name, err)
		}
	}
	return nil
}

// registerFlags defines one flag per config field. Flags are parsed as strings and
// applied after the environment, so that a flag always wins. A boolean field's flag
// alone means true, and it takes a value only with "=" (--audit-fsync=false), as in Go's
// flag package.
func registerFlags(fs *flag.FlagSet) func(*config) error {
	values := map[string]*string{}
	fields := fieldsByTag("flag")
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)

	def := defaultConfig()
	for _, name := range names {
		f := fields[name]
		usage := fmt.Sprintf("%s (env %s)", f.field.Tag.Get("help"), f.field.Tag.Get("env"))
		usage += defaultNote(f.value(&def))
		if f.field.Type.Kind() == reflect.Bool {
			value := &boolFlag{}
			fs.Var(value, name, usage)
			values[name] = &value.text
			continue
		}
		values[name] = fs.String(name, "", usage)
	}

	return func(cfg *config) error {
		var err error
		fs.Visit(func(fl *flag.Flag) {
			f, ok := fields[fl.Name]
			if !ok || err != nil {
				return
			}
			if e := setField(f.value(cfg), *values[fl.Name]); e != nil {
				err = fmt.Errorf("flag --%s: %w", fl.Name, e)
			}
		})
		return err
	}
}

// boolFlag is the flag.Value of a boolean field. It keeps the text for setField, which
// reports an invalid value with the field's name.
type boolFlag struct{ text string }

func (b *boolFlag) String() string     { return b.text }
func (b *boolFlag) Set(s string) error { b.text = s; return nil }

// IsBoolFlag makes the flag package accept the flag without a value, as "true".
func (b *boolFlag) IsBoolFlag() bool { return true }

func defaultNote(v reflect.Value) string {
	if v.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (default %v)", v.Interface())
}

type configField struct {
	field reflect.StructField
	index int
}

func (f configField) value(cfg *config) reflect.Value {
	return reflect.ValueOf(cfg).Elem().Field(f.index)
}

func fieldsByTag(tag string) map[string]configField {
	t := reflect.TypeOf(config{})
	out := make(map[string]configField, t.NumField())
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get(tag); name != "" {
			out[name] = configField{field: t.Field(i), index: i}
		}
	}
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

func setField(v reflect.Value, text string) error {
	text = strings.TrimSpace(text)
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("invalid duration %q (use a unit, for example 5s or 2m)", text)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(text)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid whole number %q", text)
		}
		v.SetInt(n)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("invalid boolean %q (use true or false)", text)
		}
		v.SetBool(b)
	default:
		return errors.New("unsupported setting type")
	}
	return nil
}

// Limits of settings that weaken kmsd far beyond any use: a date window of a day lets a
// captured request be replayed for that long, and each request may hold its body in
// memory.
const (
	maxAuthWindow     = 24 * time.Hour
	maxBodyBytesLimit = 64 << 20
)

// A call on a PostgreSQL store waits for the database at most request_timeout, so that a
// database that hangs with its connections open costs a caller 503 KMS.0102 instead of a
// wait as long as the hang. With the up to 20 s that the audit
// record of the call may then wait, the maximum stays inside the HTTP server's 60 s
// write timeout (listenAndServe), so the caller still gets its response.
const (
	defaultRequestTimeout = 10 * time.Second
	maxRequestTimeout     = 25 * time.Second
)

// auditRecordWait is how long the audit record of a finished call may wait for the
// database: twice the trail's write timeout (audit.Trail.Record). So a call on
// PostgreSQL can take request_timeout plus auditRecordWait, and a shutdown that waits
// less may close it without its response.
const auditRecordWait = 2 * audit.DefaultWriteTimeout

// Thresholds above or below which a setting is accepted with a warning at start
// (warnings): Huawei's values for the date window and the lockout, and a body limit well
// above the largest API request, an encrypt-data call of 4096 bytes.
const (
	warnAuthWindow   = 15 * time.Minute
	warnAuthLockout  = time.Minute
	warnAuthFailures = 10
	warnMaxBodyBytes = 1 << 20
)

// warnings returns one message for each setting that is valid but weakens kmsd: a longer
// date window, a shorter lockout or more failures before it than Huawei's, a body limit
// above 1 MiB, and a PostgreSQL store whose shutdown waits less than its longest call.
func (c config) warnings() []string {
	var msgs []string
	if c.AuthWindow > warnAuthWindow {
		msgs = append(msgs, fmt.Sprintf("auth_window is %s: a captured request can be "+
			"replayed for that long, against %s at Huawei", c.AuthWindow, warnAuthWindow))
	}
	if c.AuthLockout < warnAuthLockout {
		msgs = append(msgs, fmt.Sprintf("auth_lockout is %s: guessing a secret key is "+
			"slowed by less than a minute per %d failures", c.AuthLockout, c.AuthFailures))
	}
	if c.AuthFailures > warnAuthFailures {
		msgs = append(msgs, fmt.Sprintf("auth_max_failures is %d: an access key locks only "+
			"after that many failed signatures, against 5 at Huawei", c.AuthFailures))
	}
	if c.MaxBodyBytes > warnMaxBodyBytes {
		msgs = append(msgs, fmt.Sprintf("max_body_bytes is %d: each request may hold that "+
			"much memory, while API requests need at most a few KiB", c.MaxBodyBytes))
	}
	if store.IsPostgresURL(c.DatabaseURL) && c.ShutdownTimeout < c.RequestTimeout+auditRecordWait {
		msgs = append(msgs, fmt.Sprintf("shutdown_timeout is %s: while the database hangs, a "+
			"call can take request_timeout (%s) plus %s for its audit record, so a shutdown "+
			"may close calls in flight without their responses", c.ShutdownTimeout,
			c.RequestTimeout, auditRecordWait))
	}
	if inMemory, _ := store.SQLiteModes(c.DatabaseURL); inMemory {
		msgs = append(msgs, "database_url is an in-memory SQLite database: key metadata, "+
			"credentials and the audit trail are lost when kmsd stops, while the keys stay "+
			"in the token")
	}
	return msgs
}

// maxTokenLabelBytes is the size of the label field of PKCS#11's CK_TOKEN_INFO. A longer
// label is cut to 32 bytes when a token is initialised, and a lookup by the whole label
// then finds no token.
const maxTokenLabelBytes = 32

func (c config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}

	check(validHostPort(c.Listen), "listen: %q is not host:port with a port of 0 to 65535",
		c.Listen)
	check(c.DataDir != "", "data_dir: must not be empty")
	if err := validateDatabaseURL(c.DatabaseURL); err != nil {
		errs = append(errs, err)
	}
	_, readOnly := store.SQLiteModes(c.DatabaseURL)
	check(!readOnly, "database_url: mode=ro and immutable=1 open the SQLite store "+
		"read-only, and kmsd writes to its store; kmsctl's audit commands take such a URL")
	check(c.TokenLabel != "", "token_label: must not be empty")
	check(len(c.TokenLabel) <= maxTokenLabelBytes,
		"token_label: %q is %d bytes, longer than the %d bytes of a PKCS#11 token label",
		c.TokenLabel, len(c.TokenLabel), maxTokenLabelBytes)
	check(c.MaxSessions >= 2 && c.MaxSessions <= 1024, "max_sessions: must be 2 to 1024")
	check(c.MaxTokenCalls >= 0 && c.MaxTokenCalls <= c.MaxSessions,
		"max_token_calls: must be 0 to max_sessions (%d)", c.MaxSessions)
	check(c.SessionIdleTimeout >= 0, "session_idle_timeout: must not be negative")
	check((c.TLSCert == "") == (c.TLSKey == ""), "tls_cert and tls_key: give both or neither")
	if c.TLSCert != "" && c.TLSKey != "" {
		// Loaded here as well as by the listener, so that a wrong file stops kmsd before
		// it creates the data directory and the token. The errors name the files and the
		// mismatch, never key material.
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			errs = append(errs, fmt.Errorf("tls_cert and tls_key: %w", err))
		}
	}
	check(c.KeysPerProject >= 1, "keys_per_project: must be at least 1")
	check(c.MaxOnDemandVersion >= 2 && c.MaxOnDemandVersion <= 100000,
		"max_on_demand_version: must be 2 to 100000")
	check(c.GrantsPerKey >= 1, "grants_per_key: must be at least 1")
	check(c.CredCacheTTL >= 0 && c.CredCacheTTL <= time.Minute, "credential_cache_ttl: must be 0 to 1m")
	check(c.KeyCacheTTL >= 0 && c.KeyCacheTTL <= time.Minute, "key_cache_ttl: must be 0 to 1m")
	check(c.AuthWindow >= time.Minute && c.AuthWindow <= maxAuthWindow,
		"auth_window: must be 1m to %s", maxAuthWindow)
	check(c.AuthFailures >= 1, "auth_max_failures: must be at least 1")
	check(c.AuthLockout >= 0, "auth_lockout: must not be negative")
	check(c.MaxBodyBytes >= 1024 && c.MaxBodyBytes <= maxBodyBytesLimit,
		"max_body_bytes: must be 1024 to %d (%d MiB)", int64(maxBodyBytesLimit),
		maxBodyBytesLimit>>20)
	check(c.ShutdownTimeout > 0, "shutdown_timeout: must be positive")
	check(c.RequestTimeout >= time.Second && c.RequestTimeout <= maxRequestTimeout,
		"request_timeout: must be 1s to %s", maxRequestTimeout)
	check(c.JobInterval >= time.Second, "job_interval: must be at least 1s")
	check(c.SealLimit >= 1 && c.SealLimit <= 1<<32, "seal_limit: must be 1 to 4294967296 (2^32)")
	check(c.StaleVersionAge >= time.Minute, "stale_version_age: must be at least 1m")
	check(c.AuditBatchSize >= 1 && c.AuditBatchSize <= 10000, "audit_batch_size: must be 1 to 10000")
	check(c.AuditMaxDelay >= 0 && c.AuditMaxDelay <= time.Second, "audit_max_delay: must be 0 to 1s")
	check(c.AuditBatchWait >= 0 && c.AuditBatchWait <= time.Second, "audit_batch_wait: must be 0 to 1s")
	check(c.AuditCheckpointRecords >= 1, "audit_checkpoint_records: must be at least 1")
	check(c.AuditCheckpointInterval >= time.Second, "audit_checkpoint_interval: must be at least 1s")
	check(c.LogFormat == "text" || c.LogFormat == "json", "log_format: must be text or json")
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("trusted_proxies: %w", err))
	}
	if c.MetricsListen != "" && c.MetricsListen != "off" {
		check(validHostPort(c.MetricsListen),
			"metrics_listen: %q is not empty, off or host:port with a port of 0 to 65535",
			c.MetricsListen)
	}
	if c.PprofListen != "" {
		if err := checkPprofListen(c.PprofListen); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q must be debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// validHostPort reports whether s is host:port with a port that net.Listen takes: a
// number from 0 to 65535 or a service name listed in /etc/services.
func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil || strings.HasPrefix(port, "+") || strings.HasPrefix(port, "-") {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// checkPprofListen returns an error unless addr is host:port on a loopback address, as
// pprof_listen must be: profiles show memory, secrets included.
func checkPprofListen(addr string) error {
	if !validHostPort(addr) {
		return fmt.Errorf("pprof_listen: %q is not host:port with a port of 0 to 65535", addr)
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("pprof_listen: %q is not a loopback address", addr)
	}
	return nil
}

// validateDatabaseURL rejects a database URL that the store would take for the path of a
// SQLite file although it was meant as a URL, which would put its password into file
// names, errors and logs, and a PostgreSQL URL that pgx cannot parse, such as one with
// port 70000 or sslmode=bogus. The errors leave the URL out.
func validateDatabaseURL(databaseURL string) error {
	switch {
	case store.IsMistypedPostgresURL(databaseURL):
		return errors.New("database_url: starts like a PostgreSQL URL but not with " +
			"postgres:// or postgresql://")
	case store.IsKeywordValueString(databaseURL):
		return errors.New("database_url: is a keyword/value connection string, which is " +
			"not supported: write it as a postgres:// URL, or start a SQLite path that " +
			"contains \"=\" with ./ or sqlite:")
	case store.HasUnencodedAt(databaseURL):
		return errors.New("database_url: has more than one \"@\" before its path: " +
			"write an \"@\" in the user name or password as %40")
	case store.IsUnsupportedURL(databaseURL):
		return errors.New("database_url: has an unsupported URL scheme, plainly or " +
			"percent-encoded: use postgres:// or postgresql:// for PostgreSQL, and a file " +
			"path for SQLite, starting it with ./ if it begins like a URL")
	case store.HasUserinfo(databaseURL):
		return errors.New("database_url: contains user:password@ but is not a " +
			"postgres:// or postgresql:// URL: correct its scheme, or rename a SQLite " +
			"file whose path has \":\" before \"@\"")
	case store.IsPostgresURL(databaseURL):
		if err := store.CheckPostgresURL(databaseURL); err != nil {
			return fmt.Errorf("database_url: %w", err)
		}
	default:
		if err := store.CheckSQLiteURL(databaseURL); err != nil {
			return fmt.Errorf("database_url: %w", err)
		}
	}
	return nil
}

// logValues returns every setting, by its config file key, for the start-up log line.
// No setting holds a secret: the PIN and the admin secret key are only ever read from
// files or the environment and are not part of config. The database URL can hold
// passwords, which maskURL masks.
func (c config) logValues() []any {
	v := reflect.ValueOf(c)
	t := v.Type()

	values := make([]any, 0, 2*t.NumField())
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("json")
		value := v.Field(i).Interface()
		switch {
		case name == "data_dir":
			value = absolutePath(c.DataDir)
		case name == "database_url" && !strings.ContainsAny(c.DatabaseURL, ":?"):
			// A plain SQLite file path, without a scheme or parameters to mask.
			value = absolutePath(c.DatabaseURL)
		case name == "database_url":
			value = maskURL(c.DatabaseURL)
		}
		if d, ok := value.(time.Duration); ok {
			value = d.String()
		}
		values = append(values, name, value)
	}

	return values
}

// absolutePath returns path made absolute, so that a log names the directory that a
// relative path meant at start, or path itself when the working directory is unknown.
func absolutePath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	return abs
}

// maskedValue replaces each secret of a database URL in logs and error messages.
const maskedValue = "xxxxx"

// maskURL returns the database URL s with its secrets replaced by maskedValue: the
// password of the userinfo, and the value of every query parameter whose key is
// secret-bearing (isSecretKey). A libpq keyword/value connection string, which the store
// rejects, gets the same values masked. The masking errs towards hiding too much. In a
// URL with a password, everything from the password to the last "@" is masked, so that
// a password with an unencoded "@", "/" or "?" stays hidden, as does the host when a
// query value contains "@".
func maskURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if store.IsKeywordValueString(s) {
			return maskKeywordValues(s)
		}
		// A SQLite path, with SQLite URI parameters after "?".
		path, query, hasQuery := strings.Cut(s, "?")
		if !hasQuery {
			return s
		}
		return path + "?" + maskQuery(query)
	}

	// The userinfo ends at the last "@". Query masking starts after the masked password,
	// so that a "?" inside the password is not taken for the start of the query.
	queryFrom := 0
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
			rest = rest[:colon+1] + maskedValue + rest[at:]
			queryFrom = colon + 1 + len(maskedValue)
		}
	}
	if q := strings.IndexByte(rest[queryFrom:], '?'); q >= 0 {
		q += queryFrom
		rest = rest[:q+1] + maskQuery(rest[q+1:])
	}
	return scheme + "://" + rest
}

// maskQuery masks the value of each secret-bearing parameter of a URL query, keeping the
// rest of the query as written.
func maskQuery(query string) string {
	params := strings.Split(query, "&")
	for i, param := range params {
		key, _, hasValue := strings.Cut(param, "=")
		name, err := url.QueryUnescape(key)
		if err != nil {
			name = key
		}
		if hasValue && store.IsSecretParam(name) {
			params[i] = key + "=" + maskedValue
		}
	}
	return strings.Join(params, "&")
}

// keywordValuePair matches one keyword = value pair of a libpq connection string. The
// value is single-quoted, with \' and \\ inside, or runs to the next white space. A
// quoted value without its closing quote runs to the end.
var keywordValuePair = regexp.MustCompile(
	`([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

// maskKeywordValues masks the value of each secret-bearing keyword of a libpq
// keyword/value connection string.
func maskKeywordValues(s string) string {
	return keywordValuePair.ReplaceAllStringFunc(s, func(pair string) string {
		m := keywordValuePair.FindStringSubmatch(pair)
		if !store.IsSecretParam(m[1]) {
			return pair
		}
		return m[1] + m[2] + maskedValue
	})
}

// parseTrustedProxies parses a comma-separated list of IP addresses and CIDR networks.
// An address stands for the network of that one address.
// trustsEveryAddress reports whether networks together cover every IPv4 or every IPv6
// address, which makes every client of that family a trusted proxy. It matches addresses
// as net.IPNet.Contains does: an IPv4-mapped network such as ::ffff:0.0.0.0/96 covers
// IPv4 addresses, and ::/0 covers IPv6 addresses only. Networks that cover a family only
// together, such as 0.0.0.0/1 and 128.0.0.0/1, count too.
func trustsEveryAddress(networks []*net.IPNet) bool {
	var v4, v6 []addressRange
	for _, network := range networks {
		// The same reduction as net.IPNet.Contains: an IPv4 or IPv4-mapped network is
		// matched against IPv4 addresses with the last 32 bits of its mask.
		ip, mask := network.IP, network.Mask
		if v4 := ip.To4(); v4 != nil {
			ip = v4
			if len(mask) == net.IPv6len {
				mask = mask[12:]
			}
		}
		addr, ok := netip.AddrFromSlice(ip)
		ones, bits := mask.Size()
		if !ok || bits != 8*len(ip) {
			continue // a mask that is not a prefix, which parseTrustedProxies never makes
		}
		prefix, err := addr.Prefix(ones)
		if err != nil {
			continue
		}
		r := prefixRange(prefix)
		if prefix.Addr().Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return coversFamily(v4, netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})) ||
		coversFamily(v6, netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
			255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}))
}

// addressRange is the closed range of addresses from first to last.
type addressRange struct{ first, last netip.Addr }

// prefixRange returns the first and the last address of p.
func prefixRange(p netip.Prefix) addressRange {
	first := p.Masked().Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return addressRange{first: first, last: last}
}

// coversFamily reports whether the union of ranges runs from first to last without a gap.
func coversFamily(ranges []addressRange, first, last netip.Addr) bool {
	slices.SortFunc(ranges, func(a, b addressRange) int { return a.first.Compare(b.first) })

	next := first // the lowest address not covered so far
	for _, r := range ranges {
		if r.first.Compare(next) > 0 {
			return false
		}
		if r.last.Compare(next) >= 0 {
			if r.last == last {
				return true
			}
			next = r.last.Next()
		}
	}
	return false
}

func parseTrustedProxies(list string) ([]*net.IPNet, error) {
	var networks []*net.IPNet
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			ip := net.ParseIP(item)
			if ip == nil {
				return nil, fmt.Errorf("%q is not an IP address or a CIDR network", item)
			}
			bits := 8 * len(ip.To4())
			if bits == 0 {
				bits = 8 * net.IPv6len
			}
			networks = append(networks, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, network, err := net.ParseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or a CIDR network", item)
		}
		networks = append(networks, network)
	}
	return networks, nil
}
