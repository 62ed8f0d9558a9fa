package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service/auth"
)

// otherProject and otherDomain own the second credential of the isolation tests.
const (
	otherProject = "22222222222222222222222222222222"
	otherDomain  = "dddddddddddddddddddddddddddddddd"
)

// newClient creates a credential with role in project and returns its client.
func (e *testEnv) newClient(t *testing.T, project, domain, role string) client {
	t.Helper()
	cred, secret, err := e.creds.Create(context.Background(), auth.CreateRequest{
		ProjectID: project, DomainID: domain, Role: role,
	})
	if err != nil {
		t.Fatalf("create %s credential in project %s: %v", role, project, err)
	}
	return e.client(cred.AccessKey, secret, project)
}

// wantCode fails t unless r is a 400 response with code.
func wantCode(t *testing.T, r response, code string) {
	t.Helper()
	if r.Status != http.StatusBadRequest || r.code() != code {
		t.Errorf("status %d code %q, want 400 %s: %s", r.Status, r.code(), code, r.Raw)
	}
}

// info returns the key_info object of a response body.
func (r response) info() map[string]any {
	info, _ := r.Body["key_info"].(map[string]any)
	return info
}

// describedKeyID returns the key id that describe-key resolves ref to, or "" on an error.
func describedKeyID(t *testing.T, c client, ref string) string {
	t.Helper()
	r := c.post(t, "describe-key", map[string]any{"key_id": ref})
	if r.Status != http.StatusOK {
		return ""
	}
	id, _ := r.info()["key_id"].(string)
	return id
}

// aliasPages decodes the top-level array of list-aliases.
func aliasPages(t *testing.T, r response) []aliasPage {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("list-aliases: status %d: %s", r.Status, r.Raw)
	}
	var pages []aliasPage
	if err := json.Unmarshal(r.Raw, &pages); err != nil {
		t.Fatalf("list-aliases answer is not a JSON array of pages: %v: %s", err, r.Raw)
	}
	if len(pages) != 1 {
		t.Fatalf("list-aliases answered %d pages, want 1: %s", len(pages), r.Raw)
	}
	return pages
}

func TestUpdateKeyAliasAndDescription(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "before")
	e.admin.createKey(t, "taken")

	r := e.admin.mustPost(t, "update-key-alias", map[string]any{
		"key_id": keyID, "key_alias": "after", "sequence": "919c82d4-8046-4722-9094-35c3c6524cff",
	})
	if got := r.info(); got["key_id"] != keyID || got["key_alias"] != "after" {
		t.Errorf("update-key-alias key_info = %v, want key_id %s and key_alias after", got, keyID)
	}
	if got := describedKeyID(t, e.admin, "alias/after"); got != keyID {
		t.Errorf("describe-key alias/after = %q, want %s", got, keyID)
	}
	if got := describedKeyID(t, e.admin, "alias/before"); got != "" {
		t.Errorf("describe-key alias/before after the rename = %q, want not found", got)
	}

	r = e.admin.mustPost(t, "update-key-description", map[string]any{
		"key_id": keyID, "key_description": "payments",
	})
	if got := r.info(); got["key_id"] != keyID || got["key_description"] != "payments" {
		t.Errorf("update-key-description key_info = %v", got)
	}
	r = e.admin.mustPost(t, "describe-key", map[string]any{"key_id": keyID})
	if got := r.info()["key_description"]; got != "payments" {
		t.Errorf("describe-key key_description = %v, want payments", got)
	}
	r = e.admin.mustPost(t, "update-key-description", map[string]any{
		"key_id": keyID, "key_description": "",
	})
	if got := r.info()["key_description"]; got != "" {
		t.Errorf("key_description after clearing = %v, want empty", got)
	}

	pending := e.admin.createKey(t, "pending")
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{
		"key_id": pending, "pending_days": "7",
	})

	tests := []struct {
		name string
		op   string
		body map[string]any
		code string
	}{
		{"alias taken", "update-key-alias", map[string]any{"key_id": keyID,
			"key_alias": "taken"}, "KMS.1104"},
		{"alias invalid", "update-key-alias", map[string]any{"key_id": keyID,
			"key_alias": "bad alias"}, "KMS.1101"},
		{"alias default suffix", "update-key-alias", map[string]any{"key_id": keyID,
			"key_alias": "kms/default"}, "KMS.1101"},
		{"alias missing", "update-key-alias", map[string]any{"key_id": keyID}, "KMS.0204"},
		{"alias key missing", "update-key-alias", map[string]any{"key_alias": "x"}, "KMS.0204"},
		{"alias unknown key", "update-key-alias", map[string]any{
			"key_id": "00000000-0000-0000-0000-000000000000", "key_alias": "x"}, "KMS.0205"},
		{"alias pending deletion", "update-key-alias", map[string]any{"key_id": pending,
			"key_alias": "x"}, "KMS.0210"},
		{"description too long", "update-key-description", map[string]any{"key_id": keyID,
			"key_description": strings.Repeat("d", 256)}, "KMS.1103"},
		{"description missing", "update-key-description", map[string]any{"key_id": keyID},
			"KMS.0204"},
		{"description with NUL", "update-key-description", map[string]any{"key_id": keyID,
			"key_description": "x\x00y"}, "KMS.1103"},
		{"description with newline", "update-key-description", map[string]any{
			"key_id": keyID, "key_description": "x\ny"}, "KMS.1103"},
		{"new key description with NUL", "create-key", map[string]any{
			"key_alias": "nul-description", "key_description": "\x00"}, "KMS.1103"},
		{"description pending deletion", "update-key-description", map[string]any{
			"key_id": pending, "key_description": "x"}, "KMS.0210"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.admin.post(t, tc.op, tc.body), tc.code)
		})
	}

	// 255 characters of description are allowed, counted as characters, not bytes.
	e.admin.mustPost(t, "update-key-description", map[string]any{
		"key_id": keyID, "key_description": strings.Repeat("é", 255),
	})
}

