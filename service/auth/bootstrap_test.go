package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testSecret is a caller-chosen secret key of the length and variety of a generated one.
const testSecret = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"

// createAdminAt stores an admin credential of project with access key ak.
func createAdminAt(t *testing.T, creds *Credentials, ak, project string) {
	t.Helper()

	_, _, err := creds.Create(context.Background(), CreateRequest{
		ProjectID: project, DomainID: "domain", Role: RoleAdmin, AccessKey: ak,
		SecretKey: testSecret,
	})
	if err != nil {
		t.Fatalf("create admin %s of project %s: %v", ak, project, err)
	}
}

// TestEnsureAdminKeepsOperatorProject replaces the bootstrap admin with a newer admin of
// the operator project while an older admin of another project exists. The operator
// project must stay the bootstrap admin's, not pass to the other project.
func TestEnsureAdminKeepsOperatorProject(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	creds, st := newTestCredentials(t, clock)
	dataDir := t.TempDir()

	bootstrap, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{
		AccessKey: "BOOTSTRAP", SecretKey: testSecret, ProjectID: "operator",
		DomainID: "domain",
	})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	clock.Advance(time.Minute)
	createAdminAt(t, creds, "TENANTADMIN", "tenant")
	clock.Advance(time.Minute)
	createAdminAt(t, creds, "ROTATED", "operator")
	if err := creds.Delete(ctx, bootstrap.AccessKey); err != nil {
		t.Fatalf("delete the bootstrap admin: %v", err)
	}

	again, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin after the rotation: %v", err)
	}
	if again.ProjectID != "operator" {
		t.Errorf("operator project = %s, expected operator", again.ProjectID)
	}
	if again.AccessKey != "ROTATED" {
		t.Errorf("bootstrap admin = %s, expected ROTATED", again.AccessKey)
	}

	recorded, ok, err := st.OperatorProject(ctx)
	if err != nil || !ok || recorded != "operator" {
		t.Errorf("recorded operator project = %q, %t, %v; expected operator", recorded, ok, err)
	}
}

// TestEnsureAdminRecordsOperatorOfOlderStore starts from a store written before the
// operator project was recorded: the oldest admin's project becomes the record.
func TestEnsureAdminRecordsOperatorOfOlderStore(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	st := testStore(t)
	logs := &bytes.Buffer{}
	creds := NewCredentials(st, testToken(t), CredentialsConfig{Clock: clock.Now,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})

	createAdminAt(t, creds, "ZZOLDEST", "operator")
	clock.Advance(time.Minute)
	createAdminAt(t, creds, "AANEWER", "tenant")
	if _, ok, err := st.OperatorProject(ctx); err != nil || ok {
		t.Fatalf("a store without EnsureAdmin has an operator project record (%t, %v)", ok, err)
	}

	admin, err := creds.EnsureAdmin(ctx, t.TempDir(), AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin: %v", err)
	}
	if admin.AccessKey != "ZZOLDEST" {
		t.Errorf("bootstrap admin = %s, expected the oldest admin ZZOLDEST", admin.AccessKey)
	}
	if !strings.Contains(logs.String(), "the store records no operator project") {
		t.Errorf("no warning that the operator project was taken from the oldest admin:\n%s",
			logs)
	}
	recorded, ok, err := st.OperatorProject(ctx)
	if err != nil || !ok || recorded != "operator" {
		t.Errorf("recorded operator project = %q, %t, %v; expected operator", recorded, ok, err)
	}
}

// TestEnsureAdminRecreatesOperatorAdmin removes every admin of the operator project
// behind the API's back: the next EnsureAdmin creates one in that project and writes its
// secret to the data directory.
func TestEnsureAdminRecreatesOperatorAdmin(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	creds, _ := newTestCredentials(t, clock)
	dataDir := t.TempDir()

	first, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	clock.Advance(time.Minute)
	createAdminAt(t, creds, "TENANTADMIN", "tenant")
	if err := creds.Delete(ctx, first.AccessKey); err != nil {
		t.Fatalf("delete the bootstrap admin: %v", err)
	}

	again, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin without an operator admin: %v", err)
	}
	if again.ProjectID != first.ProjectID {
		t.Errorf("new admin's project = %s, expected the operator project %s",
			again.ProjectID, first.ProjectID)
	}
	if again.AccessKey == first.AccessKey || again.AccessKey == "TENANTADMIN" {
		t.Errorf("bootstrap admin = %s, expected a new access key", again.AccessKey)
	}

	var file adminFile
	data, err := os.ReadFile(filepath.Join(dataDir, AdminCredentialsFile))
	if err != nil {
		t.Fatalf("read %s: %v", AdminCredentialsFile, err)
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("decode %s: %v", AdminCredentialsFile, err)
	}
	if file.AccessKey != again.AccessKey || file.ProjectID != first.ProjectID {
		t.Errorf("%s names %s of project %s, expected %s of project %s",
			AdminCredentialsFile, file.AccessKey, file.ProjectID, again.AccessKey,
			first.ProjectID)
	}
}

