package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/auth"
)

// keyTags returns the tags of a key as "key=value" strings and existTagsNum.
func keyTags(t *testing.T, c client, keyID string) ([]string, int) {
	t.Helper()
	r := c.do(t, http.MethodGet, keyID+"/tags", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("key tags: status %d: %s", r.Status, r.Raw)
	}
	var body keyTagsResponse
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatalf("key tags answer: %v: %s", err, r.Raw)
	}
	out := []string{}
	for _, tag := range body.Tags {
		out = append(out, tag.Key+"="+tag.Value)
	}
	return out, body.ExistTagsNum
}

// wantNoContent fails t unless r is a 204 with an empty body.
func wantNoContent(t *testing.T, what string, r response) {
	t.Helper()
	if r.Status != http.StatusNoContent || len(r.Raw) != 0 {
		t.Errorf("%s: status %d body %q, want 204 and no body", what, r.Status, r.Raw)
	}
}

func TestTagOperations(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "tagged")

	wantNoContent(t, "create env:prod", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "env:prod", "value": "yes"},
	}))
	wantNoContent(t, "create non-ASCII", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "环境", "value": "生产"}, "sequence": strings.Repeat("s", 36),
	}))
	wantNoContent(t, "create a/b", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "a/b", "value": ""},
	}))
	wantNoContent(t, "create action", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "action", "value": "1"},
	}))
	// Creating a tag key that exists replaces its value.
	wantNoContent(t, "replace action", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "action", "value": "2"},
	}))

	tags, n := keyTags(t, e.admin, keyID)
	want := "a/b=,action=2,env:prod=yes,环境=生产"
	if strings.Join(tags, ",") != want || n != 4 {
		t.Errorf("key tags = %v (existTagsNum %d), want %s (4)", tags, n, want)
	}

	// The tag key arrives percent-encoded in the path and is decoded once.
	wantNoContent(t, "delete env%3Aprod", e.admin.do(t, http.MethodDelete,
		keyID+"/tags/env%3Aprod", nil))
	wantNoContent(t, "delete non-ASCII", e.admin.do(t, http.MethodDelete,
		keyID+"/tags/"+url.PathEscape("环境"), nil))
	wantNoContent(t, "delete a%2Fb", e.admin.do(t, http.MethodDelete, keyID+"/tags/a%2Fb", nil))
	wantNoContent(t, "delete the tag key action", e.admin.do(t, http.MethodDelete,
		keyID+"/tags/action", nil))
	wantNoContent(t, "delete a missing tag", e.admin.do(t, http.MethodDelete,
		keyID+"/tags/absent", map[string]any{"sequence": strings.Repeat("s", 36)}))
	if tags, n := keyTags(t, e.admin, keyID); len(tags) != 0 || n != 0 {
		t.Errorf("key tags after deletes = %v (%d), want none", tags, n)
	}

	wantNoContent(t, "batch create", e.admin.post(t, keyID+"/tags/action", map[string]any{
		"action": "create",
		"tags": []map[string]string{{"key": "team", "value": "pay"},
			{"key": "cost", "value": "42"}, {"key": "tier", "value": "1"}},
	}))
	wantNoContent(t, "batch delete", e.admin.post(t, keyID+"/tags/action", map[string]any{
		"action": "delete",
		"tags":   []map[string]string{{"key": "tier"}, {"key": "absent"}},
	}))
	if tags, _ := keyTags(t, e.admin, keyID); strings.Join(tags, ",") != "cost=42,team=pay" {
		t.Errorf("key tags after batch = %v, want [cost=42 team=pay]", tags)
	}

	other := e.admin.createKey(t, "other")
	e.admin.post(t, other+"/tags", map[string]any{
		"tag": map[string]string{"key": "team", "value": "ops"},
	})
	r := e.admin.do(t, http.MethodGet, "tags", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("project tags: status %d: %s", r.Status, r.Raw)
	}
	want = `{"tags":[{"key":"cost","values":["42"]},{"key":"team","values":["ops","pay"]}]}`
	if string(r.Raw) != want+"\n" && string(r.Raw) != want {
		t.Errorf("project tags = %s, want %s", r.Raw, want)
	}

	// The static routes next to .../kms/{key_id}/tags are still routed to their handlers.
	e.admin.mustPost(t, "create-key", map[string]any{"key_alias": "static-route"})
}

