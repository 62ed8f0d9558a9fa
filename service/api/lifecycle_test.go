package api

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
)

// testClock is a settable clock for service.Config.Clock. It starts at the real time so
// that keys look recent; tests move it forward with advance.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now().UTC()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// keyInfoOf returns the key_info object of a response.
func keyInfoOf(r response) map[string]any {
	info, _ := r.Body["key_info"].(map[string]any)
	return info
}

func (c client) keyState(t *testing.T, keyID string) string {
	t.Helper()
	r := c.mustPost(t, "describe-key", map[string]any{"key_id": keyID})
	state, _ := keyInfoOf(r)["key_state"].(string)
	return state
}

// wantError fails t unless r is a 400 response with code.
func wantError(t *testing.T, what string, r response, code string) {
	t.Helper()
	if r.Status != http.StatusBadRequest || r.code() != code {
		t.Errorf("%s: status %d code %q, want 400 %s: %s", what, r.Status, r.code(), code, r.Raw)
	}
}

func TestKeyStateTransitionErrors(t *testing.T) {
	e := newTestEnv(t)
	enabled := e.admin.createKey(t, "transitions-enabled")
	disabled := e.admin.createKey(t, "transitions-disabled")
	e.admin.mustPost(t, "disable-key", map[string]any{"key_id": disabled})
	pending := e.admin.createKey(t, "transitions-pending")
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{"key_id": pending, "pending_days": "7"})

	tests := []struct {
		name     string
		op       string
		body     map[string]any
		wantCode string
	}{
		{"enable an enabled key", "enable-key", map[string]any{"key_id": enabled}, "KMS.1201"},
		{"enable a pending key", "enable-key", map[string]any{"key_id": pending}, "KMS.1201"},
		{"disable a disabled key", "disable-key", map[string]any{"key_id": disabled}, "KMS.1301"},
		{"disable a pending key", "disable-key", map[string]any{"key_id": pending}, "KMS.1301"},
		{"schedule twice", "schedule-key-deletion",
			map[string]any{"key_id": pending, "pending_days": "7"}, "KMS.1402"},
		{"pending days 6", "schedule-key-deletion",
			map[string]any{"key_id": enabled, "pending_days": "6"}, "KMS.1401"},
		{"pending days 1097", "schedule-key-deletion",
			map[string]any{"key_id": enabled, "pending_days": "1097"}, "KMS.1401"},
		{"pending days not a number", "schedule-key-deletion",
			map[string]any{"key_id": enabled, "pending_days": "seven"}, "KMS.1401"},
		{"pending days missing", "schedule-key-deletion",
			map[string]any{"key_id": enabled}, "KMS.0204"},
		{"cancel an enabled key", "cancel-key-deletion", map[string]any{"key_id": enabled}, "KMS.1501"},
		{"cancel a disabled key", "cancel-key-deletion", map[string]any{"key_id": disabled}, "KMS.1501"},
		{"enable an unknown key", "enable-key",
			map[string]any{"key_id": "00000000-0000-0000-0000-000000000000"}, "KMS.0205"},
		{"disable with no key id", "disable-key", map[string]any{}, "KMS.0204"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, tt.op, e.admin.post(t, tt.op, tt.body), tt.wantCode)
		})
	}

	if got := e.admin.keyState(t, enabled); got != "2" {
		t.Errorf("key_state of the enabled key after rejected changes = %q, want \"2\"", got)
	}
}

func TestScheduleCancelEnable(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "schedule-cancel")

	r := e.admin.mustPost(t, "schedule-key-deletion", map[string]any{"key_id": keyID, "pending_days": 7})
	if r.str("key_id") != keyID || r.str("key_state") != "4" {
		t.Errorf("schedule-key-deletion answered %s, want key_id %s and key_state \"4\"", r.Raw, keyID)
	}
	described := keyInfoOf(e.admin.mustPost(t, "describe-key", map[string]any{"key_id": keyID}))
	if described["scheduled_deletion_date"] == "" {
		t.Error("scheduled_deletion_date is empty while the key is pending deletion")
	}

	e.restart()

	r = e.admin.mustPost(t, "cancel-key-deletion", map[string]any{"key_id": keyID})
	if r.str("key_state") != "3" {
		t.Errorf("cancel-key-deletion key_state = %q, want \"3\"", r.str("key_state"))
	}
	described = keyInfoOf(e.admin.mustPost(t, "describe-key", map[string]any{"key_id": keyID}))
	if described["scheduled_deletion_date"] != "" {
		t.Errorf("scheduled_deletion_date after cancel = %v, want \"\"", described["scheduled_deletion_date"])
	}

	r = e.admin.mustPost(t, "enable-key", map[string]any{"key_id": keyID})
	if got := keyInfoOf(r)["key_state"]; got != "2" {
		t.Errorf("enable-key key_info.key_state = %v, want \"2\"", got)
	}

	e.restart()
	if got := e.admin.keyState(t, keyID); got != "2" {
		t.Errorf("key_state after restart = %q, want \"2\"", got)
	}
}

