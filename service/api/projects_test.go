package api

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/auth"
)

const (
	projectP2 = "fedcba98765432100123456789abcdef"
	domainD2  = "0123456789abcdeffedcba9876543210"
)

// signedRequest builds a request signed by c, with the headers in header set before
// signing, so that they are covered by the signature.
func (c client) signedRequest(
	t *testing.T,
	method, path string,
	body []byte,
	header map[string]string,
) *http.Request {
	t.Helper()

	base := c.base
	if c.env != nil && c.env.http != nil {
		base = c.env.http.URL
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	for name, value := range header {
		req.Header.Set(name, value)
	}
	auth.Sign(req, body, c.ak, c.sk, time.Now())
	return req
}

func TestProjectOfURLMustMatchCredential(t *testing.T) {
	e := newTestEnv(t)
	adminP2 := e.newPrincipal(t, auth.RoleAdmin, projectP2, domainD2)
	adminP2.createKey(t, "p2-key")

	r := send(t, e.admin.signedRequest(t, http.MethodPost, "/v1.0/"+projectP2+"/kms/list-keys",
		[]byte("{}"), map[string]string{"X-Project-Id": projectP2}))
	checkError(t, "list-keys of P2 with a P1 credential", r, http.StatusForbidden, "KMS.0305")
	if _, ok := r.Body["keys"]; ok {
		t.Errorf("the rejected list-keys answer lists keys: %s", r.Raw)
	}

	r = send(t, e.admin.signedRequest(t, http.MethodPost, "/v1.0/"+projectP1+"/kms/list-keys",
		[]byte("{}"), map[string]string{"X-Project-Id": projectP2}))
	checkError(t, "P1 URL with X-Project-Id P2", r, http.StatusForbidden, "KMS.0305")

	req := e.admin.signedRequest(t, http.MethodPost, "/v1.0/"+projectP1+"/kms/list-keys",
		[]byte("{}"), map[string]string{"X-Project-Id": projectP1})
	req.Header.Add("X-Project-Id", projectP2)
	auth.Sign(req, []byte("{}"), e.admin.ak, e.admin.sk, time.Now())
	r = send(t, req)
	checkError(t, "P1 URL with X-Project-Id P1 and then P2", r, http.StatusForbidden, "KMS.0305")

	r = send(t, e.admin.signedRequest(t, http.MethodPost, "/v1.0/"+projectP1+"/kms/list-keys",
		[]byte("{}"), map[string]string{"X-Project-Id": projectP1}))
	checkOK(t, "P1 URL with X-Project-Id P1", r)
	if total, _ := r.Body["total"].(float64); total != 0 {
		t.Errorf("list-keys in P1 counts %v keys, want 0 (the only key is in P2)", r.Body["total"])
	}
}

func TestKeyOfAnotherProjectAnswersAsMissing(t *testing.T) {
	e := newTestEnv(t)
	adminP2 := e.newPrincipal(t, auth.RoleAdmin, projectP2, domainD2)
	keyP2 := adminP2.createKey(t, "p2-key")

	foreign := e.admin.post(t, "describe-key", map[string]any{"key_id": keyP2})
	missing := e.admin.post(t, "describe-key",
		map[string]any{"key_id": "00000000-0000-4000-8000-000000000000"})

	checkError(t, "describe-key of a P2 key", foreign, http.StatusBadRequest, "KMS.0205")
	checkError(t, "describe-key of a missing key", missing, http.StatusBadRequest, "KMS.0205")
	foreignError, _ := foreign.Body["error"].(map[string]any)
	missingError, _ := missing.Body["error"].(map[string]any)
	if foreignError["error_msg"] != missingError["error_msg"] {
		t.Errorf("a P2 key answers %q, a missing key %q: the answers must not differ",
			foreignError["error_msg"], missingError["error_msg"])
	}

	cipher, _ := adminP2.sealedDataKey(t, keyP2)
	checkError(t, "decrypt-datakey with a P2 key", e.admin.post(t, "decrypt-datakey",
		decryptBody(keyP2, cipher)), http.StatusBadRequest, "KMS.0205")
}

func TestListProjects(t *testing.T) {
	e := newTestEnv(t)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP2, domainD2)

	r := send(t, reader.signedRequest(t, http.MethodGet, "/v3/projects?name=local-1", nil, nil))
	checkOK(t, "GET /v3/projects", r)
	projects, _ := r.Body["projects"].([]any)
	if len(projects) != 1 {
		t.Fatalf("GET /v3/projects lists %d projects, want 1: %s", len(projects), r.Raw)
	}
	project, _ := projects[0].(map[string]any)
	want := map[string]any{"id": projectP2, "name": "local-1", "domain_id": domainD2,
		"enabled": true}
	for field, value := range want {
		if project[field] != value {
			t.Errorf("project %s = %v, want %v", field, project[field], value)
		}
	}

	unsigned, err := http.NewRequest(http.MethodGet, e.http.URL+"/v3/projects", nil)
	if err != nil {
		t.Fatal(err)
	}
	r = send(t, unsigned)
	checkError(t, "unsigned GET /v3/projects", r, http.StatusUnauthorized, "APIGW.0301")
}

func TestListProjectsByName(t *testing.T) {
	e := newTestEnv(t)
	reader := e.newPrincipal(t, auth.RoleReadOnly, projectP2, domainD2)

	tests := []struct {
		name  string
		query string
		want  int
	}{
		{"region name", "?name=local-1", 1},
		{"no name", "", 1},
		{"empty name", "?name=", 1},
		{"other region", "?name=cn-north-4", 0},
		{"region prefix", "?name=local", 0},
		{"other project id", "?name=" + projectP1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, reader.signedRequest(t, http.MethodGet, "/v3/projects"+tc.query, nil,
				nil))
			checkOK(t, "GET /v3/projects"+tc.query, r)
			projects, ok := r.Body["projects"].([]any)
			if !ok {
				t.Fatalf("answer has no projects array: %s", r.Raw)
			}
			if len(projects) != tc.want {
				t.Errorf("lists %d projects, want %d: %s", len(projects), tc.want, r.Raw)
			}
		})
	}
}
