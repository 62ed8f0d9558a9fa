package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", "alias-1"))
		if k.CurrentVersion != 1 {
			t.Errorf("CurrentVersion after CreateKey = %d, want 1", k.CurrentVersion)
		}
		if got := versionStates(t, s, k.ID); !equalStrings(got, []string{"1:active"}) {
			t.Errorf("versions after CreateKey = %v, want [1:active]", got)
		}

		byAlias, err := s.GetKeyByAlias(ctx, "p1", "alias-1")
		checkErr(t, "GetKeyByAlias", err, nil)
		if byAlias.ID != k.ID {
			t.Errorf("GetKeyByAlias returned key %s, want %s", byAlias.ID, k.ID)
		}

		// Rotate: begin version 2, then activate it with the key update.
		checkErr(t, "BeginKeyVersion(2)", s.BeginKeyVersion(ctx, k.ID, 2), nil)
		rotated := k
		rotated.RotationCount = 1
		rotated.LastRotationAt = baseTime.Add(day)
		checkErr(t, "ActivateKeyVersion(2)", s.ActivateKeyVersion(ctx, rotated, 2), nil)

		got := mustGetKey(t, s, "p1", k.ID)
		if got.CurrentVersion != 2 {
			t.Errorf("CurrentVersion after rotation = %d, want 2", got.CurrentVersion)
		}
		if got.Revision != k.Revision+1 {
			t.Errorf("Revision after rotation = %d, want %d", got.Revision, k.Revision+1)
		}
		if got.RotationCount != 1 {
			t.Errorf("RotationCount after rotation = %d, want 1", got.RotationCount)
		}
		if !got.LastRotationAt.Equal(baseTime.Add(day)) {
			t.Errorf("LastRotationAt = %v, want %v", got.LastRotationAt, baseTime.Add(day))
		}
		want := []string{"1:active", "2:active"}
		if states := versionStates(t, s, k.ID); !equalStrings(states, want) {
			t.Errorf("versions after rotation = %v, want %v", states, want)
		}

		// Destroy both token objects, then delete the key.
		checkErr(t, "MarkVersionDestroyed(1)", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
		checkErr(t, "MarkVersionDestroyed(2)", s.MarkVersionDestroyed(ctx, k.ID, 2), nil)
		checkErr(t, "DeleteKey", s.DeleteKey(ctx, k.ID), nil)

		_, err = s.GetKey(ctx, "p1", k.ID)
		checkErr(t, "GetKey after DeleteKey", err, store.ErrNotFound)
		if states := versionStates(t, s, k.ID); len(states) != 0 {
			t.Errorf("versions after DeleteKey = %v, want none", states)
		}
		_, err = s.GetKeyByAlias(ctx, "p1", "alias-1")
		checkErr(t, "GetKeyByAlias after DeleteKey", err, store.ErrNotFound)
	})
}

func TestGetKeyScoping(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		k := createKey(t, s, newKey(t, "p1", "scoped"))
		createKey(t, s, newKey(t, "p1", ""))

		tests := []struct {
			name    string
			project string
			id      string
			alias   string
			want    error
		}{
			{name: "by id in own project", project: "p1", id: k.ID},
			{name: "by id in other project", project: "p2", id: k.ID, want: store.ErrNotFound},
			{name: "by missing id", project: "p1", id: newID(t), want: store.ErrNotFound},
			{name: "by alias in own project", project: "p1", alias: "scoped"},
			{name: "by alias in other project", project: "p2", alias: "scoped",
				want: store.ErrNotFound},
			{name: "by empty alias", project: "p1", alias: "", want: store.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var err error
				if tc.id != "" {
					_, err = s.GetKey(t.Context(), tc.project, tc.id)
				} else {
					_, err = s.GetKeyByAlias(t.Context(), tc.project, tc.alias)
				}
				checkErr(t, "lookup", err, tc.want)
			})
		}
	})
}