func TestAliasAPI(t *testing.T) {
	e := newTestEnv(t)
	first := e.admin.createKey(t, "first")
	second := e.admin.createKey(t, "second")

	r := e.admin.mustPost(t, "aliases", map[string]any{"key_id": first, "alias": "alias/app"})
	var entity aliasEntity
	if err := json.Unmarshal(r.Raw, &entity); err != nil {
		t.Fatalf("create alias answer: %v: %s", err, r.Raw)
	}
	if entity.KeyID != first || entity.Alias != "alias/app" || entity.DomainID != domainD1 {
		t.Errorf("create alias = %+v, want key %s, alias/app, domain %s", entity, first, domainD1)
	}
	if want := "kms:local-1:" + domainD1 + ":alias:app"; entity.AliasURN != want {
		t.Errorf("alias_urn = %q, want %q", entity.AliasURN, want)
	}
	if entity.CreateTime == "" || entity.UpdateTime != entity.CreateTime {
		t.Errorf("create_time %q, update_time %q: want equal millisecond strings",
			entity.CreateTime, entity.UpdateTime)
	}
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": first, "alias": "alias/b-2"})
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": second, "alias": "alias/c:3"})

	// Alias references resolve through the alias API first, then through key_alias.
	if got := describedKeyID(t, e.admin, "alias/app"); got != first {
		t.Errorf("describe-key alias/app = %q, want %s", got, first)
	}
	if got := describedKeyID(t, e.admin, "alias/second"); got != second {
		t.Errorf("describe-key alias/second (a key_alias) = %q, want %s", got, second)
	}
	dk := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": "alias/app",
		"datakey_length": "256"})
	if dk.str("key_id") != first {
		t.Errorf("create-datakey through alias/app used key %q, want %s", dk.str("key_id"), first)
	}

	pages := aliasPages(t, e.admin.do(t, http.MethodGet, "aliases?limit=2", nil))
	if got := aliasNamesOf(pages[0]); got != "alias/app,alias/b-2" {
		t.Errorf("list-aliases page 1 = %s, want alias/app,alias/b-2", got)
	}
	if pages[0].PageInfo.NextMarker != "2" || pages[0].PageInfo.CurrentCount != 2 {
		t.Errorf("page_info = %+v, want next_marker 2 and current_count 2", pages[0].PageInfo)
	}
	pages = aliasPages(t, e.admin.do(t, http.MethodGet, "aliases?limit=2&marker=2", nil))
	if got := aliasNamesOf(pages[0]); got != "alias/c:3" || pages[0].PageInfo.NextMarker != "" {
		t.Errorf("list-aliases page 2 = %s, %+v; want alias/c:3 and no next_marker", got,
			pages[0].PageInfo)
	}
	pages = aliasPages(t, e.admin.do(t, http.MethodGet, "aliases?key_id="+second, nil))
	if got := aliasNamesOf(pages[0]); got != "alias/c:3" {
		t.Errorf("list-aliases of the second key = %s, want alias/c:3", got)
	}

	// Associate moves alias/app; the resolution changes at once on this replica.
	r = e.admin.mustPost(t, "alias/associate", map[string]any{
		"alias": "alias/app", "target_key_id": second,
	})
	if got := r.str("key_id"); got != second {
		t.Errorf("associate answered key_id %q, want %s", got, second)
	}
	if got := describedKeyID(t, e.admin, "alias/app"); got != second {
		t.Errorf("describe-key alias/app after associate = %q, want %s", got, second)
	}

	r = e.admin.do(t, http.MethodDelete, "aliases", map[string]any{
		"key_id": second, "aliases": []string{"alias/app", "alias/c:3"},
	})
	if r.Status != http.StatusOK {
		t.Fatalf("delete aliases: status %d: %s", r.Status, r.Raw)
	}
	if got := describedKeyID(t, e.admin, "alias/app"); got != "" {
		t.Errorf("describe-key alias/app after delete = %q, want not found", got)
	}
	pages = aliasPages(t, e.admin.do(t, http.MethodGet, "aliases", nil))
	if got := aliasNamesOf(pages[0]); got != "alias/b-2" {
		t.Errorf("aliases after delete = %s, want alias/b-2", got)
	}
}

