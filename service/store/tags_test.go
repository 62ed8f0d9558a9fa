package store_test

import (
	"fmt"
	"testing"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func tagStrings(tags []store.Tag) []string {
	out := make([]string, 0, len(tags))
	for _, tag := range tags {
		out = append(out, tag.Key+"="+tag.Value)
	}
	return out
}

func TestTagLifecycle(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", "tagged"))
		checkErr(t, "PutTags", s.PutTags(ctx, "p1", k.ID, []store.Tag{
			{Key: "env", Value: "dev"}, {Key: "环境", Value: "生产"}, {Key: "empty", Value: ""},
		}, 10), nil)
		// A tag key that exists gets the new value.
		checkErr(t, "PutTags replacing env", s.PutTags(ctx, "p1", k.ID,
			[]store.Tag{{Key: "env", Value: "prod"}}, 10), nil)

		tags, err := s.ListKeyTags(ctx, "p1", k.ID)
		checkErr(t, "ListKeyTags", err, nil)
		want := []string{"empty=", "env=prod", "环境=生产"}
		if !equalStrings(tagStrings(tags), want) {
			t.Errorf("ListKeyTags = %v, want %v", tagStrings(tags), want)
		}

		deleted, err := s.DeleteTags(ctx, "p1", k.ID, []string{"empty", "absent"})
		checkErr(t, "DeleteTags", err, nil)
		if deleted != 1 {
			t.Errorf("DeleteTags of one present and one absent tag = %d deleted, want 1", deleted)
		}
		tags, err = s.ListKeyTags(ctx, "p1", k.ID)
		checkErr(t, "ListKeyTags after delete", err, nil)
		if want := []string{"env=prod", "环境=生产"}; !equalStrings(tagStrings(tags), want) {
			t.Errorf("ListKeyTags after delete = %v, want %v", tagStrings(tags), want)
		}
	})
}

func TestTagRejects(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		k := createKey(t, s, newKey(t, "p1", "limited"))
		foreign := createKey(t, s, newKey(t, "p2", "foreign"))
		var nine []store.Tag
		for i := range 9 {
			nine = append(nine, store.Tag{Key: fmt.Sprintf("k%d", i), Value: "v"})
		}
		checkErr(t, "PutTags nine", s.PutTags(ctx, "p1", k.ID, nine, 10), nil)

		two := []store.Tag{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}
		tests := []struct {
			name string
			err  error
			want error
		}{
			{"eleventh tag", s.PutTags(ctx, "p1", k.ID, two, 10), store.ErrTagLimit},
			{"put on key of another project", s.PutTags(ctx, "p1", foreign.ID, two, 10),
				store.ErrNotFound},
			{"put on missing key", s.PutTags(ctx, "p1", newID(t), two, 10), store.ErrNotFound},
			{"delete on key of another project",
				secondOf(s.DeleteTags(ctx, "p1", foreign.ID, []string{"a"})), store.ErrNotFound},
			{"list key of another project", listTagsErr(t, s, "p1", foreign.ID),
				store.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				checkErr(t, tc.name, tc.err, tc.want)
			})
		}

		// The rejected batch added neither tag.
		tags, err := s.ListKeyTags(ctx, "p1", k.ID)
		checkErr(t, "ListKeyTags", err, nil)
		if len(tags) != 9 {
			t.Errorf("key has %d tags after the rejected batch, want 9", len(tags))
		}
		// Replacing values of existing tag keys does not count against the limit.
		checkErr(t, "PutTags replacing at nine", s.PutTags(ctx, "p1", k.ID, nine[:2], 9), nil)
	})
}

func listTagsErr(t *testing.T, s store.Store, project, keyID string) error {
	_, err := s.ListKeyTags(t.Context(), project, keyID)
	return err
}

