package compat

import (
	"net/http"
	"slices"
	"testing"

	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
)

// grantRoutes are the grant operations; the grant tests run once kmsd serves them all.
var grantRoutes = []string{
	"create-grant", "list-grants", "revoke-grant", "retire-grant", "list-retirable-grants",
}

// requireRoutes calls requireRoute for each POST route.
func requireRoutes(t *testing.T, routes ...string) {
	t.Helper()
	for _, r := range routes {
		requireRoute(t, http.MethodPost, r)
	}
}

// createGrant grants the user granteeID the operations on keyID, with the grantee as
// the retiring principal, and returns the grant id.
func createGrant(t *testing.T, client *kms.KmsClient, keyID, granteeID string,
	operations []string) string {
	t.Helper()
	userType := model.GetCreateGrantRequestBodyGranteePrincipalTypeEnum().USER
	res, err := client.CreateGrant(&model.CreateGrantRequest{Body: &model.CreateGrantRequestBody{
		KeyId:                keyID,
		GranteePrincipal:     granteeID,
		GranteePrincipalType: &userType,
		Operations:           operations,
		Name:                 ptr("compat-grant"),
		RetiringPrincipal:    &granteeID,
	}})
	if err != nil {
		t.Fatalf("create-grant: %v", err)
	}
	if res.GrantId == nil || *res.GrantId == "" {
		t.Fatal("create-grant: grant_id is missing")
	}
	return *res.GrantId
}

// findGrant returns the grant with id in grants, or nil.
func findGrant(grants *[]model.Grants, id string) *model.Grants {
	if grants == nil {
		return nil
	}
	for i := range *grants {
		if deref((*grants)[i].GrantId) == id {
			return &(*grants)[i]
		}
	}
	return nil
}

// createDataKeyAs calls create-datakey on keyID with client and returns the error.
func createDataKeyAs(client *kms.KmsClient, keyID string) error {
	_, err := client.CreateDatakey(&model.CreateDatakeyRequest{
		Body: &model.CreateDatakeyRequestBody{KeyId: keyID, DatakeyLength: ptr("256")},
	})
	return err
}

// checkKeyDenied checks that err is a 403 error: KMS.0306 (no permission on the key) or
// KMS.0307 (no permission for the role), since both describe a caller without a grant.
func checkKeyDenied(t *testing.T, err error) {
	t.Helper()
	se := serviceError(t, err)
	if se.StatusCode != http.StatusForbidden {
		t.Errorf("status = %d, want 403", se.StatusCode)
	}
	if se.ErrorCode != "KMS.0306" && se.ErrorCode != "KMS.0307" {
		t.Errorf("error_code = %q, want KMS.0306 or KMS.0307 (message %q)",
			se.ErrorCode, se.ErrorMessage)
	}
}

func TestGrantLifecycle(t *testing.T) {
	requireRoutes(t, grantRoutes...)
	admin := adminClient(t)
	granteeID := "compat-grantee-" + randomHex(4)
	// A grant adds operations that the grantee's role does not allow, so the grantee is
	// read-only: its role allows describe-key but not create-datakey.
	grantee := newClient(t, createCredential(t, granteeID, "read-only"))
	keyID := createKey(t, admin, "compat-grants")

	checkKeyDenied(t, createDataKeyAs(grantee, keyID))

	operations := []string{"create-datakey", "decrypt-datakey"}
	grantID := createGrant(t, admin, keyID, granteeID, operations)

	if err := createDataKeyAs(grantee, keyID); err != nil {
		t.Fatalf("create-datakey by the grantee after create-grant: %v", err)
	}
	listed, err := admin.ListGrants(&model.ListGrantsRequest{Body: &model.ListGrantsRequestBody{
		KeyId: keyID, Limit: ptr("10"),
	}})
	if err != nil {
		t.Fatalf("list-grants: %v", err)
	}
	g := findGrant(listed.Grants, grantID)
	if g == nil {
		t.Fatalf("grant %s is missing from list-grants: %v", grantID, listed.Grants)
	}
	checkGrant(t, g, keyID, granteeID, operations)
	if listed.Truncated == nil || listed.Truncated.Value() != "false" {
		t.Errorf("truncated = %v, want false", listed.Truncated)
	}
	if listed.Total == nil || *listed.Total != 1 {
		t.Errorf("total = %v, want 1", listed.Total)
	}

	retirable, err := grantee.ListRetirableGrants(&model.ListRetirableGrantsRequest{
		Body: &model.ListRetirableGrantsRequestBody{Limit: ptr("10")},
	})
	if err != nil {
		t.Fatalf("list-retirable-grants by the retiring principal: %v", err)
	}
	if findGrant(retirable.Grants, grantID) == nil {
		t.Errorf("grant %s is missing from list-retirable-grants: %v", grantID, retirable.Grants)
	}

	_, err = admin.CancelGrant(&model.CancelGrantRequest{Body: &model.RevokeGrantRequestBody{
		KeyId: keyID, GrantId: grantID,
	}})
	if err != nil {
		t.Fatalf("revoke-grant: %v", err)
	}
	checkKeyDenied(t, createDataKeyAs(grantee, keyID))

	retiredID := createGrant(t, admin, keyID, granteeID, operations)
	_, err = grantee.CancelSelfGrant(&model.CancelSelfGrantRequest{Body: &model.RevokeGrantRequestBody{
		KeyId: keyID, GrantId: retiredID,
	}})
	if err != nil {
		t.Fatalf("retire-grant by the retiring principal: %v", err)
	}
	checkKeyDenied(t, createDataKeyAs(grantee, keyID))

	after, err := admin.ListGrants(&model.ListGrantsRequest{Body: &model.ListGrantsRequestBody{
		KeyId: keyID,
	}})
	if err != nil {
		t.Fatalf("list-grants after revoke and retire: %v", err)
	}
	if after.Grants != nil && len(*after.Grants) != 0 {
		t.Errorf("grants = %v, want none after revoke-grant and retire-grant", *after.Grants)
	}
}

// checkGrant checks the fields of a list-grants entry that the SDK decodes.
func checkGrant(t *testing.T, g *model.Grants, keyID, granteeID string, operations []string) {
	t.Helper()
	fields := []struct {
		name string
		got  *string
		want string
	}{
		{"key_id", g.KeyId, keyID},
		{"grantee_principal", g.GranteePrincipal, granteeID},
		{"retiring_principal", g.RetiringPrincipal, granteeID},
		{"name", g.Name, "compat-grant"},
	}
	for _, f := range fields {
		if got := deref(f.got); got != f.want {
			t.Errorf("grant %s = %q, want %q", f.name, got, f.want)
		}
	}

	if g.GranteePrincipalType == nil || g.GranteePrincipalType.Value() != "user" {
		t.Errorf("grant grantee_principal_type = %v, want user", g.GranteePrincipalType)
	}
	if g.Operations == nil || !slices.Equal(slices.Sorted(slices.Values(*g.Operations)), operations) {
		t.Errorf("grant operations = %v, want %v", g.Operations, operations)
	}
	if got := deref(g.IssuingPrincipal); got == "" || got == "<nil>" {
		t.Errorf("grant issuing_principal = %q, want the admin's user id", got)
	}
	if got := deref(g.CreationDate); !millisPattern.MatchString(got) {
		t.Errorf("grant creation_date = %q, want milliseconds since the epoch", got)
	}
}