func TestCreateKeyErrors(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		existing := createKey(t, s, newKey(t, "p1", "taken"))
		createKey(t, s, newKey(t, "p1", ""))

		tests := []struct {
			name  string
			key   func() store.Key
			begin bool // call BeginKeyVersion first
			want  error
		}{
			{
				name:  "alias taken in project",
				key:   func() store.Key { return newKey(t, "p1", "taken") },
				begin: true,
				want:  store.ErrAliasExists,
			},
			{
				name:  "alias taken in other project",
				key:   func() store.Key { return newKey(t, "p2", "taken") },
				begin: true,
			},
			{
				name:  "second key without alias",
				key:   func() store.Key { return newKey(t, "p1", "") },
				begin: true,
			},
			{
				name: "duplicate key id",
				key: func() store.Key {
					k := newKey(t, "p1", "other-alias")
					k.ID = existing.ID
					return k
				},
				want: store.ErrConflict,
			},
			{
				name: "version not begun",
				key:  func() store.Key { return newKey(t, "p1", "no-version") },
				want: store.ErrNotFound,
			},
			{
				name: "pending import without version",
				key: func() store.Key {
					k := newKey(t, "p1", "import")
					k.Origin = "external"
					k.State = store.KeyStatePendingImport
					k.CurrentVersion = 0
					return k
				},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx := t.Context()
				k := tc.key()
				if tc.begin {
					checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, k.ID, 1), nil)
				}

				err := s.CreateKey(ctx, k, 0)
				checkErr(t, "CreateKey", err, tc.want)
				if tc.want == nil {
					mustGetKey(t, s, k.ProjectID, k.ID)
					return
				}

				// A failed CreateKey leaves no key row and no active version behind.
				if k.ID != existing.ID {
					_, err := s.GetKey(ctx, k.ProjectID, k.ID)
					checkErr(t, "GetKey after failed CreateKey", err, store.ErrNotFound)
				}
				if tc.want == store.ErrAliasExists && errors.Is(err, store.ErrConflict) {
					t.Errorf("alias error %v also matches ErrConflict", err)
				}
			})
		}

		// The alias conflict rolled back the version activation.
		versions, err := s.ListStaleVersions(t.Context(), time.Now().Add(time.Hour))
		checkErr(t, "ListStaleVersions", err, nil)
		if len(versions) != 1 {
			t.Errorf("creating versions after failed CreateKey = %v, want one", versions)
		}
	})
}

func TestUpdateKey(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		createKey(t, s, newKey(t, "p1", "taken"))
		k := createKey(t, s, newKey(t, "p1", "mine"))

		tests := []struct {
			name   string
			change func(k store.Key) store.Key
			want   error
		}{
			{
				name: "schedule deletion",
				change: func(k store.Key) store.Key {
					k.State = store.KeyStatePendingDeletion
					k.DeletionAt = baseTime.Add(7 * day)
					k.Description = "to be deleted"
					return k
				},
			},
			{
				name: "cancel deletion clears time",
				change: func(k store.Key) store.Key {
					k.State = store.KeyStateDisabled
					k.DeletionAt = time.Time{}
					return k
				},
			},
			{
				name: "enable rotation",
				change: func(k store.Key) store.Key {
					k.RotationEnabled = true
					k.RotationInterval = 90
					return k
				},
			},
			{
				name: "rename alias",
				change: func(k store.Key) store.Key {
					k.Alias = "renamed"
					return k
				},
			},
			{
				name: "stale revision",
				change: func(k store.Key) store.Key {
					k.Revision--
					return k
				},
				want: store.ErrConflict,
			},
			{
				name: "alias taken",
				change: func(k store.Key) store.Key {
					k.Alias = "taken"
					return k
				},
				want: store.ErrAliasExists,
			},
			{
				name: "other project",
				change: func(k store.Key) store.Key {
					k.ProjectID = "p2"
					return k
				},
				want: store.ErrNotFound,
			},
			{
				name: "missing key",
				change: func(k store.Key) store.Key {
					k.ID = newID(t)
					return k
				},
				want: store.ErrNotFound,
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := mustGetKey(t, s, "p1", k.ID)
				changed := tc.change(before)

				updated, err := s.UpdateKey(t.Context(), changed)
				checkErr(t, "UpdateKey", err, tc.want)

				after := mustGetKey(t, s, "p1", k.ID)
				if tc.want != nil {
					if after != before {
						t.Errorf("failed UpdateKey changed the key:\n got %+v\nwant %+v",
							after, before)
					}
					return
				}

				if updated != after {
					t.Errorf("UpdateKey returned %+v, stored %+v", updated, after)
				}
				if after.Revision != before.Revision+1 {
					t.Errorf("Revision = %d, want %d", after.Revision, before.Revision+1)
				}
				if after.UpdatedAt.Before(before.UpdatedAt) {
					t.Errorf("UpdatedAt went back from %v to %v", before.UpdatedAt, after.UpdatedAt)
				}
				// Compare everything but the fields the store sets.
				changed.Revision, changed.UpdatedAt = after.Revision, after.UpdatedAt
				if after != changed {
					t.Errorf("stored key:\n got %+v\nwant %+v", after, changed)
				}
			})
		}
	})
}