func TestTagLimits(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "limits")
	full := e.admin.createKey(t, "full")
	var ten []map[string]string
	for i := range 10 {
		ten = append(ten, map[string]string{"key": fmt.Sprintf("k%d", i), "value": "v"})
	}
	wantNoContent(t, "ten tags", e.admin.post(t, full+"/tags/action",
		map[string]any{"action": "create", "tags": ten}))

	one := func(key, value string) map[string]any {
		return map[string]any{"tag": map[string]string{"key": key, "value": value}}
	}
	batch := func(action string, tags ...map[string]string) map[string]any {
		return map[string]any{"action": action, "tags": tags}
	}
	eleven := append(append([]map[string]string{}, ten...), map[string]string{"key": "k10"})

	okTests := []struct {
		name string
		body map[string]any
	}{
		{"key of 36 characters", one(strings.Repeat("k", 36), "v")},
		{"key of 36 non-ASCII characters", one(strings.Repeat("键", 36), "v")},
		{"value of 43 characters", one("v43", strings.Repeat("v", 43))},
		{"value of 43 non-ASCII characters", one("v43u", strings.Repeat("值", 43))},
		{"empty value", one("empty", "")},
		{"space and punctuation", one("a b.c_d-e:f/g@h", "x y")},
		{"sys_ without the leading underscore", one("sys_x", "v")},
	}
	for _, tc := range okTests {
		t.Run(tc.name, func(t *testing.T) {
			wantNoContent(t, tc.name, e.admin.post(t, keyID+"/tags", tc.body))
		})
	}

	rejectTests := []struct {
		name string
		op   string
		body any
		code string
	}{
		{"tag missing", keyID + "/tags", map[string]any{}, "KMS.0204"},
		{"key empty", keyID + "/tags", one("", "v"), "KMS.0406"},
		{"key of 37 characters", keyID + "/tags", one(strings.Repeat("k", 37), "v"), "KMS.0411"},
		{"value of 44 characters", keyID + "/tags", one("k", strings.Repeat("v", 44)),
			"KMS.0410"},
		{"key with *", keyID + "/tags", one("a*b", "v"), "KMS.0406"},
		{"key with <", keyID + "/tags", one("a<b", "v"), "KMS.0406"},
		{"key with >", keyID + "/tags", one("a>b", "v"), "KMS.0406"},
		{"key with backslash", keyID + "/tags", one(`a\b`, "v"), "KMS.0406"},
		{"key with =", keyID + "/tags", one("a=b", "v"), "KMS.0406"},
		{"key with a control character", keyID + "/tags", one("a\tb", "v"), "KMS.0406"},
		{"system tag key", keyID + "/tags", one("_sys_enterprise_project_id", "0"), "KMS.0406"},
		{"system tag key after a space", keyID + "/tags", one(" _sys_x", "v"), "KMS.0406"},
		{"key of spaces only", keyID + "/tags", one("   ", "v"), "KMS.0406"},
		{"key ending with a space", keyID + "/tags", one("env ", "v"), "KMS.0406"},
		{"system tag key in a batch", keyID + "/tags/action",
			batch("create", map[string]string{"key": "_sys_x", "value": "v"}), "KMS.0406"},
		{"value with =", keyID + "/tags", one("k", "a=b"), "KMS.0405"},
		{"value with a control character", keyID + "/tags", one("k", "a\x1fb"), "KMS.0405"},
		{"value not a string", keyID + "/tags",
			map[string]any{"tag": map[string]any{"key": "k", "value": 1}}, "KMS.0308"},
		{"eleventh tag", full + "/tags", one("k10", "v"), "KMS.0409"},
		{"batch empty", keyID + "/tags/action", batch("create"), "KMS.0401"},
		{"batch of eleven", keyID + "/tags/action", batch("create", eleven...), "KMS.0407"},
		{"batch pushing past ten", full + "/tags/action",
			batch("create", map[string]string{"key": "new", "value": "v"}), "KMS.0409"},
		{"batch duplicate key", keyID + "/tags/action", batch("create",
			map[string]string{"key": "d", "value": "1"},
			map[string]string{"key": "d", "value": "2"}), "KMS.0412"},
		{"batch invalid action", keyID + "/tags/action",
			batch("update", map[string]string{"key": "d"}), "KMS.0404"},
		{"batch action missing", keyID + "/tags/action",
			map[string]any{"tags": ten[:1]}, "KMS.0204"},
		{"batch delete empty", keyID + "/tags/action", batch("delete"), "KMS.0401"},
		{"batch delete invalid key", keyID + "/tags/action",
			batch("delete", map[string]string{"key": "a=b"}), "KMS.0406"},
		{"unknown key id", "00000000-0000-0000-0000-000000000000/tags", one("k", "v"),
			"KMS.0205"},
		{"malformed key id", "not-a-key/tags", one("k", "v"), "KMS.0205"},
	}
	for _, tc := range rejectTests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.admin.post(t, tc.op, tc.body), tc.code)
		})
	}

	deleteTests := []struct {
		name string
		path string
		code string
	}{
		{"key of 37 characters", keyID + "/tags/" + strings.Repeat("k", 37), "KMS.0411"},
		{"unknown key id", "00000000-0000-0000-0000-000000000000/tags/k", "KMS.0205"},
	}
	for _, tc := range deleteTests {
		t.Run("delete "+tc.name, func(t *testing.T) {
			r := e.admin.do(t, http.MethodDelete, tc.path, nil)
			if r.code() != tc.code || r.Status < 400 {
				t.Errorf("status %d code %q, want %s: %s", r.Status, r.code(), tc.code, r.Raw)
			}
		})
	}

	// Nothing of a rejected batch was stored.
	if tags, _ := keyTags(t, e.admin, full); len(tags) != 10 {
		t.Errorf("full key has %d tags after the rejects, want 10", len(tags))
	}
}

