package api

import (
	"net/http"
	"sync"
	"testing"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store/storetest"
)

// credentialsPath is the credential collection route of project.
func credentialsPath(project string) string {
	return "/v1.0/" + project + "/kms-admin/credentials"
}

// errorMessage returns the error_msg of an error response.
func (r response) errorMessage() string {
	if inner, ok := r.Body["error"].(map[string]any); ok {
		msg, _ := inner["error_msg"].(string)
		return msg
	}
	msg, _ := r.Body["error_msg"].(string)
	return msg
}

// listedProjects returns the project id of each credential in a list-credentials response.
func listedProjects(t *testing.T, r response) []string {
	t.Helper()
	items, ok := r.Body["credentials"].([]any)
	if !ok {
		t.Fatalf("list-credentials answered no credentials array: %s", r.Raw)
	}

	projects := make([]string, 0, len(items))
	for _, item := range items {
		cred, _ := item.(map[string]any)
		project, _ := cred["project_id"].(string)
		projects = append(projects, project)
	}
	return projects
}

// newP2Admin has the operator (the P1 admin of the harness) create an admin of project
// P2 through HTTP, as the tester did.
func newP2Admin(t *testing.T, e *testEnv) client {
	t.Helper()
	r := e.admin.do(t, http.MethodPost, credentialsPath(projectP1), map[string]any{
		"project_id": projectP2, "domain_id": domainD2, "role": auth.RoleAdmin,
	})
	checkOK(t, "operator creates P2 admin", r)
	if got := r.str("project_id"); got != projectP2 {
		t.Fatalf("created admin is of project %q, expected %s", got, projectP2)
	}
	return e.client(r.str("access_key"), r.str("secret_key"), projectP2)
}

// TestCredentialsTenantAdminConfined walks the tester's steps: an admin of P2 created by
// the operator cannot list, create or change P1's credentials, and so cannot reach P1's
// keys.
func TestCredentialsTenantAdminConfined(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "p1-key")
	p1Reader := e.newPrincipal(t, auth.RoleReadOnly, projectP1, domainD1)
	p2Admin := newP2Admin(t, e)

	t.Run("list shows own project only", func(t *testing.T) {
		r := p2Admin.do(t, http.MethodGet, credentialsPath(projectP2), nil)
		checkOK(t, "list", r)
		projects := listedProjects(t, r)
		if len(projects) != 1 {
			t.Errorf("P2 admin lists %d credentials, expected its own 1", len(projects))
		}
		for _, p := range projects {
			if p != projectP2 {
				t.Errorf("P2 admin lists a credential of project %s", p)
			}
		}
	})

	createCases := []struct {
		name string
		body map[string]any
	}{
		{"other project", map[string]any{"project_id": projectP1, "domain_id": domainD1,
			"role": auth.RoleAdmin}},
		{"other project without domain", map[string]any{"project_id": projectP1,
			"role": auth.RoleCryptoUser}},
		{"own project other domain", map[string]any{"project_id": projectP2,
			"domain_id": domainD1, "role": auth.RoleAdmin}},
		{"default project other domain", map[string]any{"domain_id": domainD1,
			"role": auth.RoleReadOnly}},
	}
	for _, tc := range createCases {
		t.Run("create "+tc.name+" forbidden", func(t *testing.T) {
			r := p2Admin.do(t, http.MethodPost, credentialsPath(projectP2), tc.body)
			checkError(t, "create", r, http.StatusForbidden, "KMS.0307")
		})
	}

	t.Run("create in own project", func(t *testing.T) {
		r := p2Admin.do(t, http.MethodPost, credentialsPath(projectP2),
			map[string]any{"role": auth.RoleCryptoUser})
		checkOK(t, "create", r)
		if got := r.str("project_id"); got != projectP2 {
			t.Errorf("created credential is of project %q, expected %s", got, projectP2)
		}
	})

	unknown := p2Admin.do(t, http.MethodPost, credentialsPath(projectP2)+"/NOSUCHKEY/disable",
		nil)
	if unknown.Status == http.StatusOK {
		t.Fatalf("disable of an unknown access key succeeded: %s", unknown.Raw)
	}
	changeCases := []struct {
		action string
		method string
		suffix string
	}{
		{"disable", http.MethodPost, "/disable"},
		{"enable", http.MethodPost, "/enable"},
		{"delete", http.MethodDelete, ""},
	}
	for _, target := range []struct {
		name string
		ak   string
	}{{"P1 admin", e.admin.ak}, {"P1 reader", p1Reader.ak}} {
		for _, tc := range changeCases {
			t.Run(tc.action+" "+target.name+" answers as unknown", func(t *testing.T) {
				path := credentialsPath(projectP2) + "/" + target.ak + tc.suffix
				r := p2Admin.do(t, tc.method, path, nil)
				checkError(t, tc.action, r, unknown.Status, unknown.code())
				if r.errorMessage() != unknown.errorMessage() {
					t.Errorf("%s message %q differs from the unknown key's %q", tc.action,
						r.errorMessage(), unknown.errorMessage())
				}
			})
		}
	}

	t.Run("P1 credentials still sign", func(t *testing.T) {
		checkOK(t, "P1 admin describe-key",
			e.admin.post(t, "describe-key", map[string]any{"key_id": keyID}))
		checkOK(t, "P1 reader describe-key",
			p1Reader.post(t, "describe-key", map[string]any{"key_id": keyID}))
	})

	t.Run("P1 key out of reach", func(t *testing.T) {
		r := p2Admin.post(t, "describe-key", map[string]any{"key_id": keyID})
		if r.Status == http.StatusOK {
			t.Errorf("P2 admin describes P1's key: %s", r.Raw)
		}
		r = p2Admin.do(t, http.MethodPost, "/v1.0/"+projectP1+"/kms/describe-key",
			map[string]any{"key_id": keyID})
		if r.Status == http.StatusOK {
			t.Errorf("P2 admin describes P1's key through P1's URL: %s", r.Raw)
		}
	})
}