func TestDisabledKeyRejectsCrypto(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "disabled-crypto")

	dk := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID, "datakey_length": "256"})
	data := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "secret"})

	r := e.admin.mustPost(t, "disable-key", map[string]any{"key_id": keyID})
	if got := keyInfoOf(r)["key_state"]; got != "3" {
		t.Errorf("disable-key key_info.key_state = %v, want \"3\"", got)
	}

	decryptDK := map[string]any{"key_id": keyID, "cipher_text": dk.str("cipher_text"),
		"datakey_cipher_length": "32"}
	decryptData := map[string]any{"cipher_text": data.str("cipher_text")}
	wantError(t, "decrypt-datakey", e.admin.post(t, "decrypt-datakey", decryptDK), "KMS.0209")
	wantError(t, "create-datakey", e.admin.post(t, "create-datakey", map[string]any{"key_id": keyID}), "KMS.0209")
	wantError(t, "encrypt-data", e.admin.post(t, "encrypt-data",
		map[string]any{"key_id": keyID, "plain_text": "x"}), "KMS.0209")
	wantError(t, "decrypt-data", e.admin.post(t, "decrypt-data", decryptData), "KMS.0209")

	e.restart()
	wantError(t, "decrypt-datakey after restart", e.admin.post(t, "decrypt-datakey", decryptDK), "KMS.0209")

	e.admin.mustPost(t, "enable-key", map[string]any{"key_id": keyID})
	if got := e.admin.mustPost(t, "decrypt-datakey", decryptDK).str("data_key"); got != dk.str("plain_text") {
		t.Errorf("decrypt-datakey after enable-key = %s, want %s", got, dk.str("plain_text"))
	}
	if got := e.admin.mustPost(t, "decrypt-data", decryptData).str("plain_text"); got != "secret" {
		t.Errorf("decrypt-data after enable-key = %q, want \"secret\"", got)
	}
}

func TestDeletionJobWaitsForWindow(t *testing.T) {
	clock := newTestClock()
	e := newTestEnvWith(t, service.Config{Clock: clock.Now})
	keyID := e.admin.createKey(t, "deletion-window")
	keep := e.admin.createKey(t, "deletion-keep")
	e.admin.mustPost(t, "rotate-on-demand", map[string]any{"key_id": keyID})
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{"key_id": keyID, "pending_days": "7"})

	clock.advance(7*24*time.Hour - time.Second)
	n, err := e.svc.RunDeletion(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("RunDeletion one second before the window ends = %d, %v; want 0, nil", n, err)
	}
	if got := e.admin.keyState(t, keyID); got != "4" {
		t.Fatalf("key_state before the window ends = %q, want \"4\"", got)
	}

	e.restart()
	clock.advance(time.Second)
	n, err = e.svc.RunDeletion(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("RunDeletion when the window ends = %d, %v; want 1, nil", n, err)
	}

	wantError(t, "describe-key of the deleted key",
		e.admin.post(t, "describe-key", map[string]any{"key_id": keyID}), "KMS.0205")
	for _, version := range []uint32{1, 2} {
		exists, err := e.token.KeyExists(context.Background(), hsm.KeyRef{KeyID: keyID, Version: version})
		if err != nil || exists {
			t.Errorf("token object of version %d after deletion: exists %v, error %v", version, exists, err)
		}
	}
	if got := e.admin.keyState(t, keep); got != "2" {
		t.Errorf("key_state of the key not scheduled = %q, want \"2\"", got)
	}
}

func TestUserQuotasAndInstances(t *testing.T) {
	e := newTestEnvWith(t, service.Config{KeysPerProject: 7, GrantsPerKey: 9})
	e.admin.createKey(t, "quota-1")
	e.admin.createKey(t, "quota-2")

	r := e.admin.do(t, http.MethodGet, "user-quotas", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("user-quotas: status %d: %s", r.Status, r.Raw)
	}
	quotas, _ := r.Body["quotas"].(map[string]any)
	resources, _ := quotas["resources"].([]any)
	want := map[string][2]float64{"CMK": {2, 7}, "grant_per_CMK": {0, 9}}
	if len(resources) != len(want) {
		t.Fatalf("user-quotas resources = %v, want %d entries", resources, len(want))
	}
	for _, res := range resources {
		entry, _ := res.(map[string]any)
		typ, _ := entry["type"].(string)
		used, usedIsNumber := entry["used"].(float64)
		quota, quotaIsNumber := entry["quota"].(float64)
		if !usedIsNumber || !quotaIsNumber {
			t.Errorf("quota %s: used and quota must be JSON numbers: %v", typ, entry)
			continue
		}
		if w, ok := want[typ]; !ok || used != w[0] || quota != w[1] {
			t.Errorf("quota %s = used %v quota %v, want %v", typ, used, quota, w)
		}
	}

	r = e.admin.do(t, http.MethodGet, "user-instances", nil)
	if n, ok := r.Body["instance_num"].(float64); r.Status != http.StatusOK || !ok || n != 2 {
		t.Errorf("user-instances = status %d, %s; want 200 and instance_num 2", r.Status, r.Raw)
	}

	for i := 3; i <= 7; i++ {
		e.admin.createKey(t, "quota-more-"+string(rune('0'+i)))
	}
	wantError(t, "create-key over the quota",
		e.admin.post(t, "create-key", map[string]any{"key_alias": "quota-over"}), "KMS.1105")
}

func TestVersionDiscovery(t *testing.T) {
	e := newTestEnv(t)

	tests := []struct {
		path  string
		field string
	}{
		{"/", "versions"},
		{"/v1.0", "version"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := e.admin.do(t, http.MethodGet, tt.path, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s: status %d: %s", tt.path, r.Status, r.Raw)
			}
			if _, ok := r.Body[tt.field]; !ok {
				t.Errorf("GET %s answered %s, want a %q field", tt.path, r.Raw, tt.field)
			}
		})
	}
}
