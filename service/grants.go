package service

import (
	"context"
	"encoding/hex"
	"errors"
	"regexp"
	"slices"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// GrantOperations are the operations a grant may allow, as the Huawei Cloud KMS API v1.0
// lists them.
var GrantOperations = []string{
	auth.OpCreateDatakey,
	auth.OpCreateDatakeyWithoutPlaintext,
	auth.OpEncryptDatakey,
	auth.OpDecryptDatakey,
	auth.OpDescribeKey,
	auth.OpCreateGrant,
	auth.OpRetireGrant,
	auth.OpEncryptData,
	auth.OpDecryptData,
}

// grantIDBytes is the size of a grant id before hex encoding: 64 hex digits.
const grantIDBytes = 32

var (
	// grantNamePattern is the grant name rule of the API: 1 to 255 of these characters.
	grantNamePattern = regexp.MustCompile(`^[a-zA-Z0-9:/_-]{1,255}$`)
	// principalPattern accepts a user or domain id: Huawei's are 32 hex digits, and
	// credentials here may use 1 to 64 characters of this alphabet.
	principalPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	grantIDPattern   = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// CreateGrantInput is a create-grant request.
type CreateGrantInput struct {
	KeyRef  string // key id or "alias/<key_alias>"
	Grantee string
	// GranteeType is store.GranteeUser or store.GranteeDomain, or empty for user.
	GranteeType       string
	Operations        []string
	Name              string // may be empty
	RetiringPrincipal string // a user id, or empty
}

// CreateGrant gives in.Grantee the listed operations on a key of the caller's project.
// Key managers and admins may grant any of GrantOperations. A caller whose role does not
// allow create-grant needs a grant of create-grant on the key, and may then grant only
// operations that its own grants on the key include.
func (s *Service) CreateGrant(
	ctx context.Context,
	p auth.Principal,
	in CreateGrantInput,
) (store.Grant, error) {
	if err := validateCreateGrant(&in); err != nil {
		return store.Grant{}, err
	}

	k, err := s.lookupKey(ctx, p.ProjectID, in.KeyRef)
	if err != nil {
		return store.Grant{}, err
	}
	if err := s.authorize(ctx, p, auth.OpCreateGrant, &k); err != nil {
		return store.Grant{}, err
	}
	if err := s.checkDelegatedGrant(ctx, p, k, in.Operations); err != nil {
		return store.Grant{}, err
	}
	if k.State == store.KeyStatePendingDeletion {
		return store.Grant{}, Errorf(CodeKeyPendingDeletion, "the key is pending deletion")
	}

	id, err := s.token.Random(ctx, grantIDBytes)
	if err != nil {
		return store.Grant{}, tokenError("generate grant id", err)
	}

	g := store.Grant{
		ID:                hex.EncodeToString(id),
		KeyID:             k.ID,
		ProjectID:         k.ProjectID,
		Name:              in.Name,
		GranteeType:       in.GranteeType,
		Grantee:           in.Grantee,
		RetiringPrincipal: in.RetiringPrincipal,
		IssuingPrincipal:  p.UserID,
		Operations:        in.Operations,
		CreatedAt:         s.cfg.Clock().UTC(),
	}
	if err := s.storeGrant(ctx, g); err != nil {
		return store.Grant{}, err
	}

	s.log.Info("grant created", "grant_id", g.ID, "key_id", g.KeyID,
		"project_id", g.ProjectID, "grantee_type", g.GranteeType, "grantee", g.Grantee,
		"operations", g.Operations)
	return g, nil
}

func (s *Service) storeGrant(ctx context.Context, g store.Grant) error {
	err := s.store.CreateGrant(ctx, g, s.cfg.GrantsPerKey)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrLimitExceeded):
		return Errorf(CodeGrantQuota, "the key has reached its quota of %d grants",
			s.cfg.GrantsPerKey)
	case errors.Is(err, store.ErrNotFound):
		return errKeyNotFound()
	default:
		return storeError("create grant", err)
	}
}

