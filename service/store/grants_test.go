package store_test

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func newGrantID(t testing.TB) string {
	t.Helper()

	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// newGrant returns a grant on k of decrypt-datakey to the user grantee, created at
// baseTime plus offset.
func newGrant(t testing.TB, k store.Key, grantee string, offset time.Duration) store.Grant {
	return store.Grant{
		ID:               newGrantID(t),
		KeyID:            k.ID,
		ProjectID:        k.ProjectID,
		Name:             "grant-" + grantee,
		GranteeType:      store.GranteeUser,
		Grantee:          grantee,
		IssuingPrincipal: "issuer",
		Operations:       []string{"decrypt-datakey"},
		CreatedAt:        baseTime.Add(offset),
	}
}

func grantIDs(grants []store.Grant) []string {
	ids := make([]string, 0, len(grants))
	for _, g := range grants {
		ids = append(ids, g.ID)
	}
	return ids
}

func TestGrantRoundTrip(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "granted"))

		g := newGrant(t, k, "user-1", 0)
		g.RetiringPrincipal = "retirer"
		g.Operations = []string{"describe-key", "encrypt-datakey", "decrypt-datakey"}
		checkErr(t, "CreateGrant", s.CreateGrant(ctx, g, 100), nil)

		got, err := s.GetGrant(ctx, "p1", g.ID)
		checkErr(t, "GetGrant", err, nil)
		if !got.CreatedAt.Equal(g.CreatedAt) {
			t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, g.CreatedAt)
		}
		got.CreatedAt = g.CreatedAt
		if !slices.Equal(got.Operations, g.Operations) {
			t.Errorf("Operations = %v, want %v", got.Operations, g.Operations)
		}
		got.Operations = g.Operations
		if got.ID != g.ID || got.KeyID != g.KeyID || got.ProjectID != g.ProjectID ||
			got.Name != g.Name || got.GranteeType != g.GranteeType || got.Grantee != g.Grantee ||
			got.RetiringPrincipal != g.RetiringPrincipal ||
			got.IssuingPrincipal != g.IssuingPrincipal {
			t.Errorf("GetGrant = %+v, want %+v", got, g)
		}

		_, err = s.GetGrant(ctx, "p2", g.ID)
		checkErr(t, "GetGrant from another project", err, store.ErrNotFound)

		checkErr(t, "CreateGrant with the same id", s.CreateGrant(ctx, g, 100),
			store.ErrConflict)

		checkErr(t, "DeleteGrant from another project", s.DeleteGrant(ctx, "p2", g.ID),
			store.ErrNotFound)
		checkErr(t, "DeleteGrant", s.DeleteGrant(ctx, "p1", g.ID), nil)
		_, err = s.GetGrant(ctx, "p1", g.ID)
		checkErr(t, "GetGrant after DeleteGrant", err, store.ErrNotFound)
		checkErr(t, "DeleteGrant twice", s.DeleteGrant(ctx, "p1", g.ID), store.ErrNotFound)
	})
}

func TestCreateGrantRejects(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "rejects"))

		missingKey := newGrant(t, k, "user-1", 0)
		missingKey.KeyID = newID(t)
		checkErr(t, "CreateGrant on a missing key", s.CreateGrant(ctx, missingKey, 100),
			store.ErrNotFound)

		otherProject := newGrant(t, k, "user-1", 0)
		otherProject.ProjectID = "p2"
		checkErr(t, "CreateGrant on a key of another project",
			s.CreateGrant(ctx, otherProject, 100), store.ErrNotFound)

		comma := newGrant(t, k, "user-1", 0)
		comma.Operations = []string{"a,b"}
		if err := s.CreateGrant(ctx, comma, 100); err == nil {
			t.Error("CreateGrant with a comma in an operation name succeeded")
		}

		none := newGrant(t, k, "user-1", 0)
		none.Operations = nil
		if err := s.CreateGrant(ctx, none, 100); err == nil {
			t.Error("CreateGrant without operations succeeded")
		}
	})
}

func TestCreateGrantLimit(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "limited"))
		other := createKey(t, s, newKey(t, "p1", "unlimited"))

		const limit = 3
		for i := range limit {
			g := newGrant(t, k, "user-1", time.Duration(i)*time.Second)
			checkErr(t, "CreateGrant below the limit", s.CreateGrant(ctx, g, limit), nil)
		}
		checkErr(t, "CreateGrant at the limit",
			s.CreateGrant(ctx, newGrant(t, k, "user-1", time.Hour), limit),
			store.ErrLimitExceeded)
		checkErr(t, "CreateGrant on another key",
			s.CreateGrant(ctx, newGrant(t, other, "user-1", 0), limit), nil)
	})
}

// TestCreateGrantLimitConcurrent creates grants on one key from many goroutines: the
// limit holds because the count and the insert share a transaction that excludes the
// other creations on the key.
func TestCreateGrantLimitConcurrent(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		k := createKey(t, s, newKey(t, "p1", "contended"))

		const limit, writers = 5, 12
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				errs[i] = s.CreateGrant(t.Context(), newGrant(t, k, "user-1", 0), limit)
			})
		}
		wg.Wait()

		created := 0
		for _, err := range errs {
			switch {
			case err == nil:
				created++
			default:
				checkErr(t, "concurrent CreateGrant", err, store.ErrLimitExceeded)
			}
		}
		if created != limit {
			t.Errorf("%d concurrent creations succeeded, want %d", created, limit)
		}
	})
}

