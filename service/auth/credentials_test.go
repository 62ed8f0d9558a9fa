package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

var (
	generatedAccessKey = regexp.MustCompile(`^[A-Z0-9]{20}$`)
	generatedSecretKey = regexp.MustCompile(`^[A-Za-z0-9]{40}$`)
	generatedID        = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

func TestCredentialsCreateGenerated(t *testing.T) {
	ctx := context.Background()
	creds, st := newTestCredentials(t, nil)

	created, secret, err := creds.Create(ctx, CreateRequest{
		ProjectID: "pid", DomainID: "did", Role: RoleKeyManager,
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !generatedAccessKey.MatchString(created.AccessKey) {
		t.Errorf("access key %q is not 20 upper-case alphanumerics", created.AccessKey)
	}
	if !generatedSecretKey.MatchString(secret) {
		t.Errorf("secret key is not 40 alphanumerics (length %d)", len(secret))
	}
	if !generatedID.MatchString(created.UserID) {
		t.Errorf("user id %q is not 32 lower-case hex digits", created.UserID)
	}

	row, err := st.GetCredential(ctx, created.AccessKey)
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	if bytes.Contains(row.SealedSecret, []byte(secret)) {
		t.Error("stored credential contains the secret key in plaintext")
	}

	principal, got, err := creds.Lookup(ctx, created.AccessKey)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if string(got) != secret {
		t.Error("Lookup returned another secret key than Create")
	}
	if principal != created.Principal {
		t.Errorf("Lookup principal = %+v, expected %+v", principal, created.Principal)
	}
}

func TestCredentialsCreateRejects(t *testing.T) {
	valid := CreateRequest{ProjectID: "pid", DomainID: "did", Role: RoleReadOnly}
	tests := []struct {
		name    string
		change  func(*CreateRequest)
		wantMsg string // empty to check only the error's type
	}{
		{name: "unknown role", change: func(r *CreateRequest) { r.Role = "owner" }},
		{
			name:    "empty project id",
			change:  func(r *CreateRequest) { r.ProjectID = "" },
			wantMsg: "project id is missing",
		},
		{name: "project id with slash", change: func(r *CreateRequest) { r.ProjectID = "a/b" }},
		{
			name:    "empty domain id",
			change:  func(r *CreateRequest) { r.DomainID = "" },
			wantMsg: "domain id is missing",
		},
		{name: "user id too long", change: func(r *CreateRequest) { r.UserID = strings.Repeat("u", 65) }},
		{name: "access key without secret", change: func(r *CreateRequest) { r.AccessKey = "AK" }},
		{name: "secret without access key", change: func(r *CreateRequest) { r.SecretKey = "SK" }},
		{
			name: "access key with comma",
			change: func(r *CreateRequest) {
				r.AccessKey, r.SecretKey = "AK,1", "SK"
			},
		},
		{
			name: "secret key pasted as access key",
			change: func(r *CreateRequest) {
				r.AccessKey, r.SecretKey = "q7Kd2/LmX9+pRt4vWz8bNc1sYh6jFg3aEu", chosenSecret("x")
			},
		},
		{
			name: "generated secret key pasted as access key",
			change: func(r *CreateRequest) {
				r.AccessKey, r.SecretKey = "hONxrYiGIB4SbaFONdw8vWlJklDTJ0ZTnm5dNNF6", chosenSecret("x")
			},
		},
		{
			name: "access key of 32 characters",
			change: func(r *CreateRequest) {
				r.AccessKey, r.SecretKey = strings.Repeat("A", 32), chosenSecret("x")
			},
		},
	}
	creds, _ := newTestCredentials(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid
			tt.change(&req)
			_, _, err := creds.Create(context.Background(), req)
			if !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("Create error = %v, expected %v", err, ErrInvalidCredential)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Create error %q does not contain %q", err, tt.wantMsg)
			}
			// An invalid access key may be a pasted secret key: the error, which
			// reaches the caller and the log, must not repeat it.
			if len(req.AccessKey) > 4 && strings.Contains(err.Error(), req.AccessKey) {
				t.Errorf("Create error %q repeats the access key", err)
			}
		})
	}
}

