package main

import (
	"path/filepath"
	"testing"
)

// TestKmsctlGrants drives the grant commands of kmsctl against a real kmsd.
func TestKmsctlGrants(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := startKmsd(t, dataDir)

	created := decodeJSON(t, kmsctl(t, p, dataDir, "create-key", "--alias", "granted"))
	keyID := created["key_info"].(map[string]any)["key_id"].(string)

	grant := decodeJSON(t, kmsctl(t, p, dataDir, "create-grant", keyID, "--grantee", "user1",
		"--operations", "describe-key,decrypt-datakey", "--name", "cli", "--retiring", "user2"))
	grantID, _ := grant["grant_id"].(string)
	if len(grantID) != 64 {
		t.Fatalf("create-grant printed grant_id %q, want 64 hex digits", grantID)
	}

	listed := decodeJSON(t, kmsctl(t, p, dataDir, "list-grants", keyID, "--limit", "5"))
	grants, _ := listed["grants"].([]any)
	if len(grants) != 1 || grants[0].(map[string]any)["grant_id"] != grantID {
		t.Errorf("list-grants printed %v, want the one grant %s", listed["grants"], grantID)
	}

	kmsctl(t, p, dataDir, "revoke-grant", keyID, grantID)
	listed = decodeJSON(t, kmsctl(t, p, dataDir, "list-grants", keyID))
	if grants, _ := listed["grants"].([]any); len(grants) != 0 {
		t.Errorf("list-grants after revoke-grant printed %v, want none", grants)
	}

	retirable := decodeJSON(t, kmsctl(t, p, dataDir, "list-retirable-grants"))
	if retirable["total"] != float64(0) {
		t.Errorf("list-retirable-grants of the admin: total %v, want 0", retirable["total"])
	}
	p.stop(t)
}