func TestUpdateKeyConcurrentRevision(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		k := createKey(t, s, newKey(t, "p1", ""))

		const writers = 8
		errs := make(chan error, writers)
		start := make(chan struct{})
		for i := range writers {
			go func() {
				<-start
				update := k
				update.Description = "writer " + string(rune('a'+i))
				_, err := s.UpdateKey(t.Context(), update)
				errs <- err
			}()
		}
		close(start)

		won := 0
		for range writers {
			err := <-errs
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("UpdateKey failed with %v, want nil or ErrConflict", err)
			}
		}
		if won != 1 {
			t.Errorf("%d updates from one revision succeeded, want 1", won)
		}
		if got := mustGetKey(t, s, "p1", k.ID); got.Revision != k.Revision+1 {
			t.Errorf("Revision = %d, want %d", got.Revision, k.Revision+1)
		}
	})
}

func TestActivateKeyVersionErrors(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		tests := []struct {
			name      string
			prepare   func(k store.Key) store.Key // returns the key passed to Activate
			version   uint32
			want      error
			wantAfter []string
		}{
			{
				name:      "stale revision",
				prepare:   func(k store.Key) store.Key { k.Revision--; return k },
				version:   2,
				want:      store.ErrConflict,
				wantAfter: []string{"1:active", "2:creating"},
			},
			{
				name: "destroyed version",
				prepare: func(k store.Key) store.Key {
					checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 2), nil)
					return k
				},
				version:   2,
				want:      store.ErrConflict,
				wantAfter: []string{"1:active", "2:destroyed"},
			},
			{
				name:      "version not begun",
				prepare:   func(k store.Key) store.Key { return k },
				version:   3,
				want:      store.ErrNotFound,
				wantAfter: []string{"1:active", "2:creating"},
			},
			{
				name:      "other project",
				prepare:   func(k store.Key) store.Key { k.ProjectID = "p2"; return k },
				version:   2,
				want:      store.ErrNotFound,
				wantAfter: []string{"1:active", "2:creating"},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				k := createKey(t, s, newKey(t, "p1", ""))
				checkErr(t, "BeginKeyVersion(2)", s.BeginKeyVersion(ctx, k.ID, 2), nil)
				update := tc.prepare(k)

				err := s.ActivateKeyVersion(ctx, update, tc.version)
				checkErr(t, "ActivateKeyVersion", err, tc.want)

				if got := mustGetKey(t, s, "p1", k.ID); got != k {
					t.Errorf("failed ActivateKeyVersion changed the key:\n got %+v\nwant %+v",
						got, k)
				}
				if got := versionStates(t, s, k.ID); !equalStrings(got, tc.wantAfter) {
					t.Errorf("versions = %v, want %v", got, tc.wantAfter)
				}
			})
		}
	})
}