// chosenSecret returns a caller-chosen secret key that passes validateChosenSecret,
// distinct for each tag.
func chosenSecret(tag string) string {
	return tag + "-q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu"
}

func TestCredentialsCreateRejectsWeakSecret(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		wantErr string // empty when the secret key is accepted
	}{
		{"one character", "%", "shorter than 32 characters"},
		{"31 characters", chosenSecret("")[:31], "shorter than 32 characters"},
		{"40 copies of one letter", strings.Repeat("a", 40), "fewer than 10 distinct characters"},
		{"nine distinct characters", strings.Repeat("abcdefghi", 5), "fewer than 10 distinct characters"},
		// 31 characters of 2 bytes each are 62 bytes, but still too few characters.
		{"31 two-byte characters", strings.Repeat("éèêëàâîïôû", 3) + "ç",
			"shorter than 32 characters"},
		{"NUL character", chosenSecret("a\x00b"), "character 2 of the secret key is a control"},
		{"newline", chosenSecret("ab\n"), "character 3 of the secret key is a control"},
		{"invalid UTF-8", chosenSecret("\xff"), "not valid UTF-8"},
		{"32 characters, ten distinct", strings.Repeat("abcdefghij", 3) + "ab", ""},
		{"40 random characters", testSK, ""},
	}
	creds, _ := newTestCredentials(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, secret, err := creds.Create(context.Background(), CreateRequest{
				ProjectID: "pid", DomainID: "did", Role: RoleReadOnly,
				AccessKey: fmt.Sprintf("CHOSEN%d", i), SecretKey: tt.secret,
			})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				if secret != tt.secret {
					t.Error("Create returned another secret key than the chosen one")
				}
				return
			}

			if !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("Create error = %v, expected %v", err, ErrInvalidCredential)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Create error = %q, expected one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Errorf("Create error %q contains the secret key", err)
			}
		})
	}
}

func TestCredentialsCreateChosenAccessKeyForms(t *testing.T) {
	tests := []struct {
		name      string
		accessKey string
		wantErr   bool
	}{
		{"one dot", ".", true},
		{"two dots", "..", true},
		{"three dots", "...", true},
		{"punctuation only", "-_.", true},
		{"dot and letter", "a.", false},
		{"one digit", "7", false},
		{"letters, digits and punctuation", "Team-1_key.v2", false},
	}
	creds, _ := newTestCredentials(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := creds.Create(context.Background(), CreateRequest{
				ProjectID: "pid", DomainID: "did", Role: RoleReadOnly,
				AccessKey: tt.accessKey, SecretKey: chosenSecret(tt.name),
			})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Create with access key %q: %v", tt.accessKey, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("Create with access key %q: error %v, expected %v", tt.accessKey, err,
					ErrInvalidCredential)
			}
			if !strings.Contains(err.Error(), "at least one letter or digit") {
				t.Errorf("Create error %q does not name the rule", err)
			}
		})
	}
}

// TestGeneratedSecretsPassChosenSecretRules checks that the rules for chosen secret keys
// would accept the generated ones, which skip them.
func TestGeneratedSecretsPassChosenSecretRules(t *testing.T) {
	creds, _ := newTestCredentials(t, nil)
	for range 200 {
		secret, err := creds.randomString(context.Background(), alphanumeric, secretKeyLength)
		if err != nil {
			t.Fatalf("randomString: %v", err)
		}
		if err := validateChosenSecret(secret); err != nil {
			t.Fatalf("a generated secret key fails the rules: %v", err)
		}
	}
}

func TestCredentialsCreateDuplicate(t *testing.T) {
	creds, _ := newTestCredentials(t, nil)
	importCredential(t, creds, "DUPLICATE", chosenSecret("1"))

	_, _, err := creds.Create(context.Background(), CreateRequest{
		ProjectID: "pid", DomainID: "did", Role: RoleReadOnly,
		AccessKey: "DUPLICATE", SecretKey: chosenSecret("2"),
	})
	if !errors.Is(err, ErrAccessKeyExists) {
		t.Errorf("Create error = %v, expected %v", err, ErrAccessKeyExists)
	}
}