// resources posts a resource_instances request and decodes the response.
func resources(t *testing.T, c client, body map[string]any) resourceInstancesResponse {
	t.Helper()
	r := c.post(t, "resource_instances/action", body)
	if r.Status != http.StatusOK {
		t.Fatalf("resource_instances %v: status %d: %s", body, r.Status, r.Raw)
	}
	var out resourceInstancesResponse
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("resource_instances answer: %v: %s", err, r.Raw)
	}
	return out
}

func resourceIDs(res resourceInstancesResponse) string {
	ids := make([]string, len(res.Resources))
	for i, r := range res.Resources {
		ids[i] = r.ResourceID
	}
	return strings.Join(ids, ",")
}

func TestResourceInstances(t *testing.T) {
	e := newTestEnv(t)
	web := e.admin.createKey(t, "prod-web")
	db := e.admin.createKey(t, "prod-db")
	dev := e.admin.createKey(t, "dev-web")
	addTags := func(keyID string, tags ...map[string]string) {
		t.Helper()
		wantNoContent(t, "batch create", e.admin.post(t, keyID+"/tags/action",
			map[string]any{"action": "create", "tags": tags}))
	}
	addTags(web, map[string]string{"key": "env", "value": "prod"},
		map[string]string{"key": "app", "value": "web"})
	addTags(db, map[string]string{"key": "env", "value": "prod"},
		map[string]string{"key": "app", "value": "db"})
	addTags(dev, map[string]string{"key": "env", "value": "dev"})

	envProd := []map[string]any{{"key": "env", "values": []string{"prod"}}}
	tests := []struct {
		name  string
		body  map[string]any
		want  string
		total int
	}{
		{"every key", map[string]any{"action": "filter"}, web + "," + db + "," + dev, 3},
		{"one tag", map[string]any{"action": "filter", "tags": envProd}, web + "," + db, 2},
		{"two tags", map[string]any{"action": "filter", "tags": []map[string]any{
			{"key": "env", "values": []string{"prod", "dev"}},
			{"key": "app", "values": []string{"web"}}}}, web, 1},
		{"any value", map[string]any{"action": "filter",
			"tags": []map[string]any{{"key": "app", "values": []string{}}}}, web + "," + db, 2},
		{"resource_name", map[string]any{"action": "filter",
			"matches": []map[string]string{{"key": "resource_name", "value": "WEB"}}},
			web + "," + dev, 2},
		{"page as strings", map[string]any{"action": "filter", "limit": "1", "offset": "1"},
			db, 3},
		{"page as numbers", map[string]any{"action": "filter", "limit": 1, "offset": 2},
			dev, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := resources(t, e.admin, tc.body)
			if got := resourceIDs(res); got != tc.want {
				t.Errorf("resources = %s, want %s", got, tc.want)
			}
			if res.TotalCount != tc.total {
				t.Errorf("total_count = %d, want %d", res.TotalCount, tc.total)
			}
		})
	}

	res := resources(t, e.admin, map[string]any{"action": "filter", "limit": "1"})
	first := res.Resources[0]
	if first.ResourceName != "prod-web" || first.ResourceDetail.KeyID != web ||
		first.ResourceDetail.KeyAlias != "prod-web" || first.ResourceDetail.KeyState != "2" {
		t.Errorf("resource = %+v, want prod-web with its KeyDetails", first)
	}
	if len(first.Tags) != 2 || first.Tags[0] != (tag{"app", "web"}) {
		t.Errorf("resource tags = %v, want [app=web env=prod]", first.Tags)
	}

	r := e.admin.mustPost(t, "resource_instances/action",
		map[string]any{"action": "count", "tags": envProd})
	if string(r.Raw) != `{"total_count":2}`+"\n" && string(r.Raw) != `{"total_count":2}` {
		t.Errorf("count answered %s, want only total_count 2", r.Raw)
	}

	rejects := []struct {
		name string
		body map[string]any
		code string
	}{
		{"action missing", map[string]any{}, "KMS.0204"},
		{"invalid action", map[string]any{"action": "list"}, "KMS.0404"},
		{"limit 0", map[string]any{"action": "filter", "limit": "0"}, "KMS.0416"},
		{"limit 1001", map[string]any{"action": "filter", "limit": "1001"}, "KMS.0416"},
		{"limit not a number", map[string]any{"action": "filter", "limit": "x"}, "KMS.0416"},
		{"negative offset", map[string]any{"action": "filter", "offset": "-1"}, "KMS.0417"},
		{"invalid tag key", map[string]any{"action": "filter",
			"tags": []map[string]any{{"key": "a*b"}}}, "KMS.0406"},
		{"invalid tag value", map[string]any{"action": "filter",
			"tags": []map[string]any{{"key": "env", "values": []string{"a<b"}}}}, "KMS.0405"},
		{"duplicate tag key", map[string]any{"action": "filter", "tags": []map[string]any{
			{"key": "env"}, {"key": "env"}}}, "KMS.0412"},
		{"eleven values", map[string]any{"action": "filter", "tags": []map[string]any{
			{"key": "env", "values": strings.Split("a,b,c,d,e,f,g,h,i,j,k", ",")}}},
			"KMS.0413"},
		{"eleven tags", map[string]any{"action": "count", "tags": elevenFilterTags()},
			"KMS.0407"},
		{"match key", map[string]any{"action": "filter",
			"matches": []map[string]string{{"key": "resource_id", "value": "x"}}}, "KMS.0403"},
		{"match value too long", map[string]any{"action": "filter",
			"matches": []map[string]string{{"key": "resource_name",
				"value": strings.Repeat("x", 256)}}}, "KMS.0402"},
		{"match value with NUL", map[string]any{"action": "count",
			"matches": []map[string]string{{"key": "resource_name", "value": "a\x00"}}},
			"KMS.0402"},
		{"two matches", map[string]any{"action": "filter", "matches": []map[string]string{
			{"key": "resource_name", "value": "a"}, {"key": "resource_name", "value": "b"}}},
			"KMS.0415"},
	}
	for _, tc := range rejects {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.admin.post(t, "resource_instances/action", tc.body), tc.code)
		})
	}
}

