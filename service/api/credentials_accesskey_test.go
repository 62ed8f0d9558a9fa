package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/auth"
)

// TestCreateCredentialChosenAccessKey checks that only an operator admin may choose an
// access key, and that a project admin gets one response for every chosen access key,
// so that it cannot learn which access keys other projects have.
func TestCreateCredentialChosenAccessKey(t *testing.T) {
	e := newTestEnv(t)
	p2Admin := newP2Admin(t, e)
	p2User := e.newPrincipal(t, auth.RoleCryptoUser, projectP2, domainD2)
	const secret = "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB"
	const unusedKey = "P2UNUSED"
	ctx := context.Background()

	before, err := e.creds.List(ctx)
	if err != nil {
		t.Fatalf("list credentials: %v", err)
	}

	// unused is the response to an access key that no credential has. Every rejected
	// choice of a project admin must get the same response.
	unused := p2Admin.do(t, http.MethodPost, credentialsPath(projectP2), map[string]any{
		"access_key": unusedKey, "secret_key": secret, "role": auth.RoleCryptoUser,
	})
	checkError(t, "project admin with an unused access key", unused, http.StatusBadRequest,
		"KMS.0308")
	for _, want := range []string{"only admins of the operator project", "access_key",
		"kmsd generates them"} {
		if !strings.Contains(unused.errorMessage(), want) {
			t.Errorf("unused access key: message %q does not contain %q",
				unused.errorMessage(), want)
		}
	}
	if _, err := e.creds.Get(ctx, unusedKey); !errors.Is(err, auth.ErrUnknownAccessKey) {
		t.Errorf("get %s after the rejected create: %v, expected ErrUnknownAccessKey",
			unusedKey, err)
	}

	tests := []struct {
		name        string
		caller      client
		body        map[string]any
		wantStatus  int
		wantMessage string
	}{
		{"project admin with another project's access key", p2Admin, map[string]any{
			"access_key": e.admin.ak, "secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusBadRequest, unused.errorMessage()},
		{"project admin with own project's access key", p2Admin, map[string]any{
			"access_key": p2User.ak, "secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusBadRequest, unused.errorMessage()},
		{"project admin with access key only", p2Admin, map[string]any{
			"access_key": e.admin.ak, "role": auth.RoleCryptoUser,
		}, http.StatusBadRequest, unused.errorMessage()},
		{"project admin with secret key only", p2Admin, map[string]any{
			"secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusBadRequest, unused.errorMessage()},
		{"operator admin with an existing access key", e.admin, map[string]any{
			"project_id": projectP2, "domain_id": domainD2, "access_key": p2User.ak,
			"secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusBadRequest, "the access key already exists"},
		{"operator admin for own project", e.admin, map[string]any{
			"access_key": "P1CHOSEN", "secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusOK, ""},
		{"operator admin for another project", e.admin, map[string]any{
			"project_id": projectP2, "domain_id": domainD2, "access_key": "P2CHOSEN",
			"secret_key": secret, "role": auth.RoleCryptoUser,
		}, http.StatusOK, ""},
	}
	created := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.caller.do(t, http.MethodPost, credentialsPath(tt.caller.projectID), tt.body)
			if tt.wantStatus != http.StatusOK {
				checkError(t, "create", r, tt.wantStatus, "KMS.0308")
				if r.errorMessage() != tt.wantMessage {
					t.Errorf("message %q, expected %q", r.errorMessage(), tt.wantMessage)
				}
				return
			}

			checkOK(t, "create", r)
			if r.Status == http.StatusOK {
				created++
			}
			wantProject, _ := tt.body["project_id"].(string)
			if wantProject == "" {
				wantProject = tt.caller.projectID
			}
			if got := r.str("project_id"); got != wantProject {
				t.Errorf("created credential is of project %q, expected %s", got, wantProject)
			}
			if got, want := r.str("access_key"), tt.body["access_key"]; got != want {
				t.Errorf("created access key %q, expected the chosen %q", got, want)
			}
			chosen := e.client(r.str("access_key"), secret, wantProject)
			checkOK(t, "list-keys with the chosen pair", chosen.post(t, "list-keys",
				map[string]any{}))
		})
	}

	after, err := e.creds.List(ctx)
	if err != nil {
		t.Fatalf("list credentials: %v", err)
	}
	if len(after) != len(before)+created {
		t.Errorf("%d credentials after the creates, expected %d before plus %d created",
			len(after), len(before), created)
	}
}
