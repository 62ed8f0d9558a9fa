package api

import (
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/store"
)

type createKeyRequest struct {
	KeyAlias            string `json:"key_alias"`
	KeySpec             string `json:"key_spec"`
	KeyUsage            string `json:"key_usage"`
	KeyDescription      string `json:"key_description"`
	Origin              string `json:"origin"`
	EnterpriseProjectID string `json:"enterprise_project_id"`
	Sequence            string `json:"sequence"`
	KeystoreID          string `json:"keystore_id"`
}

type keyInfo struct {
	KeyID    string `json:"key_id"`
	DomainID string `json:"domain_id"`
	RegionID string `json:"region_id"`
}

type createKeyResponse struct {
	KeyInfo keyInfo `json:"key_info"`
}

func (s *Server) createKey(c echo.Context, st *requestState) (any, error) {
	var req createKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	k, err := s.svc.CreateKey(c.Request().Context(), st.principal, service.CreateKeyInput{
		Alias:       req.KeyAlias,
		Spec:        req.KeySpec,
		Usage:       req.KeyUsage,
		Description: req.KeyDescription,
		Origin:      req.Origin,
	})
	if err != nil {
		return nil, err
	}

	st.keyID, st.version = k.ID, k.CurrentVersion
	return createKeyResponse{keyInfo{KeyID: k.ID, DomainID: k.DomainID, RegionID: s.svc.Region()}}, nil
}

// keyDetails is the KeyDetails object of the API; every field is a string.
type keyDetails struct {
	KeyID                  string `json:"key_id"`
	DomainID               string `json:"domain_id"`
	KeyAlias               string `json:"key_alias"`
	Realm                  string `json:"realm"`
	KeySpec                string `json:"key_spec"`
	KeyUsage               string `json:"key_usage"`
	KeyDescription         string `json:"key_description"`
	CreationDate           string `json:"creation_date"`
	ScheduledDeletionDate  string `json:"scheduled_deletion_date"`
	KeyState               string `json:"key_state"`
	DefaultKeyFlag         string `json:"default_key_flag"`
	KeyType                string `json:"key_type"`
	ExpirationTime         string `json:"expiration_time"`
	Origin                 string `json:"origin"`
	KeyRotationEnabled     string `json:"key_rotation_enabled"`
	SysEnterpriseProjectID string `json:"sys_enterprise_project_id"`
	KeystoreID             string `json:"keystore_id"`
}

func (s *Server) details(k store.Key) keyDetails {
	return keyDetails{
		KeyID:                  k.ID,
		DomainID:               k.DomainID,
		KeyAlias:               k.Alias,
		Realm:                  s.svc.Region(),
		KeySpec:                k.Spec,
		KeyUsage:               k.Usage,
		KeyDescription:         k.Description,
		CreationDate:           millis(k.CreatedAt),
		ScheduledDeletionDate:  millis(k.DeletionAt),
		KeyState:               k.State,
		DefaultKeyFlag:         "0",
		KeyType:                "1",
		Origin:                 k.Origin,
		KeyRotationEnabled:     strconv.FormatBool(k.RotationEnabled),
		SysEnterpriseProjectID: "0",
		KeystoreID:             "0",
	}
}

type keyIDRequest struct {
	KeyID    string `json:"key_id"`
	Sequence string `json:"sequence"`
}

type describeKeyResponse struct {
	KeyInfo keyDetails `json:"key_info"`
}

func (s *Server) describeKey(c echo.Context, st *requestState) (any, error) {
	var req keyIDRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	// The audit record names the key as sent when the call fails, and by id when it
	// succeeds, also for an alias.
	st.keyID = req.KeyID
	k, err := s.svc.DescribeKey(c.Request().Context(), st.principal, req.KeyID)
	if err != nil {
		return nil, err
	}

	st.keyID = k.ID
	return describeKeyResponse{s.details(k)}, nil
}

type listKeysRequest struct {
	Limit               flexString `json:"limit"`
	Marker              flexString `json:"marker"`
	KeyState            flexString `json:"key_state"`
	KeySpec             string     `json:"key_spec"`
	EnterpriseProjectID string     `json:"enterprise_project_id"`
	Sequence            string     `json:"sequence"`
}

type listKeysResponse struct {
	Keys       []string     `json:"keys"`
	KeyDetails []keyDetails `json:"key_details"`
	NextMarker string       `json:"next_marker"`
	Truncated  string       `json:"truncated"`
	Total      int          `json:"total"`
}

func (s *Server) listKeys(c echo.Context, st *requestState) (any, error) {
	var req listKeysRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	limit, err := listLimit(req.Limit)
	if err != nil {
		return nil, err
	}
	marker, _, err := req.Marker.int("marker", service.CodeInvalidMarker)
	if err != nil {
		return nil, err
	}

	res, err := s.svc.ListKeys(c.Request().Context(), st.principal, service.ListKeysInput{
		Limit: limit, Offset: marker, State: req.KeyState.value, Spec: req.KeySpec,
	})
	if err != nil {
		return nil, err
	}

	out := listKeysResponse{
		Keys:       make([]string, 0, len(res.Keys)),
		KeyDetails: make([]keyDetails, 0, len(res.Keys)),
		Truncated:  strconv.FormatBool(res.Truncated),
		Total:      res.Total,
	}
	if res.Truncated {
		out.NextMarker = strconv.Itoa(res.NextMarker)
	}
	for _, k := range res.Keys {
		out.Keys = append(out.Keys, k.ID)
		out.KeyDetails = append(out.KeyDetails, s.details(k))
	}
	return out, nil
}

// sequence validates the request's sequence field and keeps it for the audit record.
func sequence(st *requestState, seq string) error {
	if err := service.ValidateSequence(seq); err != nil {
		return err
	}
	st.sequence = seq
	return nil
}
