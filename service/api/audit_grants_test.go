package api

import (
	"net/http"
	"testing"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// recordOf returns the audit record of the call that r answered, found by its request id.
func recordOf(t *testing.T, e *testEnv, r response) store.AuditRecord {
	t.Helper()

	id := r.Header.Get("X-Request-Id")
	for _, rec := range chainRecords(t, e) {
		if rec.RequestID == id {
			return rec
		}
	}
	t.Fatalf("the trail has no record of request %q: %s", id, r.Raw)
	return store.AuditRecord{}
}

func TestAuditRecordNamesGrant(t *testing.T) {
	e := newTestEnv(t)
	source := e.admin.createKey(t, "audit-grant-source")
	dest := e.admin.createKey(t, "audit-grant-dest")
	disabled := e.admin.createKey(t, "audit-grant-disabled")
	cipher, _ := e.admin.sealedDataKey(t, source)
	disabledCipher, _ := e.admin.sealedDataKey(t, disabled)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	decryptGrant := e.admin.createGrant(t, source, map[string]any{
		"grantee_principal": reader.userID, "operations": []string{"decrypt-datakey"},
	})
	encryptGrant := e.admin.createGrant(t, dest, map[string]any{
		"grantee_principal": reader.userID, "operations": []string{"encrypt-datakey"},
	})
	disabledGrant := e.admin.createGrant(t, disabled, map[string]any{
		"grantee_principal": reader.userID, "operations": []string{"decrypt-datakey"},
	})
	e.admin.mustPost(t, "disable-key", map[string]any{"key_id": disabled})

	reEncrypt := map[string]any{"cipher_text": cipher, "destination_key_id": dest}
	tests := []struct {
		name      string
		caller    client
		operation string
		body      map[string]any
		status    int
		grantID   string
	}{
		{name: "role allows", caller: e.admin, operation: "decrypt-datakey",
			body: decryptBody(source, cipher), status: http.StatusOK},
		{name: "grant allows", caller: reader.client, operation: "decrypt-datakey",
			body: decryptBody(source, cipher), status: http.StatusOK, grantID: decryptGrant},
		{name: "grants on both keys allow", caller: reader.client, operation: "re-encrypt",
			body: reEncrypt, status: http.StatusOK, grantID: decryptGrant + "," + encryptGrant},
		{name: "role allows both keys", caller: e.admin, operation: "re-encrypt",
			body: reEncrypt, status: http.StatusOK},
		{name: "grant allows a disabled key", caller: reader.client,
			operation: "decrypt-datakey", body: decryptBody(disabled, disabledCipher),
			status: http.StatusBadRequest, grantID: disabledGrant},
		{name: "no grant of the operation", caller: reader.client,
			operation: "encrypt-datakey", body: encryptBody(source, make([]byte, 32)),
			status: http.StatusForbidden},
		{name: "role denies without grants", caller: reader.client, operation: "create-key",
			body:   map[string]any{"key_alias": "audit-grant-denied"},
			status: http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.caller.post(t, tc.operation, tc.body)
			if r.Status != tc.status {
				t.Fatalf("%s: status %d, want %d: %s", tc.operation, r.Status, tc.status, r.Raw)
			}

			rec := recordOf(t, e, r)
			if rec.Operation != tc.operation {
				t.Errorf("record operation = %q, want %q", rec.Operation, tc.operation)
			}
			if rec.AccessKey != tc.caller.ak {
				t.Errorf("record access key = %q, want %q", rec.AccessKey, tc.caller.ak)
			}
			if rec.GrantID != tc.grantID {
				t.Errorf("record grant id = %q, want %q", rec.GrantID, tc.grantID)
			}
		})
	}
}
