package store_test

import (
	"testing"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func aliasNames(aliases []store.Alias) []string {
	names := make([]string, 0, len(aliases))
	for _, a := range aliases {
		names = append(names, a.Alias)
	}
	return names
}

func TestAliasLifecycle(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k1 := createKey(t, s, newKey(t, "p1", "k1"))
		k2 := createKey(t, s, newKey(t, "p1", "k2"))
		createKey(t, s, newKey(t, "p2", "k1"))

		for _, name := range []string{"alias/b", "alias/a", "alias/c"} {
			a := store.Alias{ProjectID: "p1", DomainID: "d1", Alias: name, KeyID: k1.ID,
				CreatedAt: baseTime}
			checkErr(t, "CreateAlias("+name+")", s.CreateAlias(ctx, a), nil)
		}
		checkErr(t, "CreateAlias(alias/d on k2)", s.CreateAlias(ctx, store.Alias{
			ProjectID: "p1", DomainID: "d1", Alias: "alias/d", KeyID: k2.ID}), nil)

		got, err := s.GetAlias(ctx, "p1", "alias/a")
		checkErr(t, "GetAlias", err, nil)
		if got.KeyID != k1.ID || got.DomainID != "d1" || !got.CreatedAt.Equal(baseTime) ||
			!got.UpdatedAt.Equal(baseTime) {
			t.Errorf("GetAlias = %+v, want key %s, domain d1, times %v", got, k1.ID, baseTime)
		}

		page, total, err := s.ListAliases(ctx, "p1", store.ListAliasesFilter{Limit: 2})
		checkErr(t, "ListAliases", err, nil)
		if total != 4 || !equalStrings(aliasNames(page), []string{"alias/a", "alias/b"}) {
			t.Errorf("ListAliases page 1 = %v of %d, want [alias/a alias/b] of 4",
				aliasNames(page), total)
		}
		page, total, err = s.ListAliases(ctx, "p1",
			store.ListAliasesFilter{KeyID: k1.ID, Offset: 2, Limit: 10})
		checkErr(t, "ListAliases of k1", err, nil)
		if total != 3 || !equalStrings(aliasNames(page), []string{"alias/c"}) {
			t.Errorf("ListAliases of k1 from 2 = %v of %d, want [alias/c] of 3",
				aliasNames(page), total)
		}

		moved, err := s.AssociateAlias(ctx, "p1", "alias/a", k2.ID)
		checkErr(t, "AssociateAlias", err, nil)
		if moved.KeyID != k2.ID || !moved.CreatedAt.Equal(baseTime) {
			t.Errorf("AssociateAlias = %+v, want key %s and the old creation time", moved, k2.ID)
		}
		if !moved.UpdatedAt.After(baseTime) {
			t.Errorf("AssociateAlias UpdatedAt = %v, want after %v", moved.UpdatedAt, baseTime)
		}

		checkErr(t, "DeleteAliases", s.DeleteAliases(ctx, "p1", k1.ID,
			[]string{"alias/b", "alias/c", "alias/b"}), nil)
		_, total, err = s.ListAliases(ctx, "p1", store.ListAliasesFilter{KeyID: k1.ID, Limit: 10})
		checkErr(t, "ListAliases after delete", err, nil)
		if total != 0 {
			t.Errorf("k1 has %d aliases after delete, want 0", total)
		}

		_, total, err = s.ListAliases(ctx, "p2", store.ListAliasesFilter{Limit: 10})
		checkErr(t, "ListAliases of p2", err, nil)
		if total != 0 {
			t.Errorf("project p2 sees %d aliases, want 0", total)
		}
	})
}