func TestEnsureAdminRejectsOtherProjectFromEnvironment(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)

	first, err := creds.EnsureAdmin(ctx, t.TempDir(), AdminEnv{})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	if err := creds.Delete(ctx, first.AccessKey); err != nil {
		t.Fatalf("delete the bootstrap admin: %v", err)
	}

	_, err = creds.EnsureAdmin(ctx, t.TempDir(), AdminEnv{ProjectID: "another"})
	if err == nil {
		t.Fatal("EnsureAdmin created an admin in a project other than the operator project")
	}
}

// OperatorProject reports that failingStore has no operator project recorded, as a new
// store has not.
func (failingStore) OperatorProject(context.Context) (string, bool, error) {
	return "", false, nil
}

// TestEnsureAdminWarnsOfOtherStoresFile puts the admin credentials file of one store in
// the data directory of another store that has its own admin: EnsureAdmin must warn that
// the file names an access key the store does not hold, and keep the file.
func TestEnsureAdminWarnsOfOtherStoresFile(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	firstLogs := &bytes.Buffer{}
	first := NewCredentials(testStore(t), testToken(t),
		CredentialsConfig{Logger: slog.New(slog.NewTextHandler(firstLogs, nil))})
	if _, err := first.EnsureAdmin(ctx, dataDir, AdminEnv{}); err != nil {
		t.Fatalf("EnsureAdmin on the first store: %v", err)
	}

	logs := &bytes.Buffer{}
	second := NewCredentials(testStore(t), testToken(t),
		CredentialsConfig{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	createAdminAt(t, second, "SECONDADMIN", "operator")
	if _, err := second.EnsureAdmin(ctx, dataDir, AdminEnv{}); err != nil {
		t.Fatalf("EnsureAdmin on the second store: %v", err)
	}

	if !strings.Contains(logs.String(), "does not hold") {
		t.Errorf("no warning about the other store's file; logs:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminCredentialsFile)); err != nil {
		t.Errorf("the admin credentials file is gone: %v", err)
	}

	if _, err := first.EnsureAdmin(ctx, dataDir, AdminEnv{}); err != nil {
		t.Fatalf("EnsureAdmin on the first store again: %v", err)
	}
	if strings.Contains(firstLogs.String(), "does not hold") {
		t.Errorf("warning for the store that the file belongs to; logs:\n%s", firstLogs)
	}
}

// TestEnsureAdminRejectsAccessKeyOfOtherCredential requests a new operator admin under
// the access key of another project's credential: EnsureAdmin must fail with
// ErrInvalidCredential, which ends kmsd, rather than an error that it retries for ever.
func TestEnsureAdminRejectsAccessKeyOfOtherCredential(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)

	first, err := creds.EnsureAdmin(ctx, t.TempDir(), AdminEnv{})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	createAdminAt(t, creds, "TENANTADMIN", "tenant")
	if err := creds.Delete(ctx, first.AccessKey); err != nil {
		t.Fatalf("delete the bootstrap admin: %v", err)
	}

	_, err = creds.EnsureAdmin(ctx, t.TempDir(), AdminEnv{AccessKey: "TENANTADMIN",
		SecretKey: testSecret})
	if !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("EnsureAdmin with another credential's access key: %v, expected %v", err,
			ErrInvalidCredential)
	}
}

// TestEnsureAdminReplacesDisabledOperatorAdmins disables every admin of the operator
// project, as two concurrent disable calls can: the next EnsureAdmin creates an enabled
// one in that project.
func TestEnsureAdminReplacesDisabledOperatorAdmins(t *testing.T) {
	ctx := context.Background()
	creds, _ := newTestCredentials(t, nil)
	dataDir := t.TempDir()

	first, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("first EnsureAdmin: %v", err)
	}
	if err := creds.Disable(ctx, first.AccessKey); err != nil {
		t.Fatalf("disable the bootstrap admin: %v", err)
	}

	again, err := creds.EnsureAdmin(ctx, dataDir, AdminEnv{})
	if err != nil {
		t.Fatalf("EnsureAdmin with the operator admin disabled: %v", err)
	}
	if again.AccessKey == first.AccessKey || again.Disabled {
		t.Errorf("bootstrap admin = %s (disabled %t), expected a new enabled one",
			again.AccessKey, again.Disabled)
	}
	if again.ProjectID != first.ProjectID {
		t.Errorf("new admin's project = %s, expected the operator project %s",
			again.ProjectID, first.ProjectID)
	}
	if again.DomainID != first.DomainID {
		t.Errorf("new admin's domain = %s, expected the operator project's domain %s",
			again.DomainID, first.DomainID)
	}
}
