package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// principal is a credential of a test, with its client.
type principal struct {
	client
	userID   string
	domainID string
}

// newPrincipal creates a credential with role in project and domain.
func (e *testEnv) newPrincipal(t *testing.T, role, project, domain string) principal {
	t.Helper()

	cred, secret, err := e.creds.Create(context.Background(), auth.CreateRequest{
		ProjectID: project, DomainID: domain, Role: role,
	})
	if err != nil {
		t.Fatalf("create %s credential: %v", role, err)
	}
	return principal{
		client:   e.client(cred.AccessKey, secret, project),
		userID:   cred.UserID,
		domainID: cred.DomainID,
	}
}

// replica serves a second server on the same token and a second store on the same
// database, as another replica sharing the store would. It stops with t. A SQLite file
// admits one writing process, so a replica's store opens it read-only.
func (e *testEnv) replica(t *testing.T) *httptest.Server {
	t.Helper()

	log := testLogger()
	databaseURL := e.dbPath
	if !store.IsPostgresURL(databaseURL) {
		databaseURL = "file:" + databaseURL + "?mode=ro"
	}
	st, err := store.Open(context.Background(), databaseURL, log)
	if err != nil {
		t.Fatalf("open the store of the replica: %v", err)
	}
	creds := auth.NewCredentials(st, e.token, auth.CredentialsConfig{Logger: log})
	verifier := auth.NewVerifier(creds, auth.VerifierConfig{Logger: log})
	svc := service.New(e.token, st, log, service.Config{KeysPerProject: 1000})
	srv := httptest.NewServer(New(svc, verifier, log, Config{Credentials: creds}).Handler())
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return srv
}

// at returns a copy of c that sends to base.
func (c client) at(base string) client {
	c.base, c.env = base, nil
	return c
}

// checkError fails t unless r is an error response with status and code.
func checkError(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.Status != status || r.code() != code {
		t.Errorf("%s: status %d code %q, want %d %s: %s", what, r.Status, r.code(), status,
			code, r.Raw)
	}
}

// checkOK fails t unless r is a 200 response.
func checkOK(t *testing.T, what string, r response) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Errorf("%s: status %d, want 200: %s", what, r.Status, r.Raw)
	}
}

// createGrant creates a grant with body fields over key_id and returns the grant id.
func (c client) createGrant(t *testing.T, keyID string, fields map[string]any) string {
	t.Helper()

	body := map[string]any{"key_id": keyID}
	for k, v := range fields {
		body[k] = v
	}
	r := c.mustPost(t, "create-grant", body)
	id := r.str("grant_id")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("grant_id %q is not 64 lower-case hex digits", id)
	}
	return id
}

// sealedDataKey creates a 32-byte data key under keyID and returns its ciphertext and
// plaintext.
func (c client) sealedDataKey(t *testing.T, keyID string) (cipher, plain string) {
	t.Helper()
	r := c.mustPost(t, "create-datakey", map[string]any{"key_id": keyID, "datakey_length": "256"})
	return r.str("cipher_text"), r.str("plain_text")
}

// encryptBody is an encrypt-datakey request for dek.
func encryptBody(keyID string, dek []byte) map[string]any {
	sum := sha256.Sum256(dek)
	return map[string]any{"key_id": keyID, "datakey_plain_length": strconv.Itoa(len(dek)),
		"plain_text": hex.EncodeToString(dek) + hex.EncodeToString(sum[:])}
}

func decryptBody(keyID, cipher string) map[string]any {
	return map[string]any{"key_id": keyID, "cipher_text": cipher, "datakey_cipher_length": "32"}
}

