package compat

import (
	"net/http"
	"regexp"
	"testing"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
)

// requestIDPattern is the X-Request-Id that kmsd sends: 32 lower-case hex digits.
var requestIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestMissingKeyError(t *testing.T) {
	client := adminClient(t)

	_, err := client.ListKeyDetail(&model.ListKeyDetailRequest{
		Body: &model.OperateKeyRequestBody{KeyId: "0d0466b0-e727-4d9c-b35d-f84bb474a37f"},
	})
	se := serviceError(t, err)

	if se.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", se.StatusCode)
	}
	if se.ErrorCode != "KMS.0205" {
		t.Errorf("error_code = %q, want KMS.0205", se.ErrorCode)
	}
	if se.ErrorMessage == "" {
		t.Error("error_msg is empty")
	}
	if !requestIDPattern.MatchString(se.RequestId) {
		t.Errorf("request id = %q, want the X-Request-Id header (32 hex digits)", se.RequestId)
	}
}

func TestAuthenticationErrors(t *testing.T) {
	admin := kmsd.admin()
	tests := []struct {
		name string
		cred credential
	}{
		{"unknown access key", credential{"COMPATUNKNOWNAK", admin.secretKey, admin.projectID}},
		// One failure for the admin access key stays below the lockout threshold (5).
		{"wrong secret key", credential{admin.accessKey, "not-the-secret", admin.projectID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newClient(t, tt.cred)

			_, err := client.ListKeys(&model.ListKeysRequest{Body: &model.ListKeysRequestBody{}})
			se := serviceError(t, err)

			if se.StatusCode != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401", se.StatusCode)
			}
			if se.ErrorCode != "APIGW.0301" {
				t.Errorf("error_code = %q, want APIGW.0301", se.ErrorCode)
			}
			if !requestIDPattern.MatchString(se.RequestId) {
				t.Errorf("request id = %q, want the X-Request-Id header (32 hex digits)", se.RequestId)
			}
		})
	}
}

func TestOtherProjectRejected(t *testing.T) {
	admin := kmsd.admin()
	client := newClient(t, credential{admin.accessKey, admin.secretKey, randomHex(16)})

	_, err := client.ListKeys(&model.ListKeysRequest{Body: &model.ListKeysRequestBody{}})
	se := serviceError(t, err)

	if se.StatusCode != http.StatusForbidden {
		t.Errorf("status = %d, want 403", se.StatusCode)
	}
	if se.ErrorCode != "KMS.0305" {
		t.Errorf("error_code = %q, want KMS.0305", se.ErrorCode)
	}
}

func TestRouteProbe(t *testing.T) {
	tests := []struct {
		method string
		route  string
		served bool
	}{
		{http.MethodPost, "list-keys", true},
		{http.MethodPost, "describe-key", true},
		{http.MethodPost, "no-such-operation", false},
		{http.MethodGet, "no-such-operation", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.route, func(t *testing.T) {
			if got := routeServed(t, tt.method, tt.route); got != tt.served {
				t.Errorf("routeServed = %t, want %t", got, tt.served)
			}
		})
	}
}