// validateCreateGrant checks the fields of in, fills in the default grantee type and
// removes repeated operations.
func validateCreateGrant(in *CreateGrantInput) error {
	if in.KeyRef == "" {
		return Errorf(CodeMissingParameter, "key_id is missing")
	}
	if in.Grantee == "" {
		return Errorf(CodeMissingParameter, "grantee_principal is missing")
	}
	if !principalPattern.MatchString(in.Grantee) {
		return Errorf(CodeInvalidUserID,
			"grantee_principal must be 1 to 64 characters of a-z, A-Z, 0-9, '_', '-'")
	}
	if in.RetiringPrincipal != "" && !principalPattern.MatchString(in.RetiringPrincipal) {
		return Errorf(CodeInvalidUserID,
			"retiring_principal must be 1 to 64 characters of a-z, A-Z, 0-9, '_', '-'")
	}

	switch in.GranteeType {
	case "":
		in.GranteeType = store.GranteeUser
	case store.GranteeUser, store.GranteeDomain:
	default:
		return Errorf(CodeInvalidParameter, "grantee_principal_type must be user or domain")
	}

	if in.Name != "" && !grantNamePattern.MatchString(in.Name) {
		return Errorf(CodeInvalidParameter,
			"name must be 1 to 255 characters of a-z, A-Z, 0-9, ':', '/', '_', '-'")
	}
	return validateGrantOperations(in)
}

func validateGrantOperations(in *CreateGrantInput) error {
	if len(in.Operations) == 0 {
		return Errorf(CodeMissingParameter, "operations is missing")
	}

	var unique []string
	for _, op := range in.Operations {
		if !slices.Contains(GrantOperations, op) {
			return Errorf(CodeInvalidParameter, "operations: %q cannot be granted, use one of %v",
				op, GrantOperations)
		}
		if !slices.Contains(unique, op) {
			unique = append(unique, op)
		}
	}
	if len(unique) == 1 && unique[0] == auth.OpCreateGrant {
		return Errorf(CodeGrantOnlyCreateGrant,
			"operations must contain an operation besides create-grant")
	}

	in.Operations = unique
	return nil
}

// checkDelegatedGrant limits a caller that may create grants only through a grant: it
// may pass on only operations that its own grants on k include.
func (s *Service) checkDelegatedGrant(
	ctx context.Context,
	p auth.Principal,
	k store.Key,
	ops []string,
) error {
	if auth.Allowed(p.Role, auth.OpCreateGrant) {
		return nil
	}

	ownGrants, err := s.store.ListGranteeGrants(ctx, k.ID, p.UserID, p.DomainID)
	if err != nil {
		return storeError("list grants of the caller", err)
	}
	for _, op := range ops {
		if !grantsInclude(ownGrants, op) {
			return Errorf(CodeKeyForbidden,
				"the caller cannot grant %s on this key: its own grants do not include it", op)
		}
	}
	return nil
}

// RevokeGrant deletes a grant of a key in the caller's project. The grant stops working
// on the next request on every replica, because grantAllows reads the store each time.
func (s *Service) RevokeGrant(
	ctx context.Context,
	p auth.Principal,
	keyRef, grantID string,
) (store.Grant, error) {
	k, g, err := s.lookupGrant(ctx, p, keyRef, grantID)
	if err != nil {
		return store.Grant{}, err
	}
	if err := s.authorize(ctx, p, auth.OpRevokeGrant, &k); err != nil {
		return store.Grant{}, err
	}

	if err := s.deleteGrant(ctx, g); err != nil {
		return store.Grant{}, err
	}
	s.log.Info("grant revoked", "grant_id", g.ID, "key_id", g.KeyID, "project_id", g.ProjectID,
		"user_id", p.UserID)
	return g, nil
}

// RetireGrant deletes a grant on behalf of one of the principals the grant names: its
// retiring principal (by user id), or its grantee when the grant includes retire-grant,
// as in Huawei Cloud KMS and AWS KMS. The caller's role does not matter, and no one
// else may retire the grant, not even an admin: admins and key managers revoke instead.
func (s *Service) RetireGrant(
	ctx context.Context,
	p auth.Principal,
	keyRef, grantID string,
) (store.Grant, error) {
	_, g, err := s.lookupGrant(ctx, p, keyRef, grantID)
	if err != nil {
		return store.Grant{}, err
	}

	retiring := g.RetiringPrincipal != "" && g.RetiringPrincipal == p.UserID
	grantee := granteeMatches(g, p) && slices.Contains(g.Operations, auth.OpRetireGrant)
	if !retiring && !grantee {
		return store.Grant{}, Errorf(CodeKeyForbidden,
			"only the retiring principal of the grant, or its grantee when the grant includes "+
				"retire-grant, may retire it")
	}

	if err := s.deleteGrant(ctx, g); err != nil {
		return store.Grant{}, err
	}
	s.log.Info("grant retired", "grant_id", g.ID, "key_id", g.KeyID, "project_id", g.ProjectID,
		"user_id", p.UserID)
	return g, nil
}

