package service

import (
	"context"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// grantAllows reports whether a grant on k gives op to p.
func (s *Service) grantAllows(ctx context.Context, p auth.Principal, op string, k store.Key) (bool, error) {
	return false, nil
}
