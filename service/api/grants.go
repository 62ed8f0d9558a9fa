package api

import (
	"context"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// grantRoutes registers the grant operations.
func (s *Server) grantRoutes(g *routeGroup) {
	g.POST("/create-grant", s.op(auth.OpCreateGrant, s.createGrant))
	g.POST("/revoke-grant", s.op(auth.OpRevokeGrant, s.revokeGrant))
	g.POST("/retire-grant", s.op(auth.OpRetireGrant, s.retireGrant))
	g.POST("/list-grants", s.op(auth.OpListGrants, s.listGrants))
	g.POST("/list-retirable-grants", s.op(auth.OpListRetirableGrants, s.listRetirableGrants))
}

type createGrantRequest struct {
	KeyID                string   `json:"key_id"`
	GranteePrincipal     string   `json:"grantee_principal"`
	GranteePrincipalType string   `json:"grantee_principal_type"`
	Operations           []string `json:"operations"`
	Name                 string   `json:"name"`
	RetiringPrincipal    string   `json:"retiring_principal"`
	Sequence             string   `json:"sequence"`
}

type createGrantResponse struct {
	GrantID string `json:"grant_id"`
}

func (s *Server) createGrant(c echo.Context, st *requestState) (any, error) {
	var req createGrantRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	st.keyID = req.KeyID // the key as sent, replaced by its id on success
	g, err := s.svc.CreateGrant(c.Request().Context(), st.principal, service.CreateGrantInput{
		KeyRef:            req.KeyID,
		Grantee:           req.GranteePrincipal,
		GranteeType:       req.GranteePrincipalType,
		Operations:        req.Operations,
		Name:              req.Name,
		RetiringPrincipal: req.RetiringPrincipal,
	})
	if err != nil {
		return nil, err
	}

	st.keyID = g.KeyID
	return createGrantResponse{GrantID: g.ID}, nil
}

type grantIDRequest struct {
	KeyID    string `json:"key_id"`
	GrantID  string `json:"grant_id"`
	Sequence string `json:"sequence"`
}

func (s *Server) revokeGrant(c echo.Context, st *requestState) (any, error) {
	return s.deleteGrant(c, st, s.svc.RevokeGrant)
}

func (s *Server) retireGrant(c echo.Context, st *requestState) (any, error) {
	return s.deleteGrant(c, st, s.svc.RetireGrant)
}

// deleteGrant runs revoke-grant or retire-grant, which differ only in who may call them.
// Both answer an empty JSON object.
func (s *Server) deleteGrant(
	c echo.Context,
	st *requestState,
	remove func(ctx context.Context, p auth.Principal, keyRef, grantID string) (store.Grant, error),
) (any, error) {
	var req grantIDRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	st.keyID = req.KeyID // the key as sent, replaced by its id on success
	g, err := remove(c.Request().Context(), st.principal, req.KeyID, req.GrantID)
	if err != nil {
		return nil, err
	}

	st.keyID = g.KeyID
	return struct{}{}, nil
}

type listGrantsRequest struct {
	KeyID    string     `json:"key_id"`
	Limit    flexString `json:"limit"`
	Marker   flexString `json:"marker"`
	Sequence string     `json:"sequence"`
}

// grantEntry is one grant of a list-grants answer; creation_date is milliseconds since
// the epoch, as a string.
type grantEntry struct {
	KeyID                string   `json:"key_id"`
	GrantID              string   `json:"grant_id"`
	GranteePrincipal     string   `json:"grantee_principal"`
	GranteePrincipalType string   `json:"grantee_principal_type"`
	Operations           []string `json:"operations"`
	IssuingPrincipal     string   `json:"issuing_principal"`
	CreationDate         string   `json:"creation_date"`
	Name                 string   `json:"name"`
	RetiringPrincipal    string   `json:"retiring_principal"`
}

type listGrantsResponse struct {
	Grants     []grantEntry `json:"grants"`
	NextMarker string       `json:"next_marker"`
	Truncated  string       `json:"truncated"`
	Total      int          `json:"total"`
}

func (s *Server) listGrants(c echo.Context, st *requestState) (any, error) {
	in, err := bindListGrants(c, st)
	if err != nil {
		return nil, err
	}

	st.keyID = in.KeyRef // the key as sent, replaced by its id when a grant names it
	res, err := s.svc.ListGrants(c.Request().Context(), st.principal, in)
	if err != nil {
		return nil, err
	}

	if len(res.Grants) > 0 {
		st.keyID = res.Grants[0].KeyID
	}
	return grantsResponse(res), nil
}

func (s *Server) listRetirableGrants(c echo.Context, st *requestState) (any, error) {
	in, err := bindListGrants(c, st)
	if err != nil {
		return nil, err
	}

	res, err := s.svc.ListRetirableGrants(c.Request().Context(), st.principal, in)
	if err != nil {
		return nil, err
	}
	return grantsResponse(res), nil
}

func bindListGrants(c echo.Context, st *requestState) (service.ListGrantsInput, error) {
	var req listGrantsRequest
	if err := bind(c, &req); err != nil {
		return service.ListGrantsInput{}, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return service.ListGrantsInput{}, err
	}

	limit, err := listLimit(req.Limit)
	if err != nil {
		return service.ListGrantsInput{}, err
	}
	marker, _, err := req.Marker.int("marker", service.CodeInvalidMarker)
	if err != nil {
		return service.ListGrantsInput{}, err
	}
	return service.ListGrantsInput{KeyRef: req.KeyID, Limit: limit, Offset: marker}, nil
}

func grantsResponse(res service.ListGrantsResult) listGrantsResponse {
	out := listGrantsResponse{
		Grants:    make([]grantEntry, 0, len(res.Grants)),
		Truncated: strconv.FormatBool(res.Truncated),
		Total:     res.Total,
	}
	if res.Truncated {
		out.NextMarker = strconv.Itoa(res.NextMarker)
	}
	for _, g := range res.Grants {
		out.Grants = append(out.Grants, grantEntry{
			KeyID:                g.KeyID,
			GrantID:              g.ID,
			GranteePrincipal:     g.Grantee,
			GranteePrincipalType: g.GranteeType,
			Operations:           g.Operations,
			IssuingPrincipal:     g.IssuingPrincipal,
			CreationDate:         millis(g.CreatedAt),
			Name:                 g.Name,
			RetiringPrincipal:    g.RetiringPrincipal,
		})
	}
	return out
}
