package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
)

// grantQuota returns the used and quota numbers of the grant_per_CMK resource of a
// user-quotas answer to c.
func (c client) grantQuota(t *testing.T) (used, quota float64) {
	t.Helper()

	r := c.do(t, http.MethodGet, "user-quotas", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("user-quotas: status %d: %s", r.Status, r.Raw)
	}
	quotas, _ := r.Body["quotas"].(map[string]any)
	resources, _ := quotas["resources"].([]any)
	for _, res := range resources {
		entry, _ := res.(map[string]any)
		if entry["type"] != service.QuotaTypeGrantPerCMK {
			continue
		}
		used, usedIsNumber := entry["used"].(float64)
		quota, quotaIsNumber := entry["quota"].(float64)
		if !usedIsNumber || !quotaIsNumber {
			t.Fatalf("grant_per_CMK: used and quota must be JSON numbers: %v", entry)
		}
		return used, quota
	}
	t.Fatalf("user-quotas has no grant_per_CMK resource: %s", r.Raw)
	return 0, 0
}

func TestUserQuotasCountsGrantsOfBusiestKey(t *testing.T) {
	e := newTestEnvWith(t, service.Config{GrantsPerKey: 9})
	busy := e.admin.createKey(t, "grants-busy")
	quiet := e.admin.createKey(t, "grants-quiet")
	e.admin.createKey(t, "grants-none")
	grantee := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	checkGrantQuota := func(what string, client client, want float64) {
		t.Helper()
		used, quota := client.grantQuota(t)
		if used != want {
			t.Errorf("grant_per_CMK used %s = %v, want %v", what, used, want)
		}
		if quota != 9 {
			t.Errorf("grant_per_CMK quota %s = %v, want 9", what, quota)
		}
	}
	checkGrantQuota("without grants", e.admin, 0)

	grant := map[string]any{"grantee_principal": grantee.userID,
		"operations": []string{"decrypt-datakey"}}
	var busyGrants []string
	for range 3 {
		busyGrants = append(busyGrants, e.admin.createGrant(t, busy, grant))
	}
	e.admin.createGrant(t, quiet, grant)
	checkGrantQuota("with 3 and 1 grants on two keys", e.admin, 3)

	otherProject := strings.Repeat("e", 32)
	otherAdmin := e.newPrincipal(t, auth.RoleAdmin, otherProject, domainD1)
	foreign := otherAdmin.createKey(t, "grants-foreign")
	for range 5 {
		otherAdmin.createGrant(t, foreign, grant)
	}
	checkGrantQuota("after 5 grants in another project", e.admin, 3)
	checkGrantQuota("of the other project", otherAdmin.client, 5)

	for _, id := range busyGrants[:2] {
		e.admin.mustPost(t, "revoke-grant", map[string]any{"key_id": busy, "grant_id": id})
	}
	checkGrantQuota("after revoking 2 grants of the busy key", e.admin, 1)
}