// listedGrantIDs returns the grant ids of a list-grants or list-retirable-grants response.
func listedGrantIDs(r response) []string {
	var ids []string
	grants, _ := r.Body["grants"].([]any)
	for _, g := range grants {
		entry, _ := g.(map[string]any)
		id, _ := entry["grant_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func TestGrantAllowsListedOperationOnly(t *testing.T) {
	e := newTestEnv(t)
	keyA := e.admin.createKey(t, "granted")
	keyB := e.admin.createKey(t, "not-granted")
	cipherA, plainA := e.admin.sealedDataKey(t, keyA)
	cipherB, _ := e.admin.sealedDataKey(t, keyB)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	r := reader.post(t, "decrypt-datakey", decryptBody(keyA, cipherA))
	checkError(t, "decrypt-datakey without a grant", r, http.StatusForbidden, "KMS.0307")

	grantID := e.admin.createGrant(t, keyA, map[string]any{
		"grantee_principal": reader.userID, "operations": []string{"decrypt-datakey"},
	})

	r = reader.post(t, "decrypt-datakey", decryptBody(keyA, cipherA))
	checkOK(t, "decrypt-datakey with a grant", r)
	if r.str("data_key") != plainA {
		t.Errorf("data_key = %s, want %s", r.str("data_key"), plainA)
	}

	r = reader.post(t, "encrypt-datakey", encryptBody(keyA, make([]byte, 32)))
	checkError(t, "encrypt-datakey with a decrypt-datakey grant", r, http.StatusForbidden,
		"KMS.0306")
	r = reader.post(t, "create-datakey", map[string]any{"key_id": keyA})
	checkError(t, "create-datakey with a decrypt-datakey grant", r, http.StatusForbidden,
		"KMS.0306")
	r = reader.post(t, "decrypt-datakey", decryptBody(keyB, cipherB))
	checkError(t, "decrypt-datakey on another key", r, http.StatusForbidden, "KMS.0306")

	r = e.admin.mustPost(t, "revoke-grant", map[string]any{"key_id": keyA, "grant_id": grantID})
	if string(bytes.TrimSpace(r.Raw)) != "{}" {
		t.Errorf("revoke-grant answered %s, want {}", r.Raw)
	}

	r = reader.post(t, "decrypt-datakey", decryptBody(keyA, cipherA))
	checkError(t, "decrypt-datakey after revoke", r, http.StatusForbidden, "KMS.0307")
}

func TestGrantRevokeReachesOtherReplica(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "replicated")
	cipher, _ := e.admin.sealedDataKey(t, keyID)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)
	other := reader.at(e.replica(t).URL)

	grantID := e.admin.createGrant(t, keyID, map[string]any{
		"grantee_principal": reader.userID, "operations": []string{"decrypt-datakey"},
	})
	checkOK(t, "decrypt-datakey on the replica", other.post(t, "decrypt-datakey",
		decryptBody(keyID, cipher)))

	e.admin.mustPost(t, "revoke-grant", map[string]any{"key_id": keyID, "grant_id": grantID})
	r := other.post(t, "decrypt-datakey", decryptBody(keyID, cipher))
	checkError(t, "decrypt-datakey on the replica after revoke", r, http.StatusForbidden,
		"KMS.0307")
}

// TestDomainGrant checks that a grant to a domain lets in the project's users of that
// domain, and that a grant to another domain does not. A project's credentials all
// belong to one domain, so no user of another domain can call in the project.
func TestDomainGrant(t *testing.T) {
	e := newTestEnv(t)
	granted := e.admin.createKey(t, "domain")
	grantedCipher, _ := e.admin.sealedDataKey(t, granted)
	other := e.admin.createKey(t, "other-domain")
	otherCipher, _ := e.admin.sealedDataKey(t, other)
	inDomain := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	e.admin.createGrant(t, granted, map[string]any{
		"grantee_principal": domainD1, "grantee_principal_type": "domain",
		"operations": []string{"decrypt-datakey"},
	})
	e.admin.createGrant(t, other, map[string]any{
		"grantee_principal": "otherdomain", "grantee_principal_type": "domain",
		"operations": []string{"decrypt-datakey"},
	})

	checkOK(t, "decrypt-datakey by a user of the granted domain",
		inDomain.post(t, "decrypt-datakey", decryptBody(granted, grantedCipher)))
	checkError(t, "decrypt-datakey under a grant to another domain",
		inDomain.post(t, "decrypt-datakey", decryptBody(other, otherCipher)),
		http.StatusForbidden, "KMS.0306")

	_, _, err := e.creds.Create(context.Background(), auth.CreateRequest{
		ProjectID: projectP1, DomainID: "otherdomain", Role: auth.RoleReadOnly})
	if !errors.Is(err, auth.ErrInvalidCredential) {
		t.Errorf("credential of the project in another domain: error %v, want %v", err,
			auth.ErrInvalidCredential)
	}
}

func TestGranteeCreatesGrantWithinItsOperations(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "delegated")
	cipher, _ := e.admin.sealedDataKey(t, keyID)
	delegate := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	r := delegate.post(t, "create-grant", map[string]any{"key_id": keyID,
		"grantee_principal": reader.userID, "operations": []string{"decrypt-datakey"}})
	checkError(t, "create-grant without a grant", r, http.StatusForbidden, "KMS.0307")

	e.admin.createGrant(t, keyID, map[string]any{"grantee_principal": delegate.userID,
		"operations": []string{"create-grant", "decrypt-datakey"}})

	r = delegate.post(t, "create-grant", map[string]any{"key_id": keyID,
		"grantee_principal": reader.userID, "operations": []string{"encrypt-datakey"}})
	checkError(t, "create-grant of an operation the delegate lacks", r, http.StatusForbidden,
		"KMS.0306")

	delegate.createGrant(t, keyID, map[string]any{"grantee_principal": reader.userID,
		"operations": []string{"decrypt-datakey"}})
	checkOK(t, "decrypt-datakey through a delegated grant",
		reader.post(t, "decrypt-datakey", decryptBody(keyID, cipher)))
}