func TestFindKeysByTags(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		put := func(k store.Key, tags ...store.Tag) {
			t.Helper()
			checkErr(t, "PutTags", s.PutTags(ctx, k.ProjectID, k.ID, tags, 10), nil)
		}
		prodWeb := newKey(t, "p1", "Prod-Web")
		prodWeb.CreatedAt = baseTime
		prodDB := newKey(t, "p1", "prod_db")
		prodDB.CreatedAt = baseTime.Add(day)
		dev := newKey(t, "p1", "dev-web")
		dev.CreatedAt = baseTime.Add(2 * day)
		bare := newKey(t, "p1", "bare")
		bare.CreatedAt = baseTime.Add(3 * day)
		foreign := newKey(t, "p2", "prod-web")
		for _, k := range []*store.Key{&prodWeb, &prodDB, &dev, &bare, &foreign} {
			*k = createKey(t, s, *k)
		}
		put(prodWeb, store.Tag{Key: "env", Value: "prod"}, store.Tag{Key: "app", Value: "web"})
		put(prodDB, store.Tag{Key: "env", Value: "prod"}, store.Tag{Key: "app", Value: "db"})
		put(dev, store.Tag{Key: "env", Value: "dev"}, store.Tag{Key: "app", Value: "web"})
		put(foreign, store.Tag{Key: "env", Value: "prod"}, store.Tag{Key: "team", Value: "x"})

		tests := []struct {
			name   string
			filter store.TagFilter
			want   []string
			total  int
		}{
			{"no filter", store.TagFilter{Limit: 10},
				[]string{prodWeb.ID, prodDB.ID, dev.ID, bare.ID}, 4},
			{"one value", store.TagFilter{Limit: 10,
				Tags: []store.TagValues{{Key: "env", Values: []string{"prod"}}}},
				[]string{prodWeb.ID, prodDB.ID}, 2},
			{"values are alternatives", store.TagFilter{Limit: 10,
				Tags: []store.TagValues{{Key: "env", Values: []string{"prod", "dev"}}}},
				[]string{prodWeb.ID, prodDB.ID, dev.ID}, 3},
			{"tags must all match", store.TagFilter{Limit: 10, Tags: []store.TagValues{
				{Key: "env", Values: []string{"prod"}}, {Key: "app", Values: []string{"web"}}}},
				[]string{prodWeb.ID}, 1},
			{"no values match any value", store.TagFilter{Limit: 10,
				Tags: []store.TagValues{{Key: "app"}}},
				[]string{prodWeb.ID, prodDB.ID, dev.ID}, 3},
			{"tag of another project only", store.TagFilter{Limit: 10,
				Tags: []store.TagValues{{Key: "team"}}}, nil, 0},
			{"alias contains, any case", store.TagFilter{Limit: 10, AliasContains: "PROD"},
				[]string{prodWeb.ID, prodDB.ID}, 2},
			{"underscore matches itself", store.TagFilter{Limit: 10, AliasContains: "d_d"},
				[]string{prodDB.ID}, 1},
			{"percent matches itself", store.TagFilter{Limit: 10, AliasContains: "%"}, nil, 0},
			{"page", store.TagFilter{Offset: 1, Limit: 1}, []string{prodDB.ID}, 4},
			{"count only", store.TagFilter{Tags: []store.TagValues{{Key: "env"}}}, nil, 3},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				found, total, err := s.FindKeysByTags(ctx, "p1", tc.filter)
				checkErr(t, "FindKeysByTags", err, nil)
				var ids []string
				for _, f := range found {
					ids = append(ids, f.Key.ID)
				}
				if !equalStrings(ids, tc.want) {
					t.Errorf("keys = %v, want %v", ids, tc.want)
				}
				if total != tc.total {
					t.Errorf("total = %d, want %d", total, tc.total)
				}
			})
		}

		found, _, err := s.FindKeysByTags(ctx, "p1", store.TagFilter{Limit: 1})
		checkErr(t, "FindKeysByTags first", err, nil)
		if got := tagStrings(found[0].Tags); !equalStrings(got, []string{"app=web", "env=prod"}) {
			t.Errorf("tags of the first key = %v, want [app=web env=prod]", got)
		}

		projectTags, err := s.ListProjectTags(ctx, "p1")
		checkErr(t, "ListProjectTags", err, nil)
		var got []string
		for _, tv := range projectTags {
			got = append(got, fmt.Sprintf("%s:%v", tv.Key, tv.Values))
		}
		if want := []string{"app:[db web]", "env:[dev prod]"}; !equalStrings(got, want) {
			t.Errorf("ListProjectTags = %v, want %v", got, want)
		}
	})
}

// secondOf returns the error of a call that also returns a value.
func secondOf[T any](_ T, err error) error { return err }
