package api

import (
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// aliasRoutes registers update-key-alias, update-key-description and the alias API.
func (s *Server) aliasRoutes(g *routeGroup) {
	g.POST("/update-key-alias", s.op(auth.OpUpdateKeyAlias, s.updateKeyAlias))
	g.POST("/update-key-description", s.op(auth.OpUpdateKeyDescription, s.updateKeyDescription))
	g.POST("/aliases", s.op(auth.OpCreateAlias, s.createAlias))
	g.DELETE("/aliases", s.op(auth.OpDeleteAlias, s.deleteAliases))
	g.GET("/aliases", s.op(auth.OpListAliases, s.listAliases))
	g.POST("/alias/associate", s.op(auth.OpAssociateAlias, s.associateAlias))
}

type updateKeyAliasRequest struct {
	KeyID    string `json:"key_id"`
	KeyAlias string `json:"key_alias"`
	Sequence string `json:"sequence"`
}

type keyAliasInfo struct {
	KeyID    string `json:"key_id"`
	KeyAlias string `json:"key_alias"`
}

type updateKeyAliasResponse struct {
	KeyInfo keyAliasInfo `json:"key_info"`
}

func (s *Server) updateKeyAlias(c echo.Context, st *requestState) (any, error) {
	var req updateKeyAliasRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	k, err := s.svc.UpdateKeyAlias(c.Request().Context(), st.principal, req.KeyID, req.KeyAlias)
	if err != nil {
		return nil, err
	}
	return updateKeyAliasResponse{keyAliasInfo{KeyID: k.ID, KeyAlias: k.Alias}}, nil
}

type updateKeyDescriptionRequest struct {
	KeyID          string  `json:"key_id"`
	KeyDescription *string `json:"key_description"`
	Sequence       string  `json:"sequence"`
}

type keyDescriptionInfo struct {
	KeyID          string `json:"key_id"`
	KeyDescription string `json:"key_description"`
}

type updateKeyDescriptionResponse struct {
	KeyInfo keyDescriptionInfo `json:"key_info"`
}

func (s *Server) updateKeyDescription(c echo.Context, st *requestState) (any, error) {
	var req updateKeyDescriptionRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	// key_description is required, but may be empty to clear the description.
	if req.KeyDescription == nil {
		return nil, service.Errorf(service.CodeMissingParameter, "key_description is missing")
	}
	k, err := s.svc.UpdateKeyDescription(c.Request().Context(), st.principal, req.KeyID,
		*req.KeyDescription)
	if err != nil {
		return nil, err
	}
	return updateKeyDescriptionResponse{keyDescriptionInfo{KeyID: k.ID,
		KeyDescription: k.Description}}, nil
}

// aliasEntity is the AliasEntity object of the API. The times are milliseconds since the
// epoch, as strings.
type aliasEntity struct {
	DomainID   string `json:"domain_id"`
	KeyID      string `json:"key_id"`
	Alias      string `json:"alias"`
	AliasURN   string `json:"alias_urn"`
	CreateTime string `json:"create_time"`
	UpdateTime string `json:"update_time"`
}

func (s *Server) aliasEntity(a store.Alias) aliasEntity {
	return aliasEntity{
		DomainID:   a.DomainID,
		KeyID:      a.KeyID,
		Alias:      a.Alias,
		AliasURN:   s.svc.AliasURN(a),
		CreateTime: millis(a.CreatedAt),
		UpdateTime: millis(a.UpdatedAt),
	}
}

type createAliasRequest struct {
	KeyID    string `json:"key_id"`
	Alias    string `json:"alias"`
	Sequence string `json:"sequence"`
}

func (s *Server) createAlias(c echo.Context, st *requestState) (any, error) {
	var req createAliasRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	a, err := s.svc.CreateAlias(c.Request().Context(), st.principal, req.KeyID, req.Alias)
	if err != nil {
		return nil, err
	}
	st.keyID = a.KeyID
	return s.aliasEntity(a), nil
}

type deleteAliasesRequest struct {
	Aliases  []string `json:"aliases"`
	KeyID    string   `json:"key_id"`
	Sequence string   `json:"sequence"`
}

func (s *Server) deleteAliases(c echo.Context, st *requestState) (any, error) {
	var req deleteAliasesRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	_, err := s.svc.DeleteAliases(c.Request().Context(), st.principal, req.KeyID, req.Aliases)
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

type aliasPage struct {
	Aliases  []aliasEntity `json:"aliases"`
	PageInfo pageInfo      `json:"page_info"`
}

type pageInfo struct {
	NextMarker   string `json:"next_marker"`
	CurrentCount int    `json:"current_count"`
}

// listAliases returns a top-level JSON array with one page object, the shape that the
// Huawei Cloud SDK's ListAliases response decodes. Its parameters come from the query
// string, because the SDK sends GET without a body.
func (s *Server) listAliases(c echo.Context, st *requestState) (any, error) {
	keyID := queryValue(c, "key_id")
	st.keyID = keyID
	limit, limitSet, err := queryInt(c, "limit", service.CodeInvalidLimit)
	if err != nil {
		return nil, err
	}
	if limitSet && limit == 0 {
		// An absent limit selects the default, but an explicit 0 is out of range.
		return nil, service.Errorf(service.CodeInvalidLimit, "limit must be 1 to %d",
			service.MaxListLimit)
	}
	marker, _, err := queryInt(c, "marker", service.CodeInvalidMarker)
	if err != nil {
		return nil, err
	}

	res, err := s.svc.ListAliases(c.Request().Context(), st.principal, service.ListAliasesInput{
		KeyID: keyID, Limit: limit, Offset: marker,
	})
	if err != nil {
		return nil, err
	}

	page := aliasPage{
		Aliases:  make([]aliasEntity, 0, len(res.Aliases)),
		PageInfo: pageInfo{CurrentCount: len(res.Aliases)},
	}
	if res.Truncated {
		page.PageInfo.NextMarker = strconv.Itoa(res.NextMarker)
	}
	for _, a := range res.Aliases {
		page.Aliases = append(page.Aliases, s.aliasEntity(a))
	}
	return []aliasPage{page}, nil
}

// queryValue returns a query parameter with surrounding spaces, quotes and newlines
// removed, because old Huawei Cloud SDKs send enum values followed by `"\n`.
func queryValue(c echo.Context, name string) string {
	return strings.Trim(c.QueryParam(name), " \"\r\n\t")
}

// queryInt parses a decimal query parameter and reports whether it was given; absent or
// empty gives 0, false.
func queryInt(c echo.Context, name, code string) (int, bool, error) {
	v := queryValue(c, name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, true, service.Errorf(code, "%s must be a whole number", name)
	}
	return n, true, nil
}

type associateAliasRequest struct {
	Alias       string `json:"alias"`
	TargetKeyID string `json:"target_key_id"`
	Sequence    string `json:"sequence"`
}

func (s *Server) associateAlias(c echo.Context, st *requestState) (any, error) {
	var req associateAliasRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.TargetKeyID

	a, err := s.svc.AssociateAlias(c.Request().Context(), st.principal, req.Alias,
		req.TargetKeyID)
	if err != nil {
		return nil, err
	}
	return s.aliasEntity(a), nil
}
