package api

import (
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
)

// rotationRoutes registers the rotation operations.
func (s *Server) rotationRoutes(g *routeGroup) {
	g.POST("/enable-key-rotation", s.op("enable-key-rotation", s.enableKeyRotation))
	g.POST("/disable-key-rotation", s.op("disable-key-rotation", s.disableKeyRotation))
	g.POST("/update-key-rotation-interval",
		s.op("update-key-rotation-interval", s.updateKeyRotationInterval))
	g.POST("/get-key-rotation-status", s.op("get-key-rotation-status", s.getKeyRotationStatus))
	g.POST("/rotate-on-demand", s.op("rotate-on-demand", s.rotateOnDemand))
}

// emptyResponse is the {} body of operations without response fields.
type emptyResponse struct{}

func (s *Server) enableKeyRotation(c echo.Context, st *requestState) (any, error) {
	if _, err := s.changeKeyState(c, st, s.svc.EnableKeyRotation); err != nil {
		return nil, err
	}
	return emptyResponse{}, nil
}

func (s *Server) disableKeyRotation(c echo.Context, st *requestState) (any, error) {
	if _, err := s.changeKeyState(c, st, s.svc.DisableKeyRotation); err != nil {
		return nil, err
	}
	return emptyResponse{}, nil
}

type updateKeyRotationIntervalRequest struct {
	KeyID string `json:"key_id"`
	// RotationInterval is a JSON number in the API; a string holding one is accepted too.
	RotationInterval flexString `json:"rotation_interval"`
	Sequence         string     `json:"sequence"`
}

func (s *Server) updateKeyRotationInterval(c echo.Context, st *requestState) (any, error) {
	var req updateKeyRotationIntervalRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	days, set, err := req.RotationInterval.int("rotation_interval", service.CodeInvalidParameter)
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, service.Errorf(service.CodeMissingParameter, "rotation_interval is missing")
	}

	_, err = s.svc.UpdateKeyRotationInterval(c.Request().Context(), st.principal, req.KeyID, days)
	if err != nil {
		return nil, err
	}
	return emptyResponse{}, nil
}

// keyMaterial is one key version in get-key-rotation-status. state 2 is enabled; the
// API's 0 (waiting for rotation) never occurs because a version is listed only once its
// token object is committed.
type keyMaterial struct {
	MaterialID     string `json:"material_id"`
	ChargeID       string `json:"charge_id"`
	CreateTime     string `json:"create_time"`
	ExpirationTime string `json:"expiration_time"`
	State          int    `json:"state"`
}

const keyMaterialEnabled = 2

type keyRotationStatusResponse struct {
	KeyRotationEnabled bool          `json:"key_rotation_enabled"`
	RotationInterval   int           `json:"rotation_interval"`
	LastRotationTime   string        `json:"last_rotation_time"`
	NumberOfRotations  int           `json:"number_of_rotations"`
	KeyMaterials       []keyMaterial `json:"key_materials"`
}

func (s *Server) getKeyRotationStatus(c echo.Context, st *requestState) (any, error) {
	var req keyIDRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	status, err := s.svc.KeyRotationStatus(c.Request().Context(), st.principal, req.KeyID)
	if err != nil {
		return nil, err
	}

	k := status.Key
	// Huawei's API gives rotation_interval as 30 to 365 days. A key whose rotation was
	// never on has none stored, and enabling rotation would set the default.
	interval := k.RotationInterval
	if interval == 0 {
		interval = service.DefaultRotationInterval
	}
	out := keyRotationStatusResponse{
		KeyRotationEnabled: k.RotationEnabled,
		RotationInterval:   interval,
		LastRotationTime:   millis(k.LastRotationAt),
		NumberOfRotations:  k.RotationCount,
		KeyMaterials:       make([]keyMaterial, 0, len(status.Versions)),
	}
	for _, v := range status.Versions {
		out.KeyMaterials = append(out.KeyMaterials, keyMaterial{
			MaterialID: strconv.FormatUint(uint64(v.Version), 10),
			CreateTime: millis(v.CreatedAt),
			State:      keyMaterialEnabled,
		})
	}
	return out, nil
}

type rotateOnDemandResponse struct {
	KeyID string `json:"key_id"`
}

func (s *Server) rotateOnDemand(c echo.Context, st *requestState) (any, error) {
	k, err := s.changeKeyState(c, st, s.svc.RotateOnDemand)
	if err != nil {
		return nil, err
	}
	st.version = k.CurrentVersion
	return rotateOnDemandResponse{KeyID: k.ID}, nil
}