func TestRetireGrant(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "retired")
	grantee := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)
	retirer := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)

	grantID := e.admin.createGrant(t, keyID, map[string]any{
		"grantee_principal": grantee.userID, "operations": []string{"decrypt-datakey"},
		"retiring_principal": retirer.userID,
	})
	retire := map[string]any{"key_id": keyID, "grant_id": grantID}

	checkError(t, "retire-grant by a grantee without retire-grant",
		grantee.post(t, "retire-grant", retire), http.StatusForbidden, "KMS.0306")
	checkError(t, "retire-grant by the admin", e.admin.post(t, "retire-grant", retire),
		http.StatusForbidden, "KMS.0306")

	r := retirer.mustPost(t, "list-retirable-grants", map[string]any{})
	if ids := listedGrantIDs(r); len(ids) != 1 || ids[0] != grantID {
		t.Errorf("list-retirable-grants of the retiring principal = %v, want [%s]", ids, grantID)
	}
	r = grantee.mustPost(t, "list-retirable-grants", map[string]any{})
	if ids := listedGrantIDs(r); len(ids) != 0 {
		t.Errorf("list-retirable-grants of the grantee = %v, want none", ids)
	}

	r = retirer.mustPost(t, "retire-grant", retire)
	if string(bytes.TrimSpace(r.Raw)) != "{}" {
		t.Errorf("retire-grant answered %s, want {}", r.Raw)
	}
	r = retirer.mustPost(t, "list-retirable-grants", map[string]any{})
	if ids := listedGrantIDs(r); len(ids) != 0 {
		t.Errorf("list-retirable-grants after retiring = %v, want none", ids)
	}
	checkError(t, "retire-grant twice", retirer.post(t, "retire-grant", retire),
		http.StatusBadRequest, "KMS.2501")

	selfRetiring := e.admin.createGrant(t, keyID, map[string]any{
		"grantee_principal": grantee.userID,
		"operations":        []string{"decrypt-datakey", "retire-grant"},
	})
	checkOK(t, "retire-grant by a grantee with retire-grant", grantee.post(t, "retire-grant",
		map[string]any{"key_id": keyID, "grant_id": selfRetiring}))
}

func TestCreateGrantRejects(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "rejects")
	ops := []string{"decrypt-datakey"}

	tests := []struct {
		name     string
		body     map[string]any
		wantCode string
	}{
		{"key_id missing", map[string]any{"grantee_principal": "u1", "operations": ops},
			"KMS.0204"},
		{"key does not exist", map[string]any{"key_id": "00000000-0000-4000-8000-000000000000",
			"grantee_principal": "u1", "operations": ops}, "KMS.0205"},
		{"grantee missing", map[string]any{"key_id": keyID, "operations": ops}, "KMS.0204"},
		{"grantee with a space", map[string]any{"key_id": keyID, "grantee_principal": "u 1",
			"operations": ops}, "KMS.2402"},
		{"grantee of 65 characters", map[string]any{"key_id": keyID,
			"grantee_principal": fmt.Sprintf("%065d", 1), "operations": ops}, "KMS.2402"},
		{"retiring principal invalid", map[string]any{"key_id": keyID,
			"grantee_principal": "u1", "retiring_principal": "r!", "operations": ops},
			"KMS.2402"},
		{"grantee type unknown", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"grantee_principal_type": "group", "operations": ops}, "KMS.0308"},
		{"operations missing", map[string]any{"key_id": keyID, "grantee_principal": "u1"},
			"KMS.0204"},
		{"operations empty", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"operations": []string{}}, "KMS.0204"},
		{"only create-grant", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"operations": []string{"create-grant", "create-grant"}}, "KMS.2401"},
		{"operation not grantable", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"operations": []string{"disable-key"}}, "KMS.0308"},
		{"operations not a list", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"operations": "decrypt-datakey"}, "KMS.0308"},
		{"name invalid", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"name": "bad name", "operations": ops}, "KMS.0308"},
		{"sequence invalid", map[string]any{"key_id": keyID, "grantee_principal": "u1",
			"operations": ops, "sequence": "short"}, "KMS.0206"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkError(t, "create-grant", e.admin.post(t, "create-grant", tc.body),
				http.StatusBadRequest, tc.wantCode)
		})
	}
}

