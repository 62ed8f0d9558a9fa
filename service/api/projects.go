package api

import (
	"github.com/labstack/echo/v4"
)

// The Huawei Cloud SDKs look the project id up with GET /v3/projects?name=<region> on
// the IAM endpoint when their credentials carry none. This service serves that one
// call, so that an SDK pointed at it for IAM too works without a project id. Setting the
// project id in the SDK's credentials avoids the call.

// keystoneProject is a project of the IAM (Keystone v3) project list.
type keystoneProject struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DomainID    string `json:"domain_id"`
	ParentID    string `json:"parent_id"`
	Description string `json:"description"`
	Enabled     bool   `json:"enabled"`
	IsDomain    bool   `json:"is_domain"`
}

type listProjectsResponse struct {
	Projects []keystoneProject `json:"projects"`
}

// projectRoutes registers GET /v3/projects, authenticated by the AK/SK signature alone
// because its path names no project. The middleware is composed here once, because
// echo composes route middleware again on every request.
func (s *Server) projectRoutes() {
	s.echo.GET("/v3/projects",
		s.readBody(s.authenticateSignature(s.op("list-projects", s.listProjects))))
}

// listProjects answers with the project of the caller's credential, named after the
// region, because a credential belongs to one project. A name query parameter other than
// the region matches no project and gets an empty list, as Keystone answers for an
// unknown name.
func (s *Server) listProjects(c echo.Context, st *requestState) (any, error) {
	if name := c.QueryParam("name"); name != "" && name != s.svc.Region() {
		return listProjectsResponse{Projects: []keystoneProject{}}, nil
	}

	p := st.principal
	return listProjectsResponse{Projects: []keystoneProject{{
		ID:       p.ProjectID,
		Name:     s.svc.Region(),
		DomainID: p.DomainID,
		ParentID: p.DomainID,
		Enabled:  true,
	}}}, nil
}

// authenticateSignature verifies the AK/SK signature, as authenticate does, for a route
// without a project id in its path.
func (s *Server) authenticateSignature(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		st := stateOf(c)
		r := c.Request()

		p, err := s.verifier.Verify(r.Context(), r, st.body)
		if err != nil {
			return verifyError(err)
		}
		st.principal = p
		return next(c)
	}
}
