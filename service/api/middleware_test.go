package api

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

func TestVerifyErrorClassifies(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantAuth    bool
		wantCode    string
		wantMessage string
	}{
		{"bad signature", fmt.Errorf("x: %w", auth.ErrSignatureMismatch), true, "", ""},
		{"token away", fmt.Errorf("unseal: %w", hsm.ErrUnavailable), false, service.CodeUnavailable,
			"the key token is unavailable; retry later"},
		{"database away", fmt.Errorf("get: %w", store.ErrUnavailable), false, service.CodeUnavailable,
			"the credential store is unavailable; retry later"},
		{"other failure", errors.New("boom"), false, service.CodeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verifyError(tt.err)
			var af *authFailure
			if isAuth := errors.As(got, &af); isAuth != tt.wantAuth {
				t.Fatalf("authentication failure = %v, want %v", isAuth, tt.wantAuth)
			}
			if tt.wantAuth {
				return
			}
			var se *service.Error
			if !errors.As(got, &se) {
				t.Fatalf("error %v is not a *service.Error", got)
			}
			if se.Code != tt.wantCode {
				t.Errorf("code = %s, want %s", se.Code, tt.wantCode)
			}
			if se.Message != tt.wantMessage {
				t.Errorf("message = %q, want %q", se.Message, tt.wantMessage)
			}
		})
	}
}