func TestRevokeGrantRejects(t *testing.T) {
	e := newTestEnv(t)
	keyA := e.admin.createKey(t, "revoke-a")
	keyB := e.admin.createKey(t, "revoke-b")
	grantID := e.admin.createGrant(t, keyA, map[string]any{
		"grantee_principal": "u1", "operations": []string{"describe-key"},
	})
	missing := "00000000000000000000000000000000000000000000000000000000000000aa"

	tests := []struct {
		name     string
		body     map[string]any
		wantCode string
	}{
		{"grant_id missing", map[string]any{"key_id": keyA}, "KMS.0204"},
		{"grant_id not hex", map[string]any{"key_id": keyA, "grant_id": "xyz"}, "KMS.2501"},
		{"grant does not exist", map[string]any{"key_id": keyA, "grant_id": missing},
			"KMS.2501"},
		{"grant of another key", map[string]any{"key_id": keyB, "grant_id": grantID},
			"KMS.2502"},
		{"key_id missing", map[string]any{"grant_id": grantID}, "KMS.0204"},
	}
	for _, tc := range tests {
		for _, op := range []string{"revoke-grant", "retire-grant"} {
			t.Run(op+" "+tc.name, func(t *testing.T) {
				checkError(t, op, e.admin.post(t, op, tc.body), http.StatusBadRequest,
					tc.wantCode)
			})
		}
	}

	crypto := e.newPrincipal(t, auth.RoleCryptoUser, projectP1, domainD1)
	checkError(t, "revoke-grant by a crypto-user", crypto.post(t, "revoke-grant",
		map[string]any{"key_id": keyA, "grant_id": grantID}), http.StatusForbidden, "KMS.0307")

	manager := e.newPrincipal(t, auth.RoleKeyManager, projectP1, domainD1)
	checkOK(t, "revoke-grant by a key-manager", manager.post(t, "revoke-grant",
		map[string]any{"key_id": keyA, "grant_id": grantID}))
}

func TestGrantQuota(t *testing.T) {
	e := newTestEnv(t)
	full := e.admin.createKey(t, "full")
	other := e.admin.createKey(t, "other")
	grant := map[string]any{"grantee_principal": "u1", "operations": []string{"describe-key"}}

	// 100 is the default GrantsPerKey of service.Config, which the test server uses.
	for range 100 {
		e.admin.createGrant(t, full, grant)
	}
	body := map[string]any{"key_id": full, "grantee_principal": "u1",
		"operations": []string{"describe-key"}}
	checkError(t, "create-grant past the quota", e.admin.post(t, "create-grant", body),
		http.StatusBadRequest, "KMS.2404")
	e.admin.createGrant(t, other, grant)

	r := e.admin.mustPost(t, "list-grants", map[string]any{"key_id": full, "limit": "1000"})
	if total, _ := r.Body["total"].(float64); total != 100 {
		t.Errorf("list-grants total = %v, want 100", r.Body["total"])
	}
}

