package api

import (
	"net/http"
	"testing"

	"github.com/hsmkms/kms/service/auth"
)

// TestRoleTable calls representative operations with a credential of each role, none of
// which holds a grant, so a denial is always the role's: 403 KMS.0307.
func TestRoleTable(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "roles")
	cipher, _ := e.admin.sealedDataKey(t, keyID)

	type call struct {
		name   string
		method string
		path   string
		body   map[string]any
		// minimum is the least privileged role that may make the call.
		minimum string
	}
	calls := []call{
		{"describe-key", http.MethodPost, "describe-key", map[string]any{"key_id": keyID},
			auth.RoleReadOnly},
		{"list-keys", http.MethodPost, "list-keys", map[string]any{}, auth.RoleReadOnly},
		{"list-grants", http.MethodPost, "list-grants", map[string]any{"key_id": keyID},
			auth.RoleReadOnly},
		{"list-retirable-grants", http.MethodPost, "list-retirable-grants", map[string]any{},
			auth.RoleReadOnly},
		{"create-datakey", http.MethodPost, "create-datakey", map[string]any{"key_id": keyID},
			auth.RoleCryptoUser},
		{"decrypt-datakey", http.MethodPost, "decrypt-datakey", decryptBody(keyID, cipher),
			auth.RoleCryptoUser},
		{"encrypt-datakey", http.MethodPost, "encrypt-datakey",
			encryptBody(keyID, make([]byte, 16)), auth.RoleCryptoUser},
		{"create-key", http.MethodPost, "create-key", nil, auth.RoleKeyManager},
		{"create-grant", http.MethodPost, "create-grant", map[string]any{"key_id": keyID,
			"grantee_principal": "someone", "operations": []string{"describe-key"}},
			auth.RoleKeyManager},
		{"list credentials", http.MethodGet, "/v1.0/" + projectP1 + "/kms-admin/credentials",
			nil, auth.RoleAdmin},
	}

	rank := map[string]int{}
	for i, role := range auth.Roles() {
		rank[role] = i
	}

	for _, role := range auth.Roles() {
		p := e.newPrincipal(t, role, projectP1, domainD1)
		for i, c := range calls {
			t.Run(role+" "+c.name, func(t *testing.T) {
				body := c.body
				if c.name == "create-key" {
					body = map[string]any{"key_alias": role + "-" + string(rune('a'+i))}
				}
				r := p.do(t, c.method, c.path, body)

				if rank[role] >= rank[c.minimum] {
					checkOK(t, c.name, r)
					return
				}
				checkError(t, c.name, r, http.StatusForbidden, "KMS.0307")
			})
		}
	}
}
