package auth

import (
	"maps"
	"slices"
)

// Roles, modelled on Huawei Cloud's KMS system roles. Each role may do everything the
// roles before it may: read-only, then crypto-user, then key-manager, then admin.
const (
	// RoleReadOnly may describe and list keys, grants, tags, aliases and quotas.
	RoleReadOnly = "read-only"
	// RoleCryptoUser may also create, encrypt and decrypt data keys and data, and retire
	// grants. Which keys it may use is decided by the service (ownership and grants).
	RoleCryptoUser = "crypto-user"
	// RoleKeyManager may also create and change keys: lifecycle, rotation, aliases,
	// tags, grants and key material import.
	RoleKeyManager = "key-manager"
	// RoleAdmin may do everything, including managing credentials.
	RoleAdmin = "admin"
)

// roleRank orders the roles; a role may perform an operation whose minimum role ranks
// at or below it.
var roleRank = map[string]int{
	RoleReadOnly:   1,
	RoleCryptoUser: 2,
	RoleKeyManager: 3,
	RoleAdmin:      4,
}

// Operation names, the last path segment of the Huawei KMS API v1.0 route where there is
// one ("create-key"), and a descriptive name for the tag, alias and version routes.
const (
	OpCreateKey                     = "create-key"
	OpDescribeKey                   = "describe-key"
	OpListKeys                      = "list-keys"
	OpEnableKey                     = "enable-key"
	OpDisableKey                    = "disable-key"
	OpScheduleKeyDeletion           = "schedule-key-deletion"
	OpCancelKeyDeletion             = "cancel-key-deletion"
	OpUpdateKeyAlias                = "update-key-alias"
	OpUpdateKeyDescription          = "update-key-description"
	OpCreateDatakey                 = "create-datakey"
	OpCreateDatakeyWithoutPlaintext = "create-datakey-without-plaintext"
	OpEncryptDatakey                = "encrypt-datakey"
	OpDecryptDatakey                = "decrypt-datakey"
	OpEncryptData                   = "encrypt-data"
	OpDecryptData                   = "decrypt-data"
	OpGenRandom                     = "gen-random"
	OpCreateGrant                   = "create-grant"
	OpListGrants                    = "list-grants"
	OpRevokeGrant                   = "revoke-grant"
	OpRetireGrant                   = "retire-grant"
	OpListRetirableGrants           = "list-retirable-grants"
	OpEnableKeyRotation             = "enable-key-rotation"
	OpDisableKeyRotation            = "disable-key-rotation"
	OpUpdateKeyRotationInterval     = "update-key-rotation-interval"
	OpGetKeyRotationStatus          = "get-key-rotation-status"
	OpRotateOnDemand                = "rotate-on-demand"
	OpGetParametersForImport        = "get-parameters-for-import"
	OpImportKeyMaterial             = "import-key-material"
	OpDeleteImportedKeyMaterial     = "delete-imported-key-material"
	// OpCreateTag is POST .../kms/{key_id}/tags.
	OpCreateTag = "create-tag"
	// OpDeleteTag is DELETE .../kms/{key_id}/tags/{key}.
	OpDeleteTag = "delete-tag"
	// OpBatchTags is POST .../kms/{key_id}/tags/action (create or delete).
	OpBatchTags = "batch-tags"
	// OpListKeyTags is GET .../kms/{key_id}/tags.
	OpListKeyTags = "list-key-tags"
	// OpListProjectTags is GET .../kms/tags.
	OpListProjectTags = "list-project-tags"
	// OpListResourceInstances is POST .../kms/resource_instances/action.
	OpListResourceInstances = "list-resource-instances"
	OpCreateAlias           = "create-alias"
	OpDeleteAlias           = "delete-alias"
	OpListAliases           = "list-aliases"
	OpAssociateAlias        = "associate-alias"
	OpUserQuotas            = "user-quotas"
	OpUserInstances         = "user-instances"
	// OpListVersions is GET / and GET /{version_id}.
	OpListVersions = "list-versions"
	// OpManageCredentials covers creating, listing, disabling, enabling and deleting
	// access keys.
	OpManageCredentials = "manage-credentials"
)

// minimumRole maps every operation to the lowest role that may perform it. This table is
// the one place that decides what a role may do.
var minimumRole = map[string]string{
	OpDescribeKey:           RoleReadOnly,
	OpListKeys:              RoleReadOnly,
	OpListGrants:            RoleReadOnly,
	OpListRetirableGrants:   RoleReadOnly,
	OpGetKeyRotationStatus:  RoleReadOnly,
	OpListKeyTags:           RoleReadOnly,
	OpListProjectTags:       RoleReadOnly,
	OpListResourceInstances: RoleReadOnly,
	OpListAliases:           RoleReadOnly,
	OpUserQuotas:            RoleReadOnly,
	OpUserInstances:         RoleReadOnly,
	OpListVersions:          RoleReadOnly,

	OpCreateDatakey:                 RoleCryptoUser,
	OpCreateDatakeyWithoutPlaintext: RoleCryptoUser,
	OpEncryptDatakey:                RoleCryptoUser,
	OpDecryptDatakey:                RoleCryptoUser,
	OpEncryptData:                   RoleCryptoUser,
	OpDecryptData:                   RoleCryptoUser,
	OpGenRandom:                     RoleCryptoUser,
	OpRetireGrant:                   RoleCryptoUser,

	OpCreateKey:                 RoleKeyManager,
	OpEnableKey:                 RoleKeyManager,
	OpDisableKey:                RoleKeyManager,
	OpScheduleKeyDeletion:       RoleKeyManager,
	OpCancelKeyDeletion:         RoleKeyManager,
	OpUpdateKeyAlias:            RoleKeyManager,
	OpUpdateKeyDescription:      RoleKeyManager,
	OpCreateGrant:               RoleKeyManager,
	OpRevokeGrant:               RoleKeyManager,
	OpEnableKeyRotation:         RoleKeyManager,
	OpDisableKeyRotation:        RoleKeyManager,
	OpUpdateKeyRotationInterval: RoleKeyManager,
	OpRotateOnDemand:            RoleKeyManager,
	OpGetParametersForImport:    RoleKeyManager,
	OpImportKeyMaterial:         RoleKeyManager,
	OpDeleteImportedKeyMaterial: RoleKeyManager,
	OpCreateTag:                 RoleKeyManager,
	OpDeleteTag:                 RoleKeyManager,
	OpBatchTags:                 RoleKeyManager,
	OpCreateAlias:               RoleKeyManager,
	OpDeleteAlias:               RoleKeyManager,
	OpAssociateAlias:            RoleKeyManager,

	OpManageCredentials: RoleAdmin,
}

// Allowed reports whether role may perform operation. An unknown role or operation is
// never allowed, not even for admin, so a misspelt operation name fails closed.
func Allowed(role, operation string) bool {
	rank, ok := roleRank[role]
	if !ok {
		return false
	}

	required, ok := minimumRole[operation]
	if !ok {
		return false
	}
	return rank >= roleRank[required]
}

// ValidRole reports whether role is one of the Role constants.
func ValidRole(role string) bool {
	_, ok := roleRank[role]
	return ok
}

// Roles returns the role names from least to most privileged.
func Roles() []string {
	return []string{RoleReadOnly, RoleCryptoUser, RoleKeyManager, RoleAdmin}
}

// Operations returns every operation name in the table of Allowed, sorted.
func Operations() []string {
	return slices.Sorted(maps.Keys(minimumRole))
}
