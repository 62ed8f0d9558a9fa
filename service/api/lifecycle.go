package api

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// lifecycleRoutes registers the key state operations and the quota queries.
func (s *Server) lifecycleRoutes(g *routeGroup) {
	g.POST("/enable-key", s.op("enable-key", s.enableKey))
	g.POST("/disable-key", s.op("disable-key", s.disableKey))
	g.POST("/schedule-key-deletion", s.op("schedule-key-deletion", s.scheduleKeyDeletion))
	g.POST("/cancel-key-deletion", s.op("cancel-key-deletion", s.cancelKeyDeletion))
	g.GET("/user-quotas", s.op("user-quotas", s.userQuotas))
	g.GET("/user-instances", s.op("user-instances", s.userInstances))
}

// keyState is the key_info of enable-key and disable-key, and the whole body of
// schedule-key-deletion and cancel-key-deletion.
type keyState struct {
	KeyID    string `json:"key_id"`
	KeyState string `json:"key_state"`
}

type keyStateResponse struct {
	KeyInfo keyState `json:"key_info"`
}

func (s *Server) enableKey(c echo.Context, st *requestState) (any, error) {
	k, err := s.changeKeyState(c, st, s.svc.EnableKey)
	if err != nil {
		return nil, err
	}
	return keyStateResponse{keyState{KeyID: k.ID, KeyState: k.State}}, nil
}

func (s *Server) disableKey(c echo.Context, st *requestState) (any, error) {
	k, err := s.changeKeyState(c, st, s.svc.DisableKey)
	if err != nil {
		return nil, err
	}
	return keyStateResponse{keyState{KeyID: k.ID, KeyState: k.State}}, nil
}

func (s *Server) cancelKeyDeletion(c echo.Context, st *requestState) (any, error) {
	k, err := s.changeKeyState(c, st, s.svc.CancelKeyDeletion)
	if err != nil {
		return nil, err
	}
	return keyState{KeyID: k.ID, KeyState: k.State}, nil
}

// changeKeyState binds a {key_id, sequence} body and runs change on the key.
func (s *Server) changeKeyState(
	c echo.Context,
	st *requestState,
	change func(context.Context, auth.Principal, string) (store.Key, error),
) (store.Key, error) {
	var req keyIDRequest
	if err := bind(c, &req); err != nil {
		return store.Key{}, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return store.Key{}, err
	}
	st.keyID = req.KeyID

	return change(c.Request().Context(), st.principal, req.KeyID)
}

type scheduleKeyDeletionRequest struct {
	KeyID       string     `json:"key_id"`
	PendingDays flexString `json:"pending_days"`
	Sequence    string     `json:"sequence"`
}

func (s *Server) scheduleKeyDeletion(c echo.Context, st *requestState) (any, error) {
	var req scheduleKeyDeletionRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	days, set, err := req.PendingDays.int("pending_days", service.CodeInvalidPendingDays)
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, service.Errorf(service.CodeMissingParameter, "pending_days is missing")
	}

	k, err := s.svc.ScheduleKeyDeletion(c.Request().Context(), st.principal, req.KeyID, days)
	if err != nil {
		return nil, err
	}
	return keyState{KeyID: k.ID, KeyState: k.State}, nil
}

type quotaResource struct {
	Type  string `json:"type"`
	Used  int    `json:"used"`
	Quota int    `json:"quota"`
}

type userQuotasResponse struct {
	Quotas struct {
		Resources []quotaResource `json:"resources"`
	} `json:"quotas"`
}

func (s *Server) userQuotas(c echo.Context, st *requestState) (any, error) {
	quotas, err := s.svc.UserQuotas(c.Request().Context(), st.principal)
	if err != nil {
		return nil, err
	}

	var out userQuotasResponse
	out.Quotas.Resources = make([]quotaResource, 0, len(quotas))
	for _, q := range quotas {
		out.Quotas.Resources = append(out.Quotas.Resources,
			quotaResource{Type: q.Type, Used: q.Used, Quota: q.Quota})
	}
	return out, nil
}

type userInstancesResponse struct {
	InstanceNum int `json:"instance_num"`
}

func (s *Server) userInstances(c echo.Context, st *requestState) (any, error) {
	n, err := s.svc.UserInstances(c.Request().Context(), st.principal)
	if err != nil {
		return nil, err
	}
	return userInstancesResponse{InstanceNum: n}, nil
}
