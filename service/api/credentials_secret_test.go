package api

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/auth"
)

func TestCreateCredentialChosenSecret(t *testing.T) {
	e := newTestEnv(t)

	tests := []struct {
		name      string
		accessKey string
		secret    string
		wantOK    bool
	}{
		{"one character", "CHOSENSHORT", "%", false},
		{"40 copies of one letter", "CHOSENREPEATED", strings.Repeat("a", 40), false},
		{"31 random characters", "CHOSEN31", "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aE", false},
		{"40 random characters", "CHOSEN40", "q7Kd2LmX9pRt4vWz8bNc1sYh6jFg3aEu5oQi0TnB", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.admin.do(t, http.MethodPost, credentialsPath(projectP1), map[string]any{
				"access_key": tt.accessKey, "secret_key": tt.secret, "role": auth.RoleCryptoUser,
			})
			if tt.wantOK {
				checkOK(t, "create", r)
				if bytes.Contains(r.Raw, []byte(tt.secret)) {
					t.Errorf("response repeats the chosen secret key: %s", r.Raw)
				}
				client := e.client(tt.accessKey, tt.secret, projectP1)
				checkOK(t, "list-keys with the chosen secret",
					client.do(t, http.MethodPost, "/v1.0/"+projectP1+"/kms/list-keys",
						map[string]any{}))
				return
			}

			checkError(t, "create", r, http.StatusBadRequest, "KMS.0308")
			if !strings.Contains(r.errorMessage(), "secret key") {
				t.Errorf("error message %q does not name the secret key", r.errorMessage())
			}
			if bytes.Contains(r.Raw, []byte(tt.secret)) {
				t.Errorf("response contains the secret key: %s", r.Raw)
			}
		})
	}
}