// lookupGrant returns the key and the grant named by a revoke or retire request. A grant
// of another project is reported as a grant that does not exist.
func (s *Service) lookupGrant(
	ctx context.Context,
	p auth.Principal,
	keyRef, grantID string,
) (store.Key, store.Grant, error) {
	if grantID == "" {
		return store.Key{}, store.Grant{}, Errorf(CodeMissingParameter, "grant_id is missing")
	}
	if !grantIDPattern.MatchString(grantID) {
		return store.Key{}, store.Grant{}, Errorf(CodeInvalidGrantID,
			"grant_id must be 64 hexadecimal digits")
	}

	k, err := s.lookupKey(ctx, p.ProjectID, keyRef)
	if err != nil {
		return store.Key{}, store.Grant{}, err
	}

	g, err := s.store.GetGrant(ctx, p.ProjectID, normalizeGrantID(grantID))
	if errors.Is(err, store.ErrNotFound) {
		return store.Key{}, store.Grant{}, Errorf(CodeInvalidGrantID, "the grant does not exist")
	}
	if err != nil {
		return store.Key{}, store.Grant{}, storeError("get grant", err)
	}
	if g.KeyID != k.ID {
		return store.Key{}, store.Grant{}, Errorf(CodeGrantKeyMismatch,
			"the grant is not a grant of key_id")
	}
	return k, g, nil
}

func (s *Service) deleteGrant(ctx context.Context, g store.Grant) error {
	err := s.store.DeleteGrant(ctx, g.ProjectID, g.ID)
	if errors.Is(err, store.ErrNotFound) {
		return Errorf(CodeInvalidGrantID, "the grant does not exist")
	}
	if err != nil {
		return storeError("delete grant", err)
	}
	return nil
}

// normalizeGrantID lower-cases a grant id, the form the store keeps.
func normalizeGrantID(id string) string {
	b, err := hex.DecodeString(id)
	if err != nil {
		return id
	}
	return hex.EncodeToString(b)
}

// ListGrantsInput is a list-grants or list-retirable-grants request.
type ListGrantsInput struct {
	KeyRef string // list-grants only
	Limit  int    // 1 to MaxListLimit; 0 for DefaultListLimit
	Offset int    // the marker
}

// ListGrantsResult is one page of grants.
type ListGrantsResult struct {
	Grants     []store.Grant
	Total      int
	NextMarker int // 0 when the page is the last
	Truncated  bool
}

// ListGrants lists the grants on a key of the caller's project.
func (s *Service) ListGrants(
	ctx context.Context,
	p auth.Principal,
	in ListGrantsInput,
) (ListGrantsResult, error) {
	page, err := grantPage(in)
	if err != nil {
		return ListGrantsResult{}, err
	}

	k, err := s.lookupKey(ctx, p.ProjectID, in.KeyRef)
	if err != nil {
		return ListGrantsResult{}, err
	}
	if err := s.authorize(ctx, p, auth.OpListGrants, &k); err != nil {
		return ListGrantsResult{}, err
	}

	grants, total, err := s.store.ListGrants(ctx, p.ProjectID, k.ID, page)
	if err != nil {
		return ListGrantsResult{}, storeError("list grants", err)
	}
	return grantResult(grants, total, page), nil
}

// ListRetirableGrants lists the grants in the caller's project whose retiring principal
// is the caller's user id.
func (s *Service) ListRetirableGrants(
	ctx context.Context,
	p auth.Principal,
	in ListGrantsInput,
) (ListGrantsResult, error) {
	if err := s.authorize(ctx, p, auth.OpListRetirableGrants, nil); err != nil {
		return ListGrantsResult{}, err
	}
	page, err := grantPage(in)
	if err != nil {
		return ListGrantsResult{}, err
	}

	grants, total, err := s.store.ListRetirableGrants(ctx, p.ProjectID, p.UserID, page)
	if err != nil {
		return ListGrantsResult{}, storeError("list retirable grants", err)
	}
	return grantResult(grants, total, page), nil
}