func TestCredentialsSealedSecretBoundToAccessKey(t *testing.T) {
	ctx := context.Background()
	creds, st := newTestCredentials(t, nil)
	importCredential(t, creds, "VICTIM", chosenSecret("victim"))
	importCredential(t, creds, "ATTACKER", chosenSecret("attacker"))

	// Copy the victim's sealed secret into a new row under another access key, as a
	// database writer without the token could.
	victim, err := st.GetCredential(ctx, "VICTIM")
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	moved := victim
	moved.AccessKey = "MOVED"
	if err := st.PutCredential(ctx, moved); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}

	_, _, err = creds.Lookup(ctx, "MOVED")
	if !errors.Is(err, hsm.ErrDecrypt) {
		t.Errorf("Lookup error = %v, expected %v", err, hsm.ErrDecrypt)
	}
}

func TestCredentialsList(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	importCredential(t, creds, "BKEY", chosenSecret("b"))
	importCredential(t, creds, "AKEY", chosenSecret("a"))

	list, err := creds.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("List returned %d credentials, expected 2", len(list))
	}
	for i, want := range []string{"AKEY", "BKEY"} {
		if list[i].AccessKey != want {
			t.Errorf("List[%d] access key = %s, expected %s", i, list[i].AccessKey, want)
		}
	}

	encoded, err := json.Marshal(list)
	if err != nil {
		t.Fatalf("marshal list: %v", err)
	}
	for _, secret := range []string{chosenSecret("a"), chosenSecret("b")} {
		if bytes.Contains(encoded, []byte(secret)) {
			t.Errorf("List output contains secret %q", secret)
		}
	}
}

func TestCredentialsDisableEnableDelete(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	importCredential(t, creds, "LIFECYCLE", chosenSecret("lifecycle"))

	if _, _, err := creds.Lookup(ctx, "LIFECYCLE"); err != nil {
		t.Fatalf("Lookup: %v", err)
	}

	if err := creds.Disable(ctx, "LIFECYCLE"); err != nil {
		t.Fatalf("Disable: %v", err)
	}
	if _, _, err := creds.Lookup(ctx, "LIFECYCLE"); !errors.Is(err, ErrDisabledAccessKey) {
		t.Errorf("Lookup after Disable: error = %v, expected %v", err, ErrDisabledAccessKey)
	}

	if err := creds.Enable(ctx, "LIFECYCLE"); err != nil {
		t.Fatalf("Enable: %v", err)
	}
	if _, _, err := creds.Lookup(ctx, "LIFECYCLE"); err != nil {
		t.Errorf("Lookup after Enable: %v", err)
	}

	if err := creds.Delete(ctx, "LIFECYCLE"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := creds.Lookup(ctx, "LIFECYCLE"); !errors.Is(err, ErrUnknownAccessKey) {
		t.Errorf("Lookup after Delete: error = %v, expected %v", err, ErrUnknownAccessKey)
	}
}

func TestCredentialsOnEveryBackend(t *testing.T) {
	storetest.Run(t, func(t *testing.T, backend storetest.Backend) {
		ctx := context.Background()
		creds := NewCredentials(openStore(t, backend.URL), testToken(t), CredentialsConfig{
			Logger: slog.New(slog.DiscardHandler),
		})

		created, secret, err := creds.Create(ctx, CreateRequest{
			ProjectID: "pid", DomainID: "did", Role: RoleAdmin,
		})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}

		_, got, err := creds.Lookup(ctx, created.AccessKey)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if string(got) != secret {
			t.Error("Lookup returned another secret key than Create")
		}

		if err := creds.Disable(ctx, created.AccessKey); err != nil {
			t.Fatalf("Disable: %v", err)
		}
		list, err := creds.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(list) != 1 {
			t.Fatalf("List returned %d credentials, expected 1", len(list))
		}
		if !list[0].Disabled {
			t.Errorf("credential %s is enabled after Disable", list[0].AccessKey)
		}

		if err := creds.Delete(ctx, created.AccessKey); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, _, err := creds.Lookup(ctx, created.AccessKey); !errors.Is(err, ErrUnknownAccessKey) {
			t.Errorf("Lookup after Delete: error = %v, expected %v", err, ErrUnknownAccessKey)
		}
	})
}