func TestKeyVersionBeginAbort(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", ""))

		checkErr(t, "BeginKeyVersion(2)", s.BeginKeyVersion(ctx, k.ID, 2), nil)
		checkErr(t, "BeginKeyVersion(2) again", s.BeginKeyVersion(ctx, k.ID, 2),
			store.ErrConflict)
		checkErr(t, "BeginKeyVersion(1) of active", s.BeginKeyVersion(ctx, k.ID, 1),
			store.ErrConflict)

		tests := []struct {
			name    string
			version uint32
			want    error
		}{
			{name: "creating version", version: 2},
			{name: "aborted version", version: 2, want: store.ErrNotFound},
			{name: "active version", version: 1, want: store.ErrConflict},
			{name: "missing version", version: 9, want: store.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := s.AbortKeyVersion(ctx, k.ID, tc.version)
				checkErr(t, "AbortKeyVersion", err, tc.want)
			})
		}

		if got := versionStates(t, s, k.ID); !equalStrings(got, []string{"1:active"}) {
			t.Errorf("versions = %v, want [1:active]", got)
		}
	})
}

func TestMarkVersionDestroyed(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		k := createKey(t, s, newKey(t, "p1", ""))
		checkErr(t, "BeginKeyVersion(2)", s.BeginKeyVersion(ctx, k.ID, 2), nil)

		tests := []struct {
			name    string
			version uint32
			want    error
		}{
			{name: "active version", version: 1},
			{name: "creating version", version: 2},
			{name: "destroyed again", version: 1},
			{name: "missing version", version: 3, want: store.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				checkErr(t, "MarkVersionDestroyed",
					s.MarkVersionDestroyed(ctx, k.ID, tc.version), tc.want)
			})
		}

		want := []string{"1:destroyed", "2:destroyed"}
		if got := versionStates(t, s, k.ID); !equalStrings(got, want) {
			t.Errorf("versions = %v, want %v", got, want)
		}
	})
}

func TestDeleteKeyRefusal(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		tests := []struct {
			name    string
			prepare func(k store.Key)
			want    error
			kept    []string // versions left after a refusal
		}{
			{
				name:    "active version",
				prepare: func(k store.Key) {},
				want:    store.ErrConflict,
				kept:    []string{"1:active"},
			},
			{
				name: "one version still active",
				prepare: func(k store.Key) {
					checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, k.ID, 2), nil)
					checkErr(t, "ActivateKeyVersion", s.ActivateKeyVersion(ctx, k, 2), nil)
					checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
				},
				want: store.ErrConflict,
				kept: []string{"1:destroyed", "2:active"},
			},
			{
				name: "creating version",
				prepare: func(k store.Key) {
					checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
					checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, k.ID, 2), nil)
				},
				want: store.ErrConflict,
				kept: []string{"1:destroyed", "2:creating"},
			},
			{
				name: "every version destroyed",
				prepare: func(k store.Key) {
					checkErr(t, "MarkVersionDestroyed", s.MarkVersionDestroyed(ctx, k.ID, 1), nil)
				},
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				k := createKey(t, s, newKey(t, "p1", "delete-"+newID(t)))
				tc.prepare(k)

				err := s.DeleteKey(ctx, k.ID)
				checkErr(t, "DeleteKey", err, tc.want)

				_, getErr := s.GetKey(ctx, "p1", k.ID)
				if tc.want == nil {
					checkErr(t, "GetKey after DeleteKey", getErr, store.ErrNotFound)
					return
				}
				checkErr(t, "GetKey after refused DeleteKey", getErr, nil)
				if got := versionStates(t, s, k.ID); !equalStrings(got, tc.kept) {
					t.Errorf("versions after refused DeleteKey = %v, want %v", got, tc.kept)
				}
			})
		}

		checkErr(t, "DeleteKey of missing key", s.DeleteKey(ctx, newID(t)), store.ErrNotFound)
	})
}