func TestListGrantsPaging(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "paged"))
		other := createKey(t, s, newKey(t, "p1", "other"))

		var want []string
		for i := range 5 {
			g := newGrant(t, k, "user-1", time.Duration(i)*time.Second)
			checkErr(t, "CreateGrant", s.CreateGrant(ctx, g, 100), nil)
			want = append(want, g.ID)
		}
		checkErr(t, "CreateGrant on the other key",
			s.CreateGrant(ctx, newGrant(t, other, "user-1", 0), 100), nil)

		tests := []struct {
			name string
			page store.GrantPage
			want []string
		}{
			{name: "first page", page: store.GrantPage{Limit: 2}, want: want[:2]},
			{name: "middle page", page: store.GrantPage{Offset: 2, Limit: 2}, want: want[2:4]},
			{name: "last page", page: store.GrantPage{Offset: 4, Limit: 2}, want: want[4:]},
			{name: "past the end", page: store.GrantPage{Offset: 9, Limit: 2}, want: nil},
			{name: "everything", page: store.GrantPage{Limit: 100}, want: want},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				grants, total, err := s.ListGrants(ctx, "p1", k.ID, tc.page)
				checkErr(t, "ListGrants", err, nil)
				if total != 5 {
					t.Errorf("total = %d, want 5", total)
				}
				if got := grantIDs(grants); !equalStrings(got, tc.want) {
					t.Errorf("page = %v, want %v", got, tc.want)
				}
			})
		}

		grants, total, err := s.ListGrants(ctx, "p2", k.ID, store.GrantPage{Limit: 10})
		checkErr(t, "ListGrants from another project", err, nil)
		if total != 0 || len(grants) != 0 {
			t.Errorf("another project lists %d grants (total %d), want none", len(grants), total)
		}

		_, _, err = s.ListGrants(ctx, "p1", k.ID, store.GrantPage{Limit: 0})
		if err == nil {
			t.Error("ListGrants with limit 0 succeeded")
		}
	})
}

func TestListRetirableGrants(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k1 := createKey(t, s, newKey(t, "p1", "k1"))
		k2 := createKey(t, s, newKey(t, "p1", "k2"))
		kOther := createKey(t, s, newKey(t, "p2", "k3"))

		var want []string
		for i, k := range []store.Key{k1, k2} {
			g := newGrant(t, k, "user-1", time.Duration(i)*time.Second)
			g.RetiringPrincipal = "retirer"
			checkErr(t, "CreateGrant", s.CreateGrant(ctx, g, 100), nil)
			want = append(want, g.ID)
		}
		checkErr(t, "CreateGrant without a retiring principal",
			s.CreateGrant(ctx, newGrant(t, k1, "user-1", time.Hour), 100), nil)
		otherProject := newGrant(t, kOther, "user-1", 0)
		otherProject.RetiringPrincipal = "retirer"
		checkErr(t, "CreateGrant in another project", s.CreateGrant(ctx, otherProject, 100), nil)

		grants, total, err := s.ListRetirableGrants(ctx, "p1", "retirer", store.GrantPage{Limit: 10})
		checkErr(t, "ListRetirableGrants", err, nil)
		if total != 2 {
			t.Errorf("total = %d, want 2", total)
		}
		if got := grantIDs(grants); !equalStrings(got, want) {
			t.Errorf("retirable grants = %v, want %v", got, want)
		}

		grants, total, err = s.ListRetirableGrants(ctx, "p1", "", store.GrantPage{Limit: 10})
		checkErr(t, "ListRetirableGrants of an empty user id", err, nil)
		if total != 0 || len(grants) != 0 {
			t.Errorf("empty user id retires %d grants (total %d), want none", len(grants), total)
		}
	})
}

