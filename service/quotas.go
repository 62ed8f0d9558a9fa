package service

import (
	"context"

	"github.com/hsmkms/kms/service/auth"
)

// Quota resource types of user-quotas, as the Huawei Cloud KMS API v1.0 names them.
const (
	QuotaTypeCMK         = "CMK"
	QuotaTypeGrantPerCMK = "grant_per_CMK"
)

// Quota is one resource of user-quotas: how many are used and how many are allowed.
type Quota struct {
	Type  string
	Used  int
	Quota int
}

// UserQuotas returns the caller's project quotas: keys (every state counts, as
// create-key's KMS.1105 check does) and grants per key.
//
// The grant_per_CMK quota limits each key on its own (create-grant's KMS.2404), so its
// used count is the number of grants on the project's key with the most grants, not
// the sum over all keys. Used then never exceeds the quota, and it reaches the quota
// exactly when some key can take no more grants. Huawei's API reference does not
// define this count.
func (s *Service) UserQuotas(ctx context.Context, p auth.Principal) ([]Quota, error) {
	if err := s.authorize(ctx, p, auth.OpUserQuotas, nil); err != nil {
		return nil, err
	}

	keys, err := s.store.CountKeys(ctx, p.ProjectID)
	if err != nil {
		return nil, storeError("count keys", err)
	}

	grants, err := s.store.MaxGrantsPerKey(ctx, p.ProjectID)
	if err != nil {
		return nil, storeError("count grants per key", err)
	}

	return []Quota{
		{Type: QuotaTypeCMK, Used: keys, Quota: s.cfg.KeysPerProject},
		{Type: QuotaTypeGrantPerCMK, Used: grants, Quota: s.cfg.GrantsPerKey},
	}, nil
}

// UserInstances returns how many keys the caller's project has (instance_num). The
// service has no default keys, so every key counts.
func (s *Service) UserInstances(ctx context.Context, p auth.Principal) (int, error) {
	if err := s.authorize(ctx, p, auth.OpUserInstances, nil); err != nil {
		return 0, err
	}

	n, err := s.store.CountKeys(ctx, p.ProjectID)
	if err != nil {
		return 0, storeError("count keys", err)
	}
	return n, nil
}
