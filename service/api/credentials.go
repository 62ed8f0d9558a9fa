package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// The credential routes are this service's own (Huawei manages access keys in IAM, not
// in KMS), under /v1.0/{project_id}/kms-admin/credentials, signed like every other
// route and allowed only to the admin role.
//
// An admin manages the credentials of its own project only. Admins of the operator
// project (Config.OperatorProjectID, the project of kmsd's bootstrap admin credential)
// manage the credentials of every project. For any other admin, list returns only its
// project's credentials, and create with another project or domain is 403 KMS.0307.
// Create with a chosen access key or secret key is 400 KMS.0308 whether or not that
// access key exists. Disable, enable and delete of another project's access key fail as
// for an unknown access key. So no response reveals whether another project's access
// key exists.
//
// NOTE: a chosen user id that a credential of another domain has is rejected with 400
// KMS.0308 (auth.Credentials.Create), so any admin can learn that such a user id exists.

type createCredentialRequest struct {
	UserID    string `json:"user_id"`
	ProjectID string `json:"project_id"`
	DomainID  string `json:"domain_id"`
	Role      string `json:"role"`
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

type credentialView struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key,omitempty"`
	UserID    string `json:"user_id"`
	ProjectID string `json:"project_id"`
	DomainID  string `json:"domain_id"`
	Role      string `json:"role"`
	Disabled  string `json:"disabled"`
	Created   string `json:"creation_date"`
}

func viewOf(c auth.Credential) credentialView {
	return credentialView{
		AccessKey: c.AccessKey,
		UserID:    c.UserID,
		ProjectID: c.ProjectID,
		DomainID:  c.DomainID,
		Role:      c.Role,
		Disabled:  strconv.FormatBool(c.Disabled),
		Created:   millis(c.CreatedAt),
	}
}

func (s *Server) checkAdmin(st *requestState) error {
	if s.cfg.Credentials == nil {
		return service.Errorf(service.CodeInvalidURL, "credential management is not enabled")
	}
	if !auth.Allowed(st.principal.Role, "manage-credentials") {
		return service.Errorf(service.CodeRoleForbidden, "only the admin role manages credentials")
	}
	return nil
}

// isOperator reports whether the caller may manage the credentials of every project.
func (s *Server) isOperator(st *requestState) bool {
	return s.cfg.OperatorProjectID != "" && st.principal.ProjectID == s.cfg.OperatorProjectID
}

func (s *Server) createCredential(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAdmin(st); err != nil {
		return nil, err
	}
	var req createCredentialRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}

	own := req.ProjectID == "" || req.ProjectID == st.principal.ProjectID
	if own {
		req.ProjectID = st.principal.ProjectID
		if req.DomainID == "" {
			req.DomainID = st.principal.DomainID
		}
	}
	ownDomain := req.DomainID == st.principal.DomainID
	if (!own || !ownDomain) && !s.isOperator(st) {
		return nil, service.Errorf(service.CodeRoleForbidden,
			"an admin creates credentials of its own project and domain only")
	}

	// Access keys are unique across projects, so Create would reject another project's
	// access key as existing. This check runs before Create and does not look at the
	// access key, so it does not tell a project admin which access keys exist. A secret
	// key can be chosen only together with an access key, so it is rejected the same way.
	if (req.AccessKey != "" || req.SecretKey != "") && !s.isOperator(st) {
		return nil, service.Errorf(service.CodeInvalidParameter,
			"only admins of the operator project may choose access_key and secret_key. "+
				"Leave both out, and kmsd generates them")
	}

	cred, secret, err := s.cfg.Credentials.Create(c.Request().Context(), auth.CreateRequest{
		UserID: req.UserID, ProjectID: req.ProjectID, DomainID: req.DomainID, Role: req.Role,
		AccessKey: req.AccessKey, SecretKey: req.SecretKey,
	})
	if err != nil {
		return nil, credentialError(err)
	}

	// A secret key that the caller chose is not sent back, so that it does not reach
	// response logs on the way. The caller already has it.
	v := viewOf(cred)
	if req.SecretKey == "" {
		v.SecretKey = secret
	}
	return v, nil
}