func TestListGrantsPaging(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "paging")
	created := map[string]int{} // grant id to i of user<i> and grant-<i>
	for i := range 3 {
		created[e.admin.createGrant(t, keyID, map[string]any{
			"grantee_principal": fmt.Sprintf("user%d", i), "operations": []string{"describe-key"},
			"name": fmt.Sprintf("grant-%d", i),
		})] = i
	}

	// Grants are listed by creation time at millisecond precision, then by id, so
	// grants created in one millisecond come in id order. The pages must split the
	// order of the whole list.
	all := e.admin.mustPost(t, "list-grants", map[string]any{"key_id": keyID, "limit": "10"})
	want := listedGrantIDs(all)
	if len(want) != 3 {
		t.Fatalf("list-grants = %v, want the 3 grants created", want)
	}
	for _, id := range want {
		if _, ok := created[id]; !ok {
			t.Fatalf("list-grants lists %s, which the test did not create", id)
		}
	}

	first := e.admin.mustPost(t, "list-grants", map[string]any{"key_id": keyID, "limit": "2"})
	if ids := listedGrantIDs(first); fmt.Sprint(ids) != fmt.Sprint(want[:2]) {
		t.Errorf("first page = %v, want %v", ids, want[:2])
	}
	if first.str("truncated") != "true" || first.str("next_marker") != "2" {
		t.Errorf("first page truncated %q next_marker %q, want \"true\" \"2\"",
			first.str("truncated"), first.str("next_marker"))
	}
	if total, _ := first.Body["total"].(float64); total != 3 {
		t.Errorf("total = %v, want the JSON number 3", first.Body["total"])
	}

	last := e.admin.mustPost(t, "list-grants", map[string]any{"key_id": keyID, "limit": 2,
		"marker": first.str("next_marker")})
	if ids := listedGrantIDs(last); fmt.Sprint(ids) != fmt.Sprint(want[2:]) {
		t.Errorf("last page = %v, want %v", ids, want[2:])
	}
	if last.str("truncated") != "false" || last.str("next_marker") != "" {
		t.Errorf("last page truncated %q next_marker %q, want \"false\" \"\"",
			last.str("truncated"), last.str("next_marker"))
	}

	grants, _ := last.Body["grants"].([]any)
	if len(grants) != 1 {
		t.Fatalf("last page has %d grants, want 1", len(grants))
	}
	entry := grants[0].(map[string]any)
	i := created[want[2]]
	wantFields := map[string]any{
		"key_id": keyID, "grant_id": want[2], "grantee_principal": fmt.Sprintf("user%d", i),
		"grantee_principal_type": "user", "name": fmt.Sprintf("grant-%d", i),
		"retiring_principal": "",
	}
	for field, value := range wantFields {
		if entry[field] != value {
			t.Errorf("%s = %v, want %v", field, entry[field], value)
		}
	}
	if ops, _ := entry["operations"].([]any); len(ops) != 1 || ops[0] != "describe-key" {
		t.Errorf("operations = %v, want [describe-key]", entry["operations"])
	}
	if date, _ := entry["creation_date"].(string); !regexp.MustCompile(`^\d{13}$`).MatchString(date) {
		t.Errorf("creation_date = %v, want milliseconds as a string", entry["creation_date"])
	}
	if issuer, _ := entry["issuing_principal"].(string); issuer == "" {
		t.Error("issuing_principal is empty")
	}

	checkError(t, "list-grants with limit 0", e.admin.post(t, "list-grants",
		map[string]any{"key_id": keyID, "limit": "0"}), http.StatusBadRequest, "KMS.1601")
	checkError(t, "list-grants with marker -1", e.admin.post(t, "list-grants",
		map[string]any{"key_id": keyID, "marker": "-1"}), http.StatusBadRequest, "KMS.1602")
	checkError(t, "list-grants without key_id", e.admin.post(t, "list-grants",
		map[string]any{}), http.StatusBadRequest, "KMS.0204")
}

func TestGrantOfAnotherProjectIsInvisible(t *testing.T) {
	e := newTestEnv(t)
	adminP2 := e.newPrincipal(t, auth.RoleAdmin, projectP2, domainD2)
	retirerP1 := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)
	keyP1 := e.admin.createKey(t, "mine")
	keyP2 := adminP2.createKey(t, "theirs")
	grantP2 := adminP2.createGrant(t, keyP2, map[string]any{
		"grantee_principal": retirerP1.userID, "retiring_principal": retirerP1.userID,
		"operations": []string{"decrypt-datakey", "retire-grant"},
	})

	checkError(t, "list-grants of a P2 key", e.admin.post(t, "list-grants",
		map[string]any{"key_id": keyP2}), http.StatusBadRequest, "KMS.0205")
	checkError(t, "revoke-grant on a P2 key", e.admin.post(t, "revoke-grant",
		map[string]any{"key_id": keyP2, "grant_id": grantP2}), http.StatusBadRequest, "KMS.0205")
	checkError(t, "revoke-grant of a P2 grant through a P1 key", e.admin.post(t, "revoke-grant",
		map[string]any{"key_id": keyP1, "grant_id": grantP2}), http.StatusBadRequest, "KMS.2501")
	checkError(t, "retire-grant of a P2 grant through a P1 key", retirerP1.post(t,
		"retire-grant", map[string]any{"key_id": keyP1, "grant_id": grantP2}),
		http.StatusBadRequest, "KMS.2501")

	r := retirerP1.mustPost(t, "list-retirable-grants", map[string]any{})
	if ids := listedGrantIDs(r); len(ids) != 0 {
		t.Errorf("list-retirable-grants in P1 lists %v, want no grant of P2", ids)
	}

	r = adminP2.mustPost(t, "list-grants", map[string]any{"key_id": keyP2})
	if ids := listedGrantIDs(r); len(ids) != 1 || ids[0] != grantP2 {
		t.Errorf("list-grants in P2 = %v, want [%s]", ids, grantP2)
	}
}