func TestListKeysPagingAndFilters(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		// Five keys of p1 created one minute apart, and one of p2.
		fixtures := []struct{ state, spec string }{
			{store.KeyStateEnabled, "AES_256"},
			{store.KeyStateDisabled, "AES_256"},
			{store.KeyStateEnabled, "SM4"},
			{store.KeyStatePendingDeletion, "AES_256"},
			{store.KeyStateEnabled, "AES_256"},
		}
		var ids []string
		for i, f := range fixtures {
			k := newKey(t, "p1", "")
			k.State, k.Spec = f.state, f.spec
			k.CreatedAt = baseTime.Add(time.Duration(i) * time.Minute)
			createKey(t, s, k)
			ids = append(ids, k.ID)
		}
		createKey(t, s, newKey(t, "p2", ""))

		// Two keys with one creation time are ordered by id.
		tied := []store.Key{newKey(t, "p3", ""), newKey(t, "p3", "")}
		for _, k := range tied {
			createKey(t, s, k)
		}
		tiedIDs := keyIDs(tied)
		slices.Sort(tiedIDs)

		tests := []struct {
			name      string
			project   string
			filter    store.ListKeysFilter
			wantIDs   []string
			wantTotal int
		}{
			{name: "first page", project: "p1", filter: store.ListKeysFilter{Limit: 2},
				wantIDs: ids[0:2], wantTotal: 5},
			{name: "second page", project: "p1",
				filter: store.ListKeysFilter{Offset: 2, Limit: 2}, wantIDs: ids[2:4], wantTotal: 5},
			{name: "last short page", project: "p1",
				filter: store.ListKeysFilter{Offset: 4, Limit: 2}, wantIDs: ids[4:5], wantTotal: 5},
			{name: "offset past end", project: "p1",
				filter: store.ListKeysFilter{Offset: 10, Limit: 2}, wantIDs: nil, wantTotal: 5},
			{name: "state filter", project: "p1",
				filter:  store.ListKeysFilter{State: store.KeyStateEnabled, Limit: 10},
				wantIDs: []string{ids[0], ids[2], ids[4]}, wantTotal: 3},
			{name: "spec filter", project: "p1",
				filter:  store.ListKeysFilter{Spec: "SM4", Limit: 10},
				wantIDs: []string{ids[2]}, wantTotal: 1},
			{name: "state and spec filter", project: "p1",
				filter: store.ListKeysFilter{State: store.KeyStateEnabled, Spec: "AES_256",
					Offset: 1, Limit: 10},
				wantIDs: []string{ids[4]}, wantTotal: 2},
			{name: "same creation time by id", project: "p3",
				filter: store.ListKeysFilter{Limit: 10}, wantIDs: tiedIDs, wantTotal: 2},
			{name: "project without keys", project: "p9",
				filter: store.ListKeysFilter{Limit: 10}, wantIDs: nil, wantTotal: 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				keys, total, err := s.ListKeys(ctx, tc.project, tc.filter)
				checkErr(t, "ListKeys", err, nil)
				if got := keyIDs(keys); !equalStrings(got, tc.wantIDs) {
					t.Errorf("ListKeys ids = %v, want %v", got, tc.wantIDs)
				}
				if total != tc.wantTotal {
					t.Errorf("ListKeys total = %d, want %d", total, tc.wantTotal)
				}
			})
		}

		for _, f := range []store.ListKeysFilter{{Limit: 0}, {Limit: 1, Offset: -1}} {
			if _, _, err := s.ListKeys(ctx, "p1", f); err == nil {
				t.Errorf("ListKeys(%+v) succeeded, want an invalid page error", f)
			}
		}

		n, err := s.CountKeys(ctx, "p1")
		checkErr(t, "CountKeys", err, nil)
		if n != 5 {
			t.Errorf("CountKeys(p1) = %d, want 5", n)
		}
		n, err = s.CountKeys(ctx, "p9")
		checkErr(t, "CountKeys", err, nil)
		if n != 0 {
			t.Errorf("CountKeys(p9) = %d, want 0", n)
		}
	})
}

func TestListKeysDueForDeletion(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		now := baseTime.Add(30 * day)

		add := func(project, state string, deletionAt time.Time) string {
			k := newKey(t, project, "")
			k.State, k.DeletionAt = state, deletionAt
			createKey(t, s, k)
			return k.ID
		}
		overdue := add("p1", store.KeyStatePendingDeletion, now.Add(-day))
		exactlyDue := add("p2", store.KeyStatePendingDeletion, now)
		add("p1", store.KeyStatePendingDeletion, now.Add(time.Millisecond))
		add("p1", store.KeyStateEnabled, now.Add(-day))
		add("p1", store.KeyStateEnabled, time.Time{})

		keys, err := s.ListKeysDueForDeletion(t.Context(), now)
		checkErr(t, "ListKeysDueForDeletion", err, nil)
		want := []string{overdue, exactlyDue}
		if got := keyIDs(keys); !equalStrings(got, want) {
			t.Errorf("ListKeysDueForDeletion = %v, want %v", got, want)
		}
	})
}

