package api

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// The audit routes are this service's own, under /v1.0/{project_id}/kms-admin/audit, and
// allowed only to admins of the operator project (Config.OperatorProjectID): they read
// the whole trail, every project's calls included, and one chain cannot be split by
// project without breaking its hashes. The public key, which only verifies, is for every
// admin.
// kmsctl audit export and tail page through them; the answers use the lines of the
// export format (audit.Line).

// maxAuditPage bounds the rows of one answer of the audit routes.
const maxAuditPage = 1000

func (s *Server) auditRoutes(g *routeGroup) {
	g.GET("/audit/chains", s.op("list-audit-chains", s.listAuditChains))
	g.GET("/audit/records", s.op("list-audit-records", s.listAuditRecords))
	g.GET("/audit/checkpoints", s.op("list-audit-checkpoints", s.listAuditCheckpoints))
	g.GET("/audit/public-key", s.op("get-audit-public-key", s.auditPublicKey))
}

// checkAuditAdmin returns nil when the caller may use the audit route: every admin for
// the public key (trailWide false), and only an admin of the operator project for the
// routes that read the trail (trailWide true).
func (s *Server) checkAuditAdmin(st *requestState, trailWide bool) error {
	if s.cfg.AuditSource == nil || s.cfg.AuditPublicKey == nil {
		return service.Errorf(service.CodeInvalidURL, "the audit trail is not enabled")
	}
	// The role table of auth.Allowed covers KMS operations; reading the trail is an
	// administrator's task like credential management.
	if st.principal.Role != auth.RoleAdmin {
		return service.Errorf(service.CodeRoleForbidden, "only the admin role reads the audit trail")
	}
	if trailWide && !s.isOperator(st) {
		return service.Errorf(service.CodeRoleForbidden, "only an admin of the operator "+
			"project reads the audit trail, which holds the calls of every project")
	}
	return nil
}

func (s *Server) listAuditChains(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAuditAdmin(st, true); err != nil {
		return nil, err
	}

	chains, err := s.cfg.AuditSource.ListAuditChains(c.Request().Context())
	if err != nil {
		return nil, auditReadError(err)
	}
	lines := make([]audit.Line, 0, len(chains))
	for _, ch := range chains {
		lines = append(lines, audit.ChainLine(ch))
	}
	return map[string]any{"chains": lines}, nil
}

func (s *Server) listAuditRecords(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAuditAdmin(st, true); err != nil {
		return nil, err
	}
	chainID, after, limit, err := auditPage(c)
	if err != nil {
		return nil, err
	}

	records, err := s.cfg.AuditSource.ListAuditRecords(c.Request().Context(), chainID, after,
		limit)
	if err != nil {
		return nil, auditReadError(err)
	}
	lines := make([]audit.Line, 0, len(records))
	for _, r := range records {
		lines = append(lines, audit.RecordLine(r))
	}
	return map[string]any{"records": lines}, nil
}

func (s *Server) listAuditCheckpoints(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAuditAdmin(st, true); err != nil {
		return nil, err
	}
	chainID, after, limit, err := auditPage(c)
	if err != nil {
		return nil, err
	}

	checkpoints, err := s.cfg.AuditSource.ListAuditCheckpoints(c.Request().Context(), chainID,
		after, limit)
	if err != nil {
		return nil, auditReadError(err)
	}
	lines := make([]audit.Line, 0, len(checkpoints))
	for _, cp := range checkpoints {
		lines = append(lines, audit.CheckpointLine(cp))
	}
	return map[string]any{"checkpoints": lines}, nil
}

func (s *Server) auditPublicKey(c echo.Context, st *requestState) (any, error) {
	if err := s.checkAuditAdmin(st, false); err != nil {
		return nil, err
	}

	key, err := s.cfg.AuditPublicKey(c.Request().Context())
	if err != nil {
		return nil, &service.Error{Code: service.CodeUnavailable,
			Message: "the audit signing key is unavailable; retry later", Err: err}
	}
	pem, err := audit.MarshalPublicKey(key)
	if err != nil {
		return nil, &service.Error{Code: service.CodeInternal, Message: "internal error", Err: err}
	}
	return map[string]string{"public_key": string(pem)}, nil
}

// auditPage reads the query parameters chain_id (required), after (a seq, default 0)
// and limit (1 to maxAuditPage, default maxAuditPage).
func auditPage(c echo.Context) (chainID string, after uint64, limit int, err error) {
	chainID = c.QueryParam("chain_id")
	if chainID == "" {
		return "", 0, 0, service.Errorf(service.CodeInvalidParameter, "chain_id is required")
	}

	if v := c.QueryParam("after"); v != "" {
		after, err = strconv.ParseUint(v, 10, 63)
		if err != nil {
			return "", 0, 0, service.Errorf(service.CodeInvalidParameter,
				"after must be a record sequence number")
		}
	}

	limit = maxAuditPage
	if v := c.QueryParam("limit"); v != "" {
		limit, err = strconv.Atoi(v)
		if err != nil || limit < 1 || limit > maxAuditPage {
			return "", 0, 0, service.Errorf(service.CodeInvalidParameter,
				"limit must be 1 to %d", maxAuditPage)
		}
	}
	return chainID, after, limit, nil
}

func auditReadError(err error) error {
	var damaged *store.ChainFileError
	if errors.As(err, &damaged) {
		// Retrying cannot help, so this is not the retryable KMS.0102.
		return &service.Error{Code: service.CodeInternal, Err: err,
			Message: fmt.Sprintf("audit chain %s is damaged at line %d of its chain file; "+
				"run kmsctl audit verify --database on the server to check the trail",
				damaged.ChainID, damaged.Line)}
	}
	return &service.Error{Code: service.CodeUnavailable,
		Message: "the audit trail could not be read; retry later", Err: err}
}

// nameRoute is echo's OnAddRouteHandler. It maps the route being added to the operation
// name that op received just before, so that a call rejected by the middleware before
// its handler runs (signature, project, body size) is recorded under its operation.
func (s *Server) nameRoute(_ string, route echo.Route, _ echo.HandlerFunc, _ []echo.MiddlewareFunc) {
	if s.pendingOp == "" {
		return
	}
	s.routeOps[route.Method+" "+route.Path] = s.pendingOp
	s.pendingOp = ""
}

// operationOf returns the operation name of the route that c matched, or "" when c
// matched no operation route (an unknown URL, which is not recorded).
func (s *Server) operationOf(c echo.Context) string {
	return s.routeOps[c.Request().Method+" "+c.Path()]
}