// TestCredentialsOperatorManagesEveryProject checks that an admin of the operator
// project lists, creates and changes the credentials of other projects.
func TestCredentialsOperatorManagesEveryProject(t *testing.T) {
	e := newTestEnv(t)
	p2Admin := newP2Admin(t, e)

	r := e.admin.do(t, http.MethodGet, credentialsPath(projectP1), nil)
	checkOK(t, "operator list", r)
	seen := map[string]bool{}
	for _, p := range listedProjects(t, r) {
		seen[p] = true
	}
	if !seen[projectP1] || !seen[projectP2] {
		t.Errorf("operator lists projects %v, expected both %s and %s", seen, projectP1,
			projectP2)
	}

	path := credentialsPath(projectP1) + "/" + p2Admin.ak
	checkOK(t, "operator disables P2 admin", e.admin.do(t, http.MethodPost, path+"/disable", nil))
	r = p2Admin.do(t, http.MethodGet, credentialsPath(projectP2), nil)
	if r.Status != http.StatusUnauthorized {
		t.Errorf("disabled P2 admin: status %d, expected 401: %s", r.Status, r.Raw)
	}
	checkOK(t, "operator enables P2 admin", e.admin.do(t, http.MethodPost, path+"/enable", nil))
	checkOK(t, "P2 admin lists after enable",
		p2Admin.do(t, http.MethodGet, credentialsPath(projectP2), nil))
	checkOK(t, "operator deletes P2 admin", e.admin.do(t, http.MethodDelete, path, nil))
}

// TestCredentialsTenantAdminManagesOwnProject checks that an admin outside the operator
// project still disables, enables and deletes credentials of its own project.
func TestCredentialsTenantAdminManagesOwnProject(t *testing.T) {
	e := newTestEnv(t)
	p2Admin := newP2Admin(t, e)
	p2User := e.newPrincipal(t, auth.RoleCryptoUser, projectP2, domainD2)

	path := credentialsPath(projectP2) + "/" + p2User.ak
	checkOK(t, "disable", p2Admin.do(t, http.MethodPost, path+"/disable", nil))
	checkOK(t, "enable", p2Admin.do(t, http.MethodPost, path+"/enable", nil))
	checkOK(t, "delete", p2Admin.do(t, http.MethodDelete, path, nil))
}