func TestListKeysDueForRotation(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		if b.Name == storetest.Postgres {
			// A session time zone with daylight saving time: the 30 days before now
			// include its start on 29 March 2026, so calendar-day arithmetic would make
			// keys due an hour early.
			b.URL += "&timezone=Europe/Berlin"
		}
		s := openStore(t, b)
		now := baseTime.Add(400 * day) // 5 April 2026

		tests := []struct {
			name         string
			state        string
			enabled      bool
			interval     int
			createdAt    time.Time
			lastRotation time.Time
			due          bool
		}{
			{name: "never rotated past interval", state: store.KeyStateEnabled, enabled: true,
				interval: 30, createdAt: now.Add(-31 * day), due: true},
			{name: "never rotated within interval", state: store.KeyStateEnabled, enabled: true,
				interval: 30, createdAt: now.Add(-29 * day)},
			{name: "exactly at interval", state: store.KeyStateEnabled, enabled: true,
				interval: 30, createdAt: now.Add(-30 * day), due: true},
			{name: "one millisecond before interval", state: store.KeyStateEnabled,
				enabled: true, interval: 30,
				createdAt: now.Add(-30*day + time.Millisecond)},
			{name: "old key rotated recently", state: store.KeyStateEnabled, enabled: true,
				interval: 365, createdAt: now.Add(-390 * day), lastRotation: now.Add(-day)},
			{name: "rotated past interval", state: store.KeyStateEnabled, enabled: true,
				interval: 90, createdAt: now.Add(-390 * day), lastRotation: now.Add(-91 * day),
				due: true},
			{name: "rotation off", state: store.KeyStateEnabled, enabled: false,
				interval: 30, createdAt: now.Add(-60 * day)},
			{name: "key disabled", state: store.KeyStateDisabled, enabled: true,
				interval: 30, createdAt: now.Add(-60 * day)},
			{name: "key pending deletion", state: store.KeyStatePendingDeletion, enabled: true,
				interval: 30, createdAt: now.Add(-60 * day)},
		}

		ids := make([]string, len(tests))
		for i, tc := range tests {
			k := newKey(t, "p1", "")
			k.State, k.RotationEnabled, k.RotationInterval = tc.state, tc.enabled, tc.interval
			k.CreatedAt, k.LastRotationAt = tc.createdAt, tc.lastRotation
			// A distinct project per case shows that the query spans projects.
			k.ProjectID = "project-" + newID(t)
			createKey(t, s, k)
			ids[i] = k.ID
		}

		keys, err := s.ListKeysDueForRotation(t.Context(), now)
		checkErr(t, "ListKeysDueForRotation", err, nil)
		listed := keyIDs(keys)
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := slices.Contains(listed, ids[i]); got != tc.due {
					t.Errorf("listed = %t, want %t", got, tc.due)
				}
			})
		}

		sorted := slices.IsSortedFunc(keys, func(a, b store.Key) int {
			return a.CreatedAt.Compare(b.CreatedAt)
		})
		if !sorted {
			t.Errorf("ListKeysDueForRotation is not ordered by creation time: %v", listed)
		}
	})
}