func grantPage(in ListGrantsInput) (store.GrantPage, error) {
	if in.Limit == 0 {
		in.Limit = DefaultListLimit
	}
	if in.Limit < 1 || in.Limit > MaxListLimit {
		return store.GrantPage{}, Errorf(CodeInvalidLimit, "limit must be 1 to %d", MaxListLimit)
	}
	if in.Offset < 0 {
		return store.GrantPage{}, Errorf(CodeInvalidMarker, "marker must be 0 or more")
	}
	return store.GrantPage{Offset: in.Offset, Limit: in.Limit}, nil
}

func grantResult(grants []store.Grant, total int, page store.GrantPage) ListGrantsResult {
	res := ListGrantsResult{Grants: grants, Total: total}
	if next := page.Offset + len(grants); next < total {
		res.NextMarker = next
		res.Truncated = true
	}
	return res
}

// grantAllows reports whether a grant on k gives op to p, and adds that grant to the
// Authorization of ctx. It is called only when p's role does not allow op. It reads the store on every call, with no cache, so that a
// revoked grant stops working on the next request on every replica that shares the
// store. The read costs about 0.1 ms on SQLite (BenchmarkListGranteeGrants in
// service/store, a key with 100 grants, on a shared 2-core x86-64 machine).
//
// When no grant allows op, the result tells authorize which denial applies: false with
// a nil error when p is the grantee of some grant in k's project, so the denial is
// about this key (KMS.0306), and false with a KMS.0307 *Error when p holds no grant at
// all, so its role alone decides.
func (s *Service) grantAllows(
	ctx context.Context,
	p auth.Principal,
	op string,
	k store.Key,
) (bool, error) {
	grants, err := s.store.ListGranteeGrants(ctx, k.ID, p.UserID, p.DomainID)
	if err != nil {
		return false, storeError("list grants of the caller", err)
	}
	if g, ok := grantIncluding(grants, op); ok {
		recordGrant(ctx, g.ID)
		return true, nil
	}
	if len(grants) > 0 {
		return false, nil
	}

	has, err := s.store.HasGranteeGrants(ctx, k.ProjectID, p.UserID, p.DomainID)
	if err != nil {
		return false, storeError("check grants of the caller", err)
	}
	if has {
		return false, nil
	}
	return false, Errorf(CodeRoleForbidden, "the role %q has no permission for %s", p.Role, op)
}

// grantsInclude reports whether any of grants allows op.
func grantsInclude(grants []store.Grant, op string) bool {
	_, ok := grantIncluding(grants, op)
	return ok
}

// grantIncluding returns the first of grants that allows op.
func grantIncluding(grants []store.Grant, op string) (store.Grant, bool) {
	for _, g := range grants {
		if slices.Contains(g.Operations, op) {
			return g, true
		}
	}
	return store.Grant{}, false
}

// Authorization is the record of how one request was authorized: the grants that
// allowed operations the caller's role does not allow. The HTTP layer passes one per
// request with WithAuthorization and names its grants in the audit record. It is not
// safe for concurrent use, so a request must not be served by several goroutines at
// once.
type Authorization struct {
	// GrantIDs are the ids of the grants that allowed the request, in the order they
	// were used and without repeats. It is empty when the role allowed everything, and
	// has two ids for a re-encrypt allowed by grants on both keys.
	GrantIDs []string
}

type authorizationKey struct{}

// WithAuthorization returns a copy of ctx in which the service adds to a the grants that
// allow the request.
func WithAuthorization(ctx context.Context, a *Authorization) context.Context {
	return context.WithValue(ctx, authorizationKey{}, a)
}

// IsAuthorizationKey reports whether key is the context key of the *Authorization that
// WithAuthorization adds. A context type of the caller's own can return its
// *Authorization from Value for that key, to spare the allocation of WithAuthorization.
func IsAuthorizationKey(key any) bool {
	_, ok := key.(authorizationKey)
	return ok
}

// recordGrant adds grantID to the Authorization of ctx, when ctx has one.
func recordGrant(ctx context.Context, grantID string) {
	a, _ := ctx.Value(authorizationKey{}).(*Authorization)
	if a == nil || slices.Contains(a.GrantIDs, grantID) {
		return
	}
	a.GrantIDs = append(a.GrantIDs, grantID)
}

// granteeMatches reports whether p is the grantee of g: its user id for a user grant,
// its domain id for a domain grant.
func granteeMatches(g store.Grant, p auth.Principal) bool {
	switch g.GranteeType {
	case store.GranteeUser:
		return g.Grantee != "" && g.Grantee == p.UserID
	case store.GranteeDomain:
		return g.Grantee != "" && g.Grantee == p.DomainID
	default:
		return false
	}
}