func TestCredentialsUnknownAccessKey(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)

	tests := []struct {
		name string
		call func() error
	}{
		{name: "lookup", call: func() error { _, _, err := creds.Lookup(ctx, "MISSING"); return err }},
		{name: "disable", call: func() error { return creds.Disable(ctx, "MISSING") }},
		{name: "enable", call: func() error { return creds.Enable(ctx, "MISSING") }},
		{name: "delete", call: func() error { return creds.Delete(ctx, "MISSING") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrUnknownAccessKey) {
				t.Errorf("error = %v, expected %v", err, ErrUnknownAccessKey)
			}
		})
	}
}

// TestCredentialsCacheBound checks that a credential disabled through another instance
// sharing the store (another replica) is rejected once the cache entry expires.
func TestCredentialsCacheBound(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(testNow)
	replicaA, st := newTestCredentials(t, clock)
	replicaB := NewCredentials(st, testToken(t), CredentialsConfig{
		CacheTTL: 3 * time.Second,
		Clock:    clock.Now,
		Logger:   slog.New(slog.DiscardHandler),
	})
	importCredential(t, replicaA, "SHARED", chosenSecret("shared"))

	if _, _, err := replicaB.Lookup(ctx, "SHARED"); err != nil {
		t.Fatalf("Lookup on replica B: %v", err)
	}
	if err := replicaA.Disable(ctx, "SHARED"); err != nil {
		t.Fatalf("Disable on replica A: %v", err)
	}

	clock.Advance(3*time.Second - time.Millisecond)
	if _, _, err := replicaB.Lookup(ctx, "SHARED"); err != nil {
		t.Errorf("Lookup on replica B within the cache lifetime: %v", err)
	}

	clock.Advance(time.Millisecond)
	if _, _, err := replicaB.Lookup(ctx, "SHARED"); !errors.Is(err, ErrDisabledAccessKey) {
		t.Errorf("Lookup on replica B after the cache lifetime: error = %v, expected %v",
			err, ErrDisabledAccessKey)
	}
}

func TestCredentialsCacheCapacity(t *testing.T) {
	ctx := context.Background()
	st := testStore(t)
	creds := NewCredentials(st, testToken(t), CredentialsConfig{
		MaxCached: 2,
		Logger:    slog.New(slog.DiscardHandler),
	})
	for _, ak := range []string{"CACHE1", "CACHE2", "CACHE3"} {
		importCredential(t, creds, ak, chosenSecret(ak))
		if _, _, err := creds.Lookup(ctx, ak); err != nil {
			t.Fatalf("Lookup %s: %v", ak, err)
		}
	}

	creds.cacheMu.Lock()
	cached := len(creds.cache)
	creds.cacheMu.Unlock()
	if cached > 2 {
		t.Errorf("cache holds %d credentials, expected at most 2", cached)
	}
}

func TestEnsureAdminGenerated(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	dataDir := t.TempDir()

	admin, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin: %v", err)
	}
	if admin.Role != RoleAdmin {
		t.Errorf("role = %q, expected %q", admin.Role, RoleAdmin)
	}

	path := filepath.Join(dataDir, AdminCredentialsFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %o, expected 600", path, mode)
	}

	var file adminFile
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if file.AccessKey != admin.AccessKey {
		t.Errorf("file access_key = %q, expected %q", file.AccessKey, admin.AccessKey)
	}
	if !generatedID.MatchString(file.ProjectID) || file.ProjectID != admin.ProjectID {
		t.Errorf("file project_id = %q, expected 32 hex digits equal to %q", file.ProjectID, admin.ProjectID)
	}
	if !generatedID.MatchString(file.DomainID) || file.DomainID != admin.DomainID {
		t.Errorf("file domain_id = %q, expected 32 hex digits equal to %q", file.DomainID, admin.DomainID)
	}

	_, secret, err := creds.Lookup(ctx, admin.AccessKey)
	if err != nil {
		t.Fatalf("Lookup admin: %v", err)
	}
	if string(secret) != file.SecretKey {
		t.Error("file secret_key does not match the stored secret key")
	}
}