func (s *Server) listCredentials(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAdmin(st); err != nil {
		return nil, err
	}
	creds, err := s.cfg.Credentials.List(c.Request().Context())
	if err != nil {
		return nil, credentialError(err)
	}

	operator := s.isOperator(st)
	out := make([]credentialView, 0, len(creds))
	for _, cr := range creds {
		if operator || cr.ProjectID == st.principal.ProjectID {
			out = append(out, viewOf(cr))
		}
	}
	return map[string]any{"credentials": out, "total": len(out)}, nil
}

func (s *Server) changeCredential(action string) opHandler {
	return func(c echo.Context, st *requestState) (any, error) {
		if err := s.checkAdmin(st); err != nil {
			return nil, err
		}
		ak := c.Param("access_key")
		ctx := c.Request().Context()

		target, err := s.cfg.Credentials.Get(ctx, ak)
		if err != nil {
			return nil, credentialError(err)
		}
		// The project of a credential never changes, so the check holds until the
		// change below.
		if target.ProjectID != st.principal.ProjectID && !s.isOperator(st) {
			return nil, credentialError(fmt.Errorf("%w: %s", auth.ErrUnknownAccessKey, ak))
		}
		if action == "delete" || action == "disable" {
			s.operatorAdmins.Lock()
			defer s.operatorAdmins.Unlock()
			if err := s.checkNotLastOperatorAdmin(ctx, target, action); err != nil {
				return nil, err
			}
		}

		switch action {
		case "disable":
			err = s.cfg.Credentials.Disable(ctx, ak)
		case "enable":
			err = s.cfg.Credentials.Enable(ctx, ak)
		case "delete":
			err = s.cfg.Credentials.Delete(ctx, ak)
		}
		if err != nil {
			return nil, credentialError(err)
		}
		return struct{}{}, nil
	}
}

// checkNotLastOperatorAdmin rejects deleting or disabling (action) an admin credential of
// the operator project unless another enabled one remains. Otherwise no one could manage
// other projects' credentials: a deleted last admin is replaced only at the next start
// of kmsd, and a disabled one not even then.
//
// The caller holds s.operatorAdmins until the change is stored, so two calls of one
// process on the last two operator admins cannot both pass.
//
// NOTE: two replicas can still each let one such call pass at the same time.
func (s *Server) checkNotLastOperatorAdmin(
	ctx context.Context, target auth.Credential, action string,
) error {
	if target.Role != auth.RoleAdmin || target.ProjectID != s.cfg.OperatorProjectID {
		return nil
	}

	creds, err := s.cfg.Credentials.List(ctx)
	if err != nil {
		return credentialError(err)
	}
	for _, cr := range creds {
		if cr.Role == auth.RoleAdmin && cr.ProjectID == s.cfg.OperatorProjectID &&
			!cr.Disabled && cr.AccessKey != target.AccessKey {
			return nil
		}
	}
	return service.Errorf(service.CodeInvalidParameter,
		"the last enabled admin credential of the operator project cannot be %sd; "+
			"create another admin credential in that project first", action)
}

func credentialError(err error) error {
	switch {
	case errors.Is(err, auth.ErrInvalidCredential):
		// The messages of ErrInvalidCredential name the invalid field, never a secret.
		return &service.Error{Code: service.CodeInvalidParameter, Message: err.Error()}
	case errors.Is(err, auth.ErrUnknownAccessKey):
		return service.Errorf(service.CodeInvalidParameter, "the access key does not exist")
	case errors.Is(err, auth.ErrAccessKeyExists):
		return service.Errorf(service.CodeInvalidParameter, "the access key already exists")
	default:
		return credentialBackendError(err)
	}
}

// credentialBackendError turns a failure of the token or the store that keep the
// credentials into a *service.Error: 503 KMS.0102 when either is unavailable, so that
// clients retry, and an internal error otherwise.
func credentialBackendError(err error) error {
	switch {
	case errors.Is(err, hsm.ErrUnavailable):
		// Sealing and unsealing secret keys needs the token.
		return &service.Error{Code: service.CodeUnavailable,
			Message: "the key token is unavailable; retry later", Err: err}
	case errors.Is(err, store.ErrUnavailable):
		return &service.Error{Code: service.CodeUnavailable,
			Message: "the credential store is unavailable; retry later", Err: err}
	default:
		return &service.Error{Code: service.CodeInternal, Message: "internal error", Err: err}
	}
}