func TestGranteeGrants(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "grantee"))
		other := createKey(t, s, newKey(t, "p1", "not-granted"))

		toUser := newGrant(t, k, "user-1", 0)
		toDomain := newGrant(t, k, "domain-1", time.Second)
		toDomain.GranteeType = store.GranteeDomain
		toOtherUser := newGrant(t, k, "user-2", 2*time.Second)
		for _, g := range []store.Grant{toUser, toDomain, toOtherUser} {
			checkErr(t, "CreateGrant", s.CreateGrant(ctx, g, 100), nil)
		}

		tests := []struct {
			name     string
			keyID    string
			userID   string
			domainID string
			want     []string
		}{
			{name: "user and domain", keyID: k.ID, userID: "user-1", domainID: "domain-1",
				want: []string{toUser.ID, toDomain.ID}},
			{name: "user only", keyID: k.ID, userID: "user-1", domainID: "domain-9",
				want: []string{toUser.ID}},
			{name: "domain only", keyID: k.ID, userID: "user-9", domainID: "domain-1",
				want: []string{toDomain.ID}},
			{name: "user id as a domain", keyID: k.ID, userID: "user-9", domainID: "user-1",
				want: nil},
			{name: "empty ids", keyID: k.ID, want: nil},
			{name: "another key", keyID: other.ID, userID: "user-1", domainID: "domain-1",
				want: nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				grants, err := s.ListGranteeGrants(ctx, tc.keyID, tc.userID, tc.domainID)
				checkErr(t, "ListGranteeGrants", err, nil)
				if got := grantIDs(grants); !equalStrings(got, tc.want) {
					t.Errorf("grants = %v, want %v", got, tc.want)
				}

				has, err := s.HasGranteeGrants(ctx, "p1", tc.userID, tc.domainID)
				checkErr(t, "HasGranteeGrants", err, nil)
				wantAny := tc.keyID == other.ID || len(tc.want) > 0
				if has != wantAny {
					t.Errorf("HasGranteeGrants = %v, want %v", has, wantAny)
				}
			})
		}

		has, err := s.HasGranteeGrants(ctx, "p2", "user-1", "domain-1")
		checkErr(t, "HasGranteeGrants in another project", err, nil)
		if has {
			t.Error("HasGranteeGrants finds grants of another project")
		}
	})
}

func TestDeleteKeyDeletesGrants(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", "deleted"))
		kept := createKey(t, s, newKey(t, "p1", "kept"))

		g := newGrant(t, k, "user-1", 0)
		checkErr(t, "CreateGrant", s.CreateGrant(ctx, g, 100), nil)
		keptGrant := newGrant(t, kept, "user-1", 0)
		checkErr(t, "CreateGrant on the kept key", s.CreateGrant(ctx, keptGrant, 100), nil)

		checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
		checkErr(t, "DeleteKey", s.DeleteKey(ctx, k.ID), nil)

		_, err := s.GetGrant(ctx, "p1", g.ID)
		checkErr(t, "GetGrant after DeleteKey", err, store.ErrNotFound)
		_, err = s.GetGrant(ctx, "p1", keptGrant.ID)
		checkErr(t, "GetGrant of another key after DeleteKey", err, nil)
	})
}

func TestMaxGrantsPerKey(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		checkMax := func(what, project string, want int) {
			t.Helper()
			got, err := s.MaxGrantsPerKey(ctx, project)
			checkErr(t, "MaxGrantsPerKey "+what, err, nil)
			if got != want {
				t.Errorf("MaxGrantsPerKey %s = %d, want %d", what, got, want)
			}
		}
		checkMax("of a project without keys", "p1", 0)

		busy := createKey(t, s, newKey(t, "p1", "busy"))
		quiet := createKey(t, s, newKey(t, "p1", "quiet"))
		createKey(t, s, newKey(t, "p1", "ungranted"))
		foreign := createKey(t, s, newKey(t, "p2", "foreign"))
		checkMax("of a project without grants", "p1", 0)

		var busyGrants []store.Grant
		for i := range 3 {
			g := newGrant(t, busy, "user-1", time.Duration(i)*time.Second)
			checkErr(t, "CreateGrant on the busy key", s.CreateGrant(ctx, g, 100), nil)
			busyGrants = append(busyGrants, g)
		}
		checkErr(t, "CreateGrant on the quiet key",
			s.CreateGrant(ctx, newGrant(t, quiet, "user-1", 0), 100), nil)
		for i := range 5 {
			g := newGrant(t, foreign, "user-1", time.Duration(i)*time.Second)
			checkErr(t, "CreateGrant in another project", s.CreateGrant(ctx, g, 100), nil)
		}
		checkMax("with 3 and 1 grants on two keys", "p1", 3)
		checkMax("of the other project", "p2", 5)

		for _, g := range busyGrants[:2] {
			checkErr(t, "DeleteGrant", s.DeleteGrant(ctx, "p1", g.ID), nil)
		}
		checkMax("after deleting grants of the busy key", "p1", 1)
	})
}

// BenchmarkListGranteeGrants measures the store read that authorization makes when a
// caller's role does not allow an operation on its own.
func BenchmarkListGranteeGrants(b *testing.B) {
	s, err := store.Open(b.Context(), storetest.SQLiteURL(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	k := store.Key{ID: "00000000-0000-4000-8000-000000000001", ProjectID: "p1",
		DomainID: "domain-1", Spec: "AES_256", Usage: "ENCRYPT_DECRYPT", Origin: "kms",
		State: store.KeyStateEnabled, CurrentVersion: 1}
	if err := s.BeginKeyVersion(b.Context(), k.ID, 1); err != nil {
		b.Fatal(err)
	}
	if err := s.CreateKey(b.Context(), k, 0); err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		g := newGrant(b, k, "user-"+string(rune('a'+i%26)), time.Duration(i)*time.Second)
		if err := s.CreateGrant(b.Context(), g, 100); err != nil {
			b.Fatal(err)
		}
	}

	for b.Loop() {
		if _, err := s.ListGranteeGrants(b.Context(), k.ID, "user-a", "domain-1"); err != nil {
			b.Fatal(err)
		}
	}
}
