package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func newCredential(accessKey string) store.Credential {
	return store.Credential{
		AccessKey:    accessKey,
		SealedSecret: []byte("sealed-secret-of-" + accessKey),
		UserID:       "user-1",
		ProjectID:    "p1",
		DomainID:     "domain-1",
		Role:         "admin",
		CreatedAt:    baseTime,
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		for _, ak := range []string{"AK-B", "AK-A", "AK-C"} {
			checkErr(t, "PutCredential("+ak+")", s.PutCredential(ctx, newCredential(ak)), nil)
		}

		got, err := s.GetCredential(ctx, "AK-A")
		checkErr(t, "GetCredential", err, nil)
		want := newCredential("AK-A")
		want.UpdatedAt = want.CreatedAt
		if !credentialsEqual(got, want) {
			t.Errorf("GetCredential:\n got %+v\nwant %+v", got, want)
		}

		list, err := s.ListCredentials(ctx)
		checkErr(t, "ListCredentials", err, nil)
		var order []string
		for _, c := range list {
			order = append(order, c.AccessKey)
		}
		if !equalStrings(order, []string{"AK-A", "AK-B", "AK-C"}) {
			t.Errorf("ListCredentials order = %v, want [AK-A AK-B AK-C]", order)
		}

		checkErr(t, "SetCredentialDisabled(true)", s.SetCredentialDisabled(ctx, "AK-B", true), nil)
		disabled, err := s.GetCredential(ctx, "AK-B")
		checkErr(t, "GetCredential", err, nil)
		if !disabled.Disabled {
			t.Error("credential is enabled after SetCredentialDisabled(true)")
		}
		if !disabled.UpdatedAt.After(disabled.CreatedAt) {
			t.Errorf("UpdatedAt %v is not after CreatedAt %v", disabled.UpdatedAt,
				disabled.CreatedAt)
		}
		checkErr(t, "SetCredentialDisabled(false)", s.SetCredentialDisabled(ctx, "AK-B", false), nil)
		if enabled, _ := s.GetCredential(ctx, "AK-B"); enabled.Disabled {
			t.Error("credential is disabled after SetCredentialDisabled(false)")
		}

		checkErr(t, "DeleteCredential", s.DeleteCredential(ctx, "AK-C"), nil)
		_, err = s.GetCredential(ctx, "AK-C")
		checkErr(t, "GetCredential after delete", err, store.ErrNotFound)
	})
}

func TestCredentialErrors(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		existing := newCredential("AK-1")
		checkErr(t, "PutCredential", s.PutCredential(ctx, existing), nil)

		tests := []struct {
			name string
			call func() error
			want error
		}{
			{name: "put existing access key",
				call: func() error { return s.PutCredential(ctx, existing) },
				want: store.ErrConflict},
			{name: "get missing", want: store.ErrNotFound,
				call: func() error { _, err := s.GetCredential(ctx, "AK-9"); return err }},
			{name: "disable missing", want: store.ErrNotFound,
				call: func() error { return s.SetCredentialDisabled(ctx, "AK-9", true) }},
			{name: "delete missing", want: store.ErrNotFound,
				call: func() error { return s.DeleteCredential(ctx, "AK-9") }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				checkErr(t, tc.name, err, tc.want)
				if strings.Contains(err.Error(), string(existing.SealedSecret)) {
					t.Errorf("error %q contains the sealed secret", err)
				}
			})
		}

		noSecret := newCredential("AK-2")
		noSecret.SealedSecret = nil
		if err := s.PutCredential(ctx, noSecret); err == nil {
			t.Error("PutCredential without a sealed secret succeeded")
		}
	})
}

func credentialsEqual(a, b store.Credential) bool {
	return bytes.Equal(a.SealedSecret, b.SealedSecret) && a.AccessKey == b.AccessKey &&
		a.UserID == b.UserID && a.ProjectID == b.ProjectID && a.DomainID == b.DomainID &&
		a.Role == b.Role && a.Disabled == b.Disabled && a.CreatedAt.Equal(b.CreatedAt) &&
		a.UpdatedAt.Equal(b.UpdatedAt)
}

// TestPutCredentialDomainsRace creates credentials of one project with ten domains at
// once: exactly one domain may win, and each other call gets a *DomainMismatchError. A
// check before the insert, outside its transaction, let several domains in.
func TestPutCredentialDomainsRace(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		const calls = 10
		errs := make(chan error, calls)
		for i := range calls {
			go func() {
				c := newCredential(fmt.Sprintf("AK-RACE-%d", i))
				c.UserID = fmt.Sprintf("user-%d", i)
				c.DomainID = fmt.Sprintf("domain-%d", i)
				errs <- s.PutCredential(ctx, c)
			}()
		}
		created := 0
		for range calls {
			err := <-errs
			var mismatch *store.DomainMismatchError
			switch {
			case err == nil:
				created++
			case errors.As(err, &mismatch):
				if mismatch.ProjectID != "p1" {
					t.Errorf("mismatch error names project %q, want p1", mismatch.ProjectID)
				}
			default:
				t.Errorf("PutCredential racing on one project: %v", err)
			}
		}
		if created != 1 {
			t.Errorf("%d of %d racing domains got credentials of project p1, want 1", created,
				calls)
		}

		alice := newCredential("AK-ALICE-1")
		alice.UserID, alice.ProjectID, alice.DomainID = "alice", "p3", "domain-a"
		checkErr(t, "PutCredential(alice)", s.PutCredential(ctx, alice), nil)
		alice.AccessKey, alice.ProjectID, alice.DomainID = "AK-ALICE-2", "p4", "domain-b"
		var mismatch *store.DomainMismatchError
		if err := s.PutCredential(ctx, alice); !errors.As(err, &mismatch) || mismatch.UserID != "alice" {
			t.Errorf("PutCredential of alice in another domain = %v, want a mismatch naming "+
				"alice", err)
		}
	})
}

// TestPutCredentialKeepsKeysDomain deletes every credential of a project that has a key
// and then creates one of another domain: the project still belongs to its key's domain.
func TestPutCredentialKeepsKeysDomain(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		first := newCredential("AK-FIRST")
		first.ProjectID, first.DomainID = "p-keys", "domain-1"
		checkErr(t, "PutCredential(first)", s.PutCredential(ctx, first), nil)
		createKey(t, s, newKey(t, "p-keys", "")) // newKey's domain is domain-1
		checkErr(t, "DeleteCredential(first)", s.DeleteCredential(ctx, first.AccessKey), nil)

		other := newCredential("AK-OTHER-DOMAIN")
		other.UserID, other.ProjectID, other.DomainID = "user-2", "p-keys", "domain-2"
		var mismatch *store.DomainMismatchError
		if err := s.PutCredential(ctx, other); !errors.As(err, &mismatch) || mismatch.ProjectID != "p-keys" {
			t.Errorf("PutCredential of another domain for a project with keys = %v, want a "+
				"mismatch naming p-keys", err)
		}
		same := newCredential("AK-SAME-DOMAIN")
		same.UserID, same.ProjectID = "user-3", "p-keys"
		checkErr(t, "PutCredential of the keys' domain", s.PutCredential(ctx, same), nil)
	})
}
