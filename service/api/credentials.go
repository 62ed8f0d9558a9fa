package api

import (
	"errors"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
)

// The credential routes are this service's own (Huawei manages access keys in IAM, not
// in KMS), under /v1.0/{project_id}/kms-admin/credentials, signed like every other
// route and allowed only to the admin role. An admin may create credentials for any
// project; the project defaults to the admin's own.

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

func (s *Server) createCredential(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAdmin(st); err != nil {
		return nil, err
	}
	var req createCredentialRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if req.ProjectID == "" {
		req.ProjectID, req.DomainID = st.principal.ProjectID, st.principal.DomainID
	}

	cred, secret, err := s.cfg.Credentials.Create(c.Request().Context(), auth.CreateRequest{
		UserID: req.UserID, ProjectID: req.ProjectID, DomainID: req.DomainID, Role: req.Role,
		AccessKey: req.AccessKey, SecretKey: req.SecretKey,
	})
	if err != nil {
		return nil, credentialError(err)
	}

	v := viewOf(cred)
	v.SecretKey = secret
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

	out := make([]credentialView, 0, len(creds))
	for _, cr := range creds {
		out = append(out, viewOf(cr))
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

		var err error
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
		return &service.Error{Code: service.CodeInternal, Message: "internal error", Err: err}
	}
}