// TestCredentialsLastOperatorAdminKept checks that the last admin credential of the
// operator project cannot be deleted, while one of two can.
func TestCredentialsLastOperatorAdminKept(t *testing.T) {
	e := newTestEnv(t)
	second := e.newPrincipal(t, auth.RoleAdmin, projectP1, domainD1)

	checkOK(t, "delete one of two operator admins",
		e.admin.do(t, http.MethodDelete, credentialsPath(projectP1)+"/"+second.ak, nil))
	r := e.admin.do(t, http.MethodDelete, credentialsPath(projectP1)+"/"+e.admin.ak, nil)
	checkError(t, "delete the last operator admin", r, http.StatusBadRequest, "KMS.0308")
}

// TestCredentialsLastEnabledOperatorAdminKept checks that the last enabled admin
// credential of the operator project can be neither disabled nor deleted while the only
// other one is disabled, and that it can once another one is enabled.
func TestCredentialsLastEnabledOperatorAdminKept(t *testing.T) {
	e := newTestEnv(t)
	second := e.newPrincipal(t, auth.RoleAdmin, projectP1, domainD1)
	own := credentialsPath(projectP1) + "/" + e.admin.ak
	other := credentialsPath(projectP1) + "/" + second.ak

	checkOK(t, "disable one of two operator admins",
		e.admin.do(t, http.MethodPost, other+"/disable", nil))
	r := e.admin.do(t, http.MethodPost, own+"/disable", nil)
	checkError(t, "disable the last enabled operator admin", r, http.StatusBadRequest,
		"KMS.0308")
	r = e.admin.do(t, http.MethodDelete, own, nil)
	checkError(t, "delete the last enabled operator admin", r, http.StatusBadRequest,
		"KMS.0308")

	checkOK(t, "enable the other operator admin",
		e.admin.do(t, http.MethodPost, other+"/enable", nil))
	checkOK(t, "disable one of two enabled operator admins",
		e.admin.do(t, http.MethodPost, own+"/disable", nil))
}

// TestCredentialCallsStoreUnavailable makes the -wal file of the store immutable, so that
// no write commits, and checks that the credential calls return 503 KMS.0102, as key
// calls do, so that clients retry.
func TestCredentialCallsStoreUnavailable(t *testing.T) {
	requireSQLite(t)
	e := newTestEnv(t)
	created := e.admin.do(t, http.MethodPost, credentialsPath(projectP1),
		map[string]any{"role": auth.RoleReadOnly})
	checkOK(t, "create before the fault", created)
	accessKey := created.str("access_key")

	storetest.SetImmutable(t, e.dbPath+"-wal")
	calls := []struct {
		name   string
		method string
		path   string
		body   map[string]any
	}{
		{"create", http.MethodPost, credentialsPath(projectP1),
			map[string]any{"role": auth.RoleReadOnly}},
		{"disable", http.MethodPost, credentialsPath(projectP1) + "/" + accessKey + "/disable",
			nil},
		{"delete", http.MethodDelete, credentialsPath(projectP1) + "/" + accessKey, nil},
	}
	for _, call := range calls {
		t.Run(call.name, func(t *testing.T) {
			r := e.admin.do(t, call.method, call.path, call.body)
			checkError(t, call.name, r, http.StatusServiceUnavailable, "KMS.0102")
		})
	}
}

// TestCredentialsLastOperatorAdminsRace has the last two enabled operator admins disable
// each other at once, many times over. Exactly one of each pair may succeed, so that
// the operator project always keeps an enabled admin.
func TestCredentialsLastOperatorAdminsRace(t *testing.T) {
	e := newTestEnv(t)
	survivor := e.admin
	for round := range 20 {
		second := e.newPrincipal(t, auth.RoleAdmin, projectP1, domainD1).client
		pair := []client{survivor, second}

		statuses := make([]int, 2)
		var wg sync.WaitGroup
		for i, caller := range pair {
			target := pair[1-i]
			wg.Go(func() {
				r := caller.do(t, http.MethodPost,
					credentialsPath(projectP1)+"/"+target.ak+"/disable", nil)
				statuses[i] = r.Status
			})
		}
		wg.Wait()

		switch {
		case statuses[0] == http.StatusOK && statuses[1] != http.StatusOK:
			survivor = pair[0]
		case statuses[1] == http.StatusOK && statuses[0] != http.StatusOK:
			survivor = pair[1]
		default:
			t.Fatalf("round %d: the two disables returned %v, expected exactly one 200",
				round, statuses)
		}
	}
}