func TestAliasRejects(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k1 := createKey(t, s, newKey(t, "p1", "k1"))
		k2 := createKey(t, s, newKey(t, "p1", "k2"))
		foreign := createKey(t, s, newKey(t, "p2", "k1"))
		alias := func(name, keyID string) store.Alias {
			return store.Alias{ProjectID: "p1", DomainID: "d1", Alias: name, KeyID: keyID}
		}
		checkErr(t, "CreateAlias", s.CreateAlias(ctx, alias("alias/x", k1.ID)), nil)

		tests := []struct {
			name string
			err  error
			want error
		}{
			{"duplicate on the same key", s.CreateAlias(ctx, alias("alias/x", k1.ID)),
				store.ErrAliasExists},
			{"duplicate on another key", s.CreateAlias(ctx, alias("alias/x", k2.ID)),
				store.ErrAliasExists},
			{"key of another project", s.CreateAlias(ctx, alias("alias/y", foreign.ID)),
				store.ErrNotFound},
			{"missing key", s.CreateAlias(ctx, alias("alias/y", newID(t))), store.ErrNotFound},
			{"delete alias of another key",
				s.DeleteAliases(ctx, "p1", k2.ID, []string{"alias/x"}), store.ErrNotFound},
			{"delete unknown alias with a known one",
				s.DeleteAliases(ctx, "p1", k1.ID, []string{"alias/x", "alias/none"}),
				store.ErrNotFound},
			{"delete from another project",
				s.DeleteAliases(ctx, "p2", k1.ID, []string{"alias/x"}), store.ErrNotFound},
			{"get in another project", getAliasErr(t, s, "p2", "alias/x"), store.ErrNotFound},
			{"associate unknown alias", associateErr(t, s, "p1", "alias/none", k2.ID),
				store.ErrNotFound},
			{"associate with key of another project",
				associateErr(t, s, "p1", "alias/x", foreign.ID), store.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				checkErr(t, tc.name, tc.err, tc.want)
			})
		}

		// The failed batch delete deleted nothing.
		got, err := s.GetAlias(ctx, "p1", "alias/x")
		checkErr(t, "GetAlias after the failed delete", err, nil)
		if got.KeyID != k1.ID {
			t.Errorf("alias/x names key %s after failed changes, want %s", got.KeyID, k1.ID)
		}
	})
}

func getAliasErr(t *testing.T, s store.Store, project, alias string) error {
	_, err := s.GetAlias(t.Context(), project, alias)
	return err
}

func associateErr(t *testing.T, s store.Store, project, alias, keyID string) error {
	_, err := s.AssociateAlias(t.Context(), project, alias, keyID)
	return err
}

func TestDeleteKeyRemovesAliasesAndTags(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", "doomed"))
		kept := createKey(t, s, newKey(t, "p1", "kept"))
		for _, id := range []string{k.ID, kept.ID} {
			checkErr(t, "CreateAlias", s.CreateAlias(ctx, store.Alias{ProjectID: "p1",
				DomainID: "d1", Alias: "alias/" + id, KeyID: id}), nil)
			checkErr(t, "PutTags", s.PutTags(ctx, "p1", id,
				[]store.Tag{{Key: "env", Value: "prod"}}, 10), nil)
		}

		checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
		checkErr(t, "DeleteKey", s.DeleteKey(ctx, k.ID), nil)

		db := openRaw(t, b)
		for _, table := range []string{"aliases", "key_tags"} {
			var n int
			query := "SELECT COUNT(*) FROM " + table + " WHERE key_id = '" + k.ID + "'"
			if err := db.QueryRowContext(ctx, query).Scan(&n); err != nil {
				t.Fatalf("count %s: %v", table, err)
			}
			if n != 0 {
				t.Errorf("%s has %d rows of the deleted key, want 0", table, n)
			}
		}

		if _, err := s.GetAlias(ctx, "p1", "alias/"+kept.ID); err != nil {
			t.Errorf("alias of the other key after DeleteKey: %v", err)
		}
		tags, err := s.ListKeyTags(ctx, "p1", kept.ID)
		checkErr(t, "ListKeyTags of the other key", err, nil)
		if len(tags) != 1 {
			t.Errorf("other key has %d tags after DeleteKey, want 1", len(tags))
		}
	})
}

func TestDeleteKeyWithLiveVersionKeepsAliases(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", "live"))
		checkErr(t, "CreateAlias", s.CreateAlias(ctx, store.Alias{ProjectID: "p1",
			DomainID: "d1", Alias: "alias/live", KeyID: k.ID}), nil)

		checkErr(t, "DeleteKey", s.DeleteKey(ctx, k.ID), store.ErrConflict)
		if _, err := s.GetAlias(ctx, "p1", "alias/live"); err != nil {
			t.Errorf("alias after the rejected DeleteKey: %v", err)
		}
	})
}