func aliasNamesOf(p aliasPage) string {
	names := make([]string, len(p.Aliases))
	for i, a := range p.Aliases {
		names[i] = a.Alias
	}
	return strings.Join(names, ",")
}

func TestAliasAPIRejects(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "rejects")
	other := e.admin.createKey(t, "other")
	pending := e.admin.createKey(t, "pending")
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": keyID, "alias": "alias/used"})
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{
		"key_id": pending, "pending_days": "7",
	})
	unknown := "00000000-0000-0000-0000-000000000000"
	longest := "alias/" + strings.Repeat("a", 249)

	tests := []struct {
		name   string
		method string
		op     string
		body   any
		code   string
	}{
		{"duplicate on the same key", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": "alias/used"}, "KMS.1104"},
		{"duplicate on another key", http.MethodPost, "aliases",
			map[string]any{"key_id": other, "alias": "alias/used"}, "KMS.1104"},
		{"no prefix", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": "used2"}, "KMS.1101"},
		{"prefix only", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": "alias/"}, "KMS.1101"},
		{"256 characters", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": longest + "a"}, "KMS.1101"},
		{"forbidden character", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": "alias/a b"}, "KMS.1101"},
		{"default suffix", http.MethodPost, "aliases",
			map[string]any{"key_id": keyID, "alias": "alias/x/default"}, "KMS.1101"},
		{"alias missing", http.MethodPost, "aliases", map[string]any{"key_id": keyID},
			"KMS.0204"},
		{"key missing", http.MethodPost, "aliases", map[string]any{"alias": "alias/n"},
			"KMS.0204"},
		{"unknown key", http.MethodPost, "aliases",
			map[string]any{"key_id": unknown, "alias": "alias/n"}, "KMS.0205"},
		{"key pending deletion", http.MethodPost, "aliases",
			map[string]any{"key_id": pending, "alias": "alias/n"}, "KMS.0210"},
		{"delete empty list", http.MethodDelete, "aliases",
			map[string]any{"key_id": keyID, "aliases": []string{}}, "KMS.0204"},
		{"delete alias of another key", http.MethodDelete, "aliases",
			map[string]any{"key_id": other, "aliases": []string{"alias/used"}}, "KMS.0308"},
		{"delete unknown alias", http.MethodDelete, "aliases",
			map[string]any{"key_id": keyID, "aliases": []string{"alias/used", "alias/none"}},
			"KMS.0308"},
		{"associate unknown alias", http.MethodPost, "alias/associate",
			map[string]any{"alias": "alias/none", "target_key_id": other}, "KMS.0308"},
		{"associate to unknown key", http.MethodPost, "alias/associate",
			map[string]any{"alias": "alias/used", "target_key_id": unknown}, "KMS.0205"},
		{"associate to key pending deletion", http.MethodPost, "alias/associate",
			map[string]any{"alias": "alias/used", "target_key_id": pending}, "KMS.0210"},
		{"associate target missing", http.MethodPost, "alias/associate",
			map[string]any{"alias": "alias/used"}, "KMS.0204"},
		{"list limit 0", http.MethodGet, "aliases?limit=0", nil, "KMS.1601"},
		{"list limit not a number", http.MethodGet, "aliases?limit=x", nil, "KMS.1601"},
		{"list negative marker", http.MethodGet, "aliases?marker=-1", nil, "KMS.1602"},
		{"list unknown key", http.MethodGet, "aliases?key_id=" + unknown, nil, "KMS.0205"},
		{"list repeated limit", http.MethodGet, "aliases?limit=1&limit=2", nil, "KMS.0308"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.admin.do(t, tc.method, tc.op, tc.body), tc.code)
		})
	}

	// The failed batch delete deleted nothing, and 255 characters are allowed.
	if got := describedKeyID(t, e.admin, "alias/used"); got != keyID {
		t.Errorf("describe-key alias/used after the rejects = %q, want %s", got, keyID)
	}
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": keyID, "alias": longest})
}

func TestAliasProjectIsolation(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "mine")
	e.admin.mustPost(t, "aliases", map[string]any{"key_id": keyID, "alias": "alias/shared"})
	p2 := e.newClient(t, otherProject, otherDomain, auth.RoleAdmin)

	pages := aliasPages(t, p2.do(t, http.MethodGet, "aliases", nil))
	if len(pages[0].Aliases) != 0 {
		t.Errorf("project 2 lists %d aliases of project 1, want 0", len(pages[0].Aliases))
	}
	wantCode(t, p2.post(t, "describe-key", map[string]any{"key_id": "alias/shared"}),
		"KMS.0205")
	wantCode(t, p2.post(t, "aliases", map[string]any{"key_id": keyID, "alias": "alias/x"}),
		"KMS.0205")
	wantCode(t, p2.post(t, "alias/associate", map[string]any{"alias": "alias/shared",
		"target_key_id": keyID}), "KMS.0205")
	wantCode(t, p2.do(t, http.MethodDelete, "aliases", map[string]any{"key_id": keyID,
		"aliases": []string{"alias/shared"}}), "KMS.0205")

	// Aliases are unique per project, so project 2 may use the same name.
	own := p2.createKey(t, "theirs")
	p2.mustPost(t, "aliases", map[string]any{"key_id": own, "alias": "alias/shared"})
	if got := describedKeyID(t, p2, "alias/shared"); got != own {
		t.Errorf("project 2 resolves alias/shared to %q, want its own key %s", got, own)
	}
	if got := describedKeyID(t, e.admin, "alias/shared"); got != keyID {
		t.Errorf("project 1 resolves alias/shared to %q, want %s", got, keyID)
	}
}

func TestAliasRoles(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "roles")
	reader := e.newClient(t, projectP1, domainD1, auth.RoleReadOnly)

	r := reader.post(t, "aliases", map[string]any{"key_id": keyID, "alias": "alias/r"})
	if r.Status != http.StatusForbidden {
		t.Errorf("read-only create alias: status %d, want 403: %s", r.Status, r.Raw)
	}
	aliasPages(t, reader.do(t, http.MethodGet, "aliases", nil))
}