func elevenFilterTags() []map[string]any {
	var tags []map[string]any
	for i := range 11 {
		tags = append(tags, map[string]any{"key": fmt.Sprintf("k%d", i)})
	}
	return tags
}

func TestTagProjectIsolation(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "mine")
	wantNoContent(t, "create", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "env", "value": "prod"},
	}))
	p2 := e.newClient(t, otherProject, otherDomain, auth.RoleAdmin)
	p2.createKey(t, "theirs")

	wantCode(t, p2.do(t, http.MethodGet, keyID+"/tags", nil), "KMS.0205")
	wantCode(t, p2.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "x", "value": "y"}}), "KMS.0205")
	wantCode(t, p2.do(t, http.MethodDelete, keyID+"/tags/env", nil), "KMS.0205")
	wantCode(t, p2.post(t, keyID+"/tags/action", map[string]any{"action": "delete",
		"tags": []map[string]string{{"key": "env"}}}), "KMS.0205")

	r := p2.do(t, http.MethodGet, "tags", nil)
	if r.Status != http.StatusOK || string(r.Raw) != `{"tags":[]}`+"\n" &&
		string(r.Raw) != `{"tags":[]}` {
		t.Errorf("project 2 tags: status %d body %s, want no tags", r.Status, r.Raw)
	}
	res := resources(t, p2, map[string]any{"action": "filter",
		"tags": []map[string]any{{"key": "env"}}})
	if res.TotalCount != 0 || len(res.Resources) != 0 {
		t.Errorf("project 2 finds %d keys by the tag of project 1, want 0", res.TotalCount)
	}

	if tags, _ := keyTags(t, e.admin, keyID); strings.Join(tags, ",") != "env=prod" {
		t.Errorf("project 1 tags after project 2's attempts = %v, want [env=prod]", tags)
	}
}

