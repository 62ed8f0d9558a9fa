package main

import (
	"bytes"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// credentialEnv returns the kmsctl environment that signs with the credential that
// `kmsctl credentials create` printed.
func credentialEnv(t *testing.T, created []byte) []string {
	t.Helper()

	c := decodeJSON(t, created)
	return []string{"KMS_ACCESS_KEY=" + c["access_key"].(string),
		"KMS_SECRET_KEY=" + c["secret_key"].(string),
		"KMS_PROJECT_ID=" + c["project_id"].(string)}
}

// TestKmsdOperatorProjectSurvivesAdminRotation rotates the bootstrap admin credential
// (a second operator admin, then the first one deleted) while an older admin of another
// project exists, and restarts kmsd. The other project's admin must still be unable to
// manage the operator project's credentials, and the new operator admin must still
// manage every project's.
func TestKmsdOperatorProjectSurvivesAdminRotation(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	bootstrapAK, _, operator := readAdmin(t, dataDir)
	const tenant, domain = "1111111111111111111111111111aaaa", "2222222222222222222222222222bbbb"

	ctl := kmsctlFor(t, p, dataDir)
	tenantEnv := credentialEnv(t, ctl("credentials", "create", "--role", "admin",
		"--project", tenant, "--domain", domain))
	time.Sleep(10 * time.Millisecond) // creation times are in milliseconds
	rotatedEnv := credentialEnv(t, ctl("credentials", "create", "--role", "admin"))
	mustKmsctl(t, p, dataDir, rotatedEnv, "credentials", "delete", bootstrapAK)
	p.stop(t)

	p = launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)

	takeover := runKmsctl(t, p, dataDir, tenantEnv, "credentials", "create", "--role",
		"admin", "--project", operator, "--domain", domain)
	if takeover.exitCode == 0 || !bytes.Contains(takeover.stderr, []byte("KMS.0307")) {
		t.Errorf("the other project's admin created an admin of the operator project: "+
			"exit status %d, expected KMS.0307: %s%s", takeover.exitCode, takeover.stdout,
			takeover.stderr)
	}
	mustKmsctl(t, p, dataDir, rotatedEnv, "credentials", "create", "--role", "read-only",
		"--project", tenant, "--domain", domain)
	p.stop(t)
}