func TestEnsureAdminFromEnvironment(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	dataDir := t.TempDir()
	env := AdminEnvFromGetenv(func(name string) string {
		return map[string]string{
			EnvAdminAccessKey: "ADMINKEY",
			EnvAdminSecretKey: chosenSecret("admin"),
			EnvProjectID:      "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
			EnvDomainID:       "f9e8d7c6b5a4938271605f4e3d2c1b0a",
		}[name]
	})

	admin, err := creds.EnsureAdmin(ctx, dataDir, env)
	if err != nil {
		t.Fatalf("EnsureAdmin: %v", err)
	}
	if admin.AccessKey != "ADMINKEY" || admin.ProjectID != env.ProjectID || admin.DomainID != env.DomainID {
		t.Errorf("admin = %+v, expected the access key and ids of %+v", admin.Principal, env)
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminCredentialsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: error = %v, expected no file for an operator-chosen secret",
			AdminCredentialsFile, err)
	}

	_, secret, err := creds.Lookup(ctx, "ADMINKEY")
	if err != nil {
		t.Fatalf("Lookup admin: %v", err)
	}
	if string(secret) != chosenSecret("admin") {
		t.Error("stored secret key differs from KMS_ADMIN_SECRET_KEY")
	}
}

func TestEnsureAdminRejectsWeakSecret(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	dataDir := t.TempDir()
	weak := strings.Repeat("A", 40)

	_, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{AccessKey: "ADMINKEY", SecretKey: weak})
	if !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("EnsureAdmin error = %v, expected %v", err, ErrInvalidCredential)
	}
	if strings.Contains(err.Error(), weak) {
		t.Errorf("EnsureAdmin error %q contains the secret key", err)
	}

	list, err := creds.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("store holds %d credentials, expected none", len(list))
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminCredentialsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: error = %v, expected no file", AdminCredentialsFile, err)
	}
}

func TestEnsureAdminKeepsExisting(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	dataDir := t.TempDir()

	first, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	second, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{AccessKey: "OTHER", SecretKey: chosenSecret("other")})
	if err != nil {
		t.Fatalf("second EnsureAdmin: %v", err)
	}
	if second.AccessKey != first.AccessKey {
		t.Errorf("second EnsureAdmin returned %s, expected the existing %s", second.AccessKey, first.AccessKey)
	}

	list, err := creds.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 {
		t.Errorf("store holds %d credentials, expected 1", len(list))
	}
}

// TestEnsureAdminReturnsOldestAdmin checks that a later admin whose access key sorts
// first does not replace the bootstrap admin, whose project is the operator project.
func TestEnsureAdminReturnsOldestAdmin(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	creds, _ := newTestCredentials(t, clock)
	dataDir := t.TempDir()

	bootstrap, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{
		AccessKey: "ZZZBOOTSTRAP", SecretKey: chosenSecret("bootstrap"), ProjectID: "operator",
		DomainID: "domain",
	})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}

	clock.Advance(time.Minute)
	_, _, err = creds.Create(ctx, CreateRequest{
		ProjectID: "tenant", DomainID: "domain", Role: RoleAdmin,
		AccessKey: "AAALATER", SecretKey: chosenSecret("later"),
	})
	if err != nil {
		t.Fatalf("create later admin: %v", err)
	}

	again, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("second EnsureAdmin: %v", err)
	}
	if again.AccessKey != bootstrap.AccessKey {
		t.Errorf("EnsureAdmin returned %s, expected the bootstrap admin %s", again.AccessKey,
			bootstrap.AccessKey)
	}
	if again.ProjectID != "operator" {
		t.Errorf("EnsureAdmin returned project %s, expected operator", again.ProjectID)
	}
}

func TestEnsureAdminRejectsHalfEnvironment(t *testing.T) {
	creds, _ := newTestCredentials(t, nil)

	_, err := creds.EnsureAdmin(context.Background(), t.TempDir(), AdminEnv{AccessKey: "ADMINKEY"})
	if !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("EnsureAdmin error = %v, expected %v", err, ErrInvalidCredential)
	}
}

// failingStore is a store whose PutCredential fails, to check that EnsureAdmin removes
// the file of a credential it could not store. Only the methods EnsureAdmin calls are
// implemented.
type failingStore struct {
	store.Store
}