func TestListStaleVersions(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", ""))
		orphan := newID(t) // a key whose CreateKey never ran
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, orphan, 1), nil)
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, k.ID, 2), nil)

		// BeginKeyVersion stamps the current time, so a cutoff in the past finds nothing
		// and one in the future finds both creating rows.
		stale, err := s.ListStaleVersions(ctx, time.Now().Add(-time.Hour))
		checkErr(t, "ListStaleVersions(past)", err, nil)
		if len(stale) != 0 {
			t.Errorf("ListStaleVersions(an hour ago) = %v, want none", stale)
		}

		stale, err = s.ListStaleVersions(ctx, time.Now().Add(time.Hour))
		checkErr(t, "ListStaleVersions(future)", err, nil)
		var got []string
		for _, v := range stale {
			if v.State != store.VersionCreating {
				t.Errorf("stale version %s/%d has state %s", v.KeyID, v.Version, v.State)
			}
			got = append(got, v.KeyID)
		}
		slices.Sort(got)
		want := []string{orphan, k.ID}
		slices.Sort(want)
		if !equalStrings(got, want) {
			t.Errorf("ListStaleVersions keys = %v, want %v", got, want)
		}
	})
}

func TestTimesStoredAsUTCMilliseconds(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)

		zone := time.FixedZone("UTC+8", 8*60*60)
		created := time.Date(2025, 6, 1, 8, 30, 15, 123456789, zone)
		k := newKey(t, "p1", "")
		k.CreatedAt = created
		k.LastRotationAt = created.Add(time.Nanosecond)
		got := createKey(t, s, k)

		want := time.Date(2025, 6, 1, 0, 30, 15, 123000000, time.UTC)
		if got.CreatedAt != want {
			t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want)
		}
		if got.LastRotationAt != want {
			t.Errorf("LastRotationAt = %v, want %v", got.LastRotationAt, want)
		}
		if !got.DeletionAt.IsZero() {
			t.Errorf("DeletionAt = %v, want the zero time", got.DeletionAt)
		}
		if got.UpdatedAt != want {
			t.Errorf("UpdatedAt = %v, want CreatedAt %v", got.UpdatedAt, want)
		}
	})
}

// TestCreateKeyQuota checks that CreateKey counts only the key's own project and stops
// at maxKeys, and that maxKeys 0 sets no limit.
func TestCreateKeyQuota(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()
		createKey(t, s, newKey(t, "p1", "first"))
		createKey(t, s, newKey(t, "p2", "other-project"))

		second := newKey(t, "p1", "second")
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, second.ID, 1), nil)
		checkErr(t, "CreateKey under the quota", s.CreateKey(ctx, second, 2), nil)

		third := newKey(t, "p1", "third")
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, third.ID, 1), nil)
		checkErr(t, "CreateKey at the quota", s.CreateKey(ctx, third, 2),
			store.ErrLimitExceeded)
		_, err := s.GetKey(ctx, "p1", third.ID)
		checkErr(t, "GetKey after the rejected CreateKey", err, store.ErrNotFound)

		checkErr(t, "CreateKey without a limit", s.CreateKey(ctx, third, 0), nil)
	})
}

// TestCreateKeyQuotaConcurrent starts more parallel creations in one project than the
// quota allows, on one store as on one replica and on two stores as on two replicas
// sharing the database, and checks that exactly the quota succeeds.
func TestCreateKeyQuotaConcurrent(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		stores := openStorePair(t, b)

		const limit, writers = 5, 16
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			s := stores[i%len(stores)]
			k := newKey(t, "p1", fmt.Sprintf("parallel-%d", i))
			wg.Go(func() {
				<-start
				ctx := t.Context()
				if errs[i] = s.BeginKeyVersion(ctx, k.ID, 1); errs[i] != nil {
					return
				}
				errs[i] = s.CreateKey(ctx, k, limit)
			})
		}
		close(start)
		wg.Wait()

		created := 0
		for _, err := range errs {
			if err == nil {
				created++
				continue
			}
			checkErr(t, "concurrent CreateKey", err, store.ErrLimitExceeded)
		}
		if created != limit {
			t.Errorf("%d concurrent creations succeeded, want %d", created, limit)
		}
		n, err := stores[0].CountKeys(t.Context(), "p1")
		checkErr(t, "CountKeys", err, nil)
		if n != limit {
			t.Errorf("project has %d keys after concurrent creations, want %d", n, limit)
		}
	})
}