func TestTagRoles(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "roles")
	reader := e.newClient(t, projectP1, domainD1, auth.RoleReadOnly)

	r := reader.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "k", "value": "v"}})
	if r.Status != http.StatusForbidden {
		t.Errorf("read-only create tag: status %d, want 403: %s", r.Status, r.Raw)
	}
	keyTags(t, reader, keyID)
	resources(t, reader, map[string]any{"action": "count"})
}

func TestAliasesAndTagsSurviveRestart(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "durable")
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": keyID, "alias": "alias/durable"})
	wantNoContent(t, "create tag", e.admin.post(t, keyID+"/tags", map[string]any{
		"tag": map[string]string{"key": "环境", "value": "生产"}}))
	e.admin.mustPost(t, "update-key-description", map[string]any{"key_id": keyID,
		"key_description": "kept"})

	e.restart()

	if got := describedKeyID(t, e.admin, "alias/durable"); got != keyID {
		t.Errorf("describe-key alias/durable after restart = %q, want %s", got, keyID)
	}
	if tags, _ := keyTags(t, e.admin, keyID); strings.Join(tags, ",") != "环境=生产" {
		t.Errorf("tags after restart = %v, want [环境=生产]", tags)
	}
	r := e.admin.mustPost(t, "describe-key", map[string]any{"key_id": keyID})
	if got := r.info()["key_description"]; got != "kept" {
		t.Errorf("key_description after restart = %v, want kept", got)
	}
	pages := aliasPages(t, e.admin.do(t, http.MethodGet, "aliases", nil))
	if got := aliasNamesOf(pages[0]); got != "alias/durable" {
		t.Errorf("aliases after restart = %s, want alias/durable", got)
	}
}