func (failingStore) ListCredentials(context.Context) ([]store.Credential, error) {
	return nil, nil
}

func (failingStore) PutCredential(context.Context, store.Credential) error {
	return store.ErrUnavailable
}

func TestEnsureAdminRemovesFileWhenStoreFails(t *testing.T) {
	creds := NewCredentials(failingStore{}, testToken(t), CredentialsConfig{
		Logger: slog.New(slog.DiscardHandler),
	})
	dataDir := t.TempDir()

	_, err := creds.EnsureAdmin(context.Background(), dataDir, AdminEnv{})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("EnsureAdmin error = %v, expected %v", err, store.ErrUnavailable)
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminCredentialsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: error = %v, expected the file removed", AdminCredentialsFile, err)
	}
}

// TestEnsureAdminKeepsFileOfOtherStore checks that a new store in a data directory whose
// admin credentials file belongs to another store keeps that file under a new name.
func TestEnsureAdminKeepsFileOfOtherStore(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, AdminCredentialsFile)
	other := []byte(`{"access_key":"OTHERSTORE","secret_key":"kept"}` + "\n")
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}

	creds, _ := newTestCredentials(t, nil)
	admin, err := creds.EnsureAdmin(context.Background(), dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin: %v", err)
	}

	written, err := os.ReadFile(path)
	if err != nil || !bytes.Contains(written, []byte(admin.AccessKey)) {
		t.Errorf("%s = %s, %v; want the new admin %s", path, written, err, admin.AccessKey)
	}
	kept, err := filepath.Glob(path + ".replaced-*")
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept files = %v, %v; want one", kept, err)
	}
	if data, err := os.ReadFile(kept[0]); err != nil || !bytes.Equal(data, other) {
		t.Errorf("%s = %s, %v; want the other store's file unchanged", kept[0], data, err)
	}
}

func TestEnsureAdminRestoresFileWhenStoreFails(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, AdminCredentialsFile)
	other := []byte(`{"access_key":"OTHERSTORE"}` + "\n")
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}

	creds := NewCredentials(failingStore{}, testToken(t), CredentialsConfig{
		Logger: slog.New(slog.DiscardHandler),
	})
	if _, err := creds.EnsureAdmin(context.Background(), dataDir, AdminEnv{}); err == nil {
		t.Fatal("EnsureAdmin on a failing store succeeded")
	}
	if data, err := os.ReadFile(path); err != nil || !bytes.Equal(data, other) {
		t.Errorf("%s = %s, %v; want the other store's file back", path, data, err)
	}
	if kept, _ := filepath.Glob(path + ".replaced-*"); len(kept) != 0 {
		t.Errorf("kept files = %v, want none after the restore", kept)
	}
}

func TestCredentialsUserIDStaysInItsDomain(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	create := func(project, domain string) error {
		_, _, err := creds.Create(ctx, CreateRequest{UserID: "alice", ProjectID: project,
			DomainID: domain, Role: RoleReadOnly})
		return err
	}

	if err := create("p1", "d1"); err != nil {
		t.Fatalf("first credential of the user: %v", err)
	}
	if err := create("p2", "d1"); err != nil {
		t.Errorf("the user in another project of its domain: %v", err)
	}
	err := create("p3", "d2")
	if !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("the user in another domain: error %v, expected %v", err, ErrInvalidCredential)
	}
}

func TestCredentialsProjectStaysInItsDomain(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	create := func(project, domain string) error {
		_, _, err := creds.Create(ctx, CreateRequest{ProjectID: project, DomainID: domain,
			Role: RoleReadOnly})
		return err
	}

	if err := create("p1", "d1"); err != nil {
		t.Fatalf("first credential of the project: %v", err)
	}
	if err := create("p1", "d1"); err != nil {
		t.Errorf("a second credential of the project in its domain: %v", err)
	}
	if err := create("p2", "d2"); err != nil {
		t.Errorf("a project of another domain: %v", err)
	}
	err := create("p1", "d2")
	if !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("the project with another domain: error %v, expected %v", err,
			ErrInvalidCredential)
	}
	if err != nil && !strings.Contains(err.Error(), "project p1 belongs to another domain") {
		t.Errorf("the project with another domain: error %q does not name the project", err)
	}
}