func TestActiveVersions(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		// The versions are recorded in this order without pauses, so several of them
		// may share a created_at millisecond.
		older := createKey(t, s, newKey(t, "p1", ""))
		newer := createKey(t, s, newKey(t, "p2", ""))
		rotated := createKey(t, s, newKey(t, "p1", ""))
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, rotated.ID, 2), nil)
		checkErr(t, "ActivateKeyVersion", s.ActivateKeyVersion(ctx, rotated, 2), nil)
		creating := newID(t) // only a creating row, which has no object yet
		checkErr(t, "BeginKeyVersion", s.BeginKeyVersion(ctx, creating, 1), nil)
		destroyed := createKey(t, s, newKey(t, "p1", ""))
		checkErr(t, "MarkVersionDestroyed",
			s.MarkVersionDestroyed(ctx, destroyed.ID, 1), nil)
		behind := createKey(t, s, newKey(t, "p2", ""))
		pending := createKey(t, s, newKey(t, "p1", ""))

		// Replicas with skewed clocks: behind's version was stamped by a clock an hour
		// behind and older's by one an hour ahead, so created_at orders both the wrong
		// way round.
		now := time.Now()
		stampVersion(t, b, behind.ID, 1, now.Add(-time.Hour))
		stampVersion(t, b, older.ID, 1, now.Add(time.Hour))

		pending.State = store.KeyStatePendingDeletion
		pending.DeletionAt = baseTime.Add(7 * 24 * time.Hour)
		if _, err := s.UpdateKey(ctx, pending); err != nil {
			t.Fatalf("UpdateKey(pending deletion) failed: %v", err)
		}

		all := []string{
			behind.ID + "/1 p2", rotated.ID + "/2 p1", rotated.ID + "/1 p1", newer.ID + "/1 p2",
			older.ID + "/1 p1",
		}
		withPending := append([]string{pending.ID + "/1 p1"}, all...)
		afterDeletion := pending.DeletionAt.Add(time.Hour)
		beforeDeletion := pending.DeletionAt.Add(-time.Hour)
		tests := []struct {
			name         string
			limit        int
			deletedAfter time.Time
			want         []string
		}{
			{name: "every active version, newest first", deletedAfter: afterDeletion, want: all},
			{name: "the newest only, stamped by the clock behind", limit: 1,
				deletedAfter: afterDeletion, want: all[:1]},
			{name: "limit above the count", limit: 10, deletedAfter: afterDeletion, want: all},
			{name: "a key pending deletion not due yet", deletedAfter: beforeDeletion,
				want: withPending},
			{name: "the newest, pending deletion not due yet", limit: 1,
				deletedAfter: beforeDeletion, want: withPending[:1]},
		}
		for _, tt := range tests {
			versions, err := s.ActiveVersions(ctx, tt.limit, tt.deletedAfter)
			checkErr(t, tt.name, err, nil)
			var got []string
			for _, v := range versions {
				if v.State != store.VersionActive {
					t.Errorf("%s: version %s/%d has state %q", tt.name, v.KeyID, v.Version, v.State)
				}
				got = append(got, fmt.Sprintf("%s/%d %s", v.KeyID, v.Version, v.ProjectID))
			}
			if !equalStrings(got, tt.want) {
				t.Errorf("%s: ActiveVersions(%d) = %v, want %v", tt.name, tt.limit, got, tt.want)
			}
		}
	})
}

// stampVersion sets the created_at of a version row to at, as a replica whose clock
// differs from this process's clock stamps it.
func stampVersion(t *testing.T, b storetest.Backend, keyID string, version uint32, at time.Time) {
	t.Helper()

	query := "UPDATE key_versions SET created_at = ? WHERE key_id = ? AND version = ?"
	var value any = at.UnixMilli()
	if b.Name == storetest.Postgres {
		query = "UPDATE key_versions SET created_at = $1 WHERE key_id = $2 AND version = $3"
		value = at
	}

	res, err := openRaw(t, b).ExecContext(t.Context(), query, value, keyID, version)
	if err != nil {
		t.Fatalf("set created_at of version %s/%d: %v", keyID, version, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("set created_at of version %s/%d: %d rows changed (%v), want 1", keyID,
			version, n, err)
	}
}
