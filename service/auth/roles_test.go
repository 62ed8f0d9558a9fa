package auth

import "testing"

func TestAllowed(t *testing.T) {
	tests := []struct {
		role      string
		operation string
		want      bool
	}{
		{RoleReadOnly, OpDescribeKey, true},
		{RoleReadOnly, OpListKeys, true},
		{RoleReadOnly, OpListGrants, true},
		{RoleReadOnly, OpUserQuotas, true},
		{RoleReadOnly, OpDecryptDatakey, false},
		{RoleReadOnly, OpGenRandom, false},
		{RoleReadOnly, OpCreateKey, false},

		{RoleCryptoUser, OpDescribeKey, true},
		{RoleCryptoUser, OpCreateDatakey, true},
		{RoleCryptoUser, OpCreateDatakeyWithoutPlaintext, true},
		{RoleCryptoUser, OpEncryptDatakey, true},
		{RoleCryptoUser, OpDecryptDatakey, true},
		{RoleCryptoUser, OpEncryptData, true},
		{RoleCryptoUser, OpDecryptData, true},
		{RoleCryptoUser, OpRetireGrant, true},
		{RoleCryptoUser, OpCreateGrant, false},
		{RoleCryptoUser, OpDisableKey, false},
		{RoleCryptoUser, OpScheduleKeyDeletion, false},

		{RoleKeyManager, OpCreateKey, true},
		{RoleKeyManager, OpScheduleKeyDeletion, true},
		{RoleKeyManager, OpRotateOnDemand, true},
		{RoleKeyManager, OpCreateTag, true},
		{RoleKeyManager, OpCreateAlias, true},
		{RoleKeyManager, OpRevokeGrant, true},
		{RoleKeyManager, OpDecryptData, true},
		{RoleKeyManager, OpManageCredentials, false},

		{RoleAdmin, OpManageCredentials, true},
		{RoleAdmin, OpCreateKey, true},
		{RoleAdmin, "no-such-operation", false},
		{"owner", OpDescribeKey, false},
		{"", OpDescribeKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.role+" "+tt.operation, func(t *testing.T) {
			if got := Allowed(tt.role, tt.operation); got != tt.want {
				t.Errorf("Allowed(%q, %q) = %t, expected %t", tt.role, tt.operation, got, tt.want)
			}
		})
	}
}

func TestAllowedAdminEveryOperation(t *testing.T) {
	for _, operation := range Operations() {
		if !Allowed(RoleAdmin, operation) {
			t.Errorf("admin may not perform %q", operation)
		}
	}
}

func TestRolesNested(t *testing.T) {
	roles := Roles()
	for _, operation := range Operations() {
		for i := 1; i < len(roles); i++ {
			if Allowed(roles[i-1], operation) && !Allowed(roles[i], operation) {
				t.Errorf("%s may perform %q but %s may not", roles[i-1], operation, roles[i])
			}
		}
	}
}

func TestValidRole(t *testing.T) {
	for _, role := range Roles() {
		if !ValidRole(role) {
			t.Errorf("ValidRole(%q) = false", role)
		}
	}
	if ValidRole("Admin") {
		t.Error(`ValidRole("Admin") = true, expected role names to be case-sensitive`)
	}
}
