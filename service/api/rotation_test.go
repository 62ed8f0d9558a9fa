package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
)

// rotationStatus posts get-key-rotation-status and returns the response.
func (c client) rotationStatus(t *testing.T, keyID string) response {
	t.Helper()
	return c.mustPost(t, "get-key-rotation-status", map[string]any{"key_id": keyID})
}

func materialCount(r response) int {
	materials, _ := r.Body["key_materials"].([]any)
	return len(materials)
}

func TestRotationKeepsEarlierCiphertexts(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "rotation-c1-c4")

	c1 := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID, "datakey_length": "256"})
	d1 := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "first"})
	for i := range 3 {
		r := e.admin.mustPost(t, "rotate-on-demand", map[string]any{"key_id": keyID})
		if r.str("key_id") != keyID {
			t.Fatalf("rotate-on-demand %d answered %s, want key_id %s", i+1, r.Raw, keyID)
		}
	}
	c4 := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID, "datakey_length": "256"})

	check := func(when string) {
		t.Helper()
		for name, dk := range map[string]response{"C1": c1, "C4": c4} {
			r := e.admin.mustPost(t, "decrypt-datakey", map[string]any{"key_id": keyID,
				"cipher_text": dk.str("cipher_text"), "datakey_cipher_length": "32"})
			if r.str("data_key") != dk.str("plain_text") {
				t.Errorf("%s: %s decrypts to %s, want %s", when, name, r.str("data_key"), dk.str("plain_text"))
			}
		}
		r := e.admin.mustPost(t, "decrypt-data", map[string]any{"cipher_text": d1.str("cipher_text")})
		if r.str("plain_text") != "first" {
			t.Errorf("%s: encrypt-data ciphertext of version 1 decrypts to %q", when, r.str("plain_text"))
		}
	}
	check("before restart")

	status := e.admin.rotationStatus(t, keyID)
	if n, _ := status.Body["number_of_rotations"].(float64); n != 3 {
		t.Errorf("number_of_rotations = %v, want 3", status.Body["number_of_rotations"])
	}
	if got := materialCount(status); got != 4 {
		t.Errorf("key_materials has %d entries, want 4", got)
	}
	if status.str("last_rotation_time") == "" {
		t.Error("last_rotation_time is empty after rotations")
	}

	e.restart()
	check("after restart")
}

func TestRotationStatusTypes(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "rotation-types")

	never := e.admin.rotationStatus(t, keyID)
	if v, ok := never.Body["rotation_interval"].(float64); !ok || v != 365 {
		t.Errorf("rotation_interval of a key whose rotation was never on = %#v, want the "+
			"default 365", never.Body["rotation_interval"])
	}

	r := e.admin.mustPost(t, "enable-key-rotation", map[string]any{"key_id": keyID})
	if string(r.Raw) != "{}\n" && string(r.Raw) != "{}" {
		t.Errorf("enable-key-rotation answered %q, want {}", r.Raw)
	}
	e.admin.mustPost(t, "update-key-rotation-interval", map[string]any{"key_id": keyID, "rotation_interval": 30})

	status := e.admin.rotationStatus(t, keyID)
	if v, ok := status.Body["key_rotation_enabled"].(bool); !ok || !v {
		t.Errorf("key_rotation_enabled = %#v, want JSON true", status.Body["key_rotation_enabled"])
	}
	if v, ok := status.Body["rotation_interval"].(float64); !ok || v != 30 {
		t.Errorf("rotation_interval = %#v, want JSON number 30", status.Body["rotation_interval"])
	}
	if v, ok := status.Body["number_of_rotations"].(float64); !ok || v != 0 {
		t.Errorf("number_of_rotations = %#v, want JSON number 0", status.Body["number_of_rotations"])
	}
	if _, ok := status.Body["last_rotation_time"].(string); !ok {
		t.Errorf("last_rotation_time = %#v, want a JSON string", status.Body["last_rotation_time"])
	}
	materials, _ := status.Body["key_materials"].([]any)
	if len(materials) != 1 {
		t.Fatalf("key_materials = %v, want one entry", status.Body["key_materials"])
	}
	if m, _ := materials[0].(map[string]any); m["state"] != float64(2) || m["material_id"] != "1" {
		t.Errorf("key_materials[0] = %v, want material_id \"1\" and state 2", m)
	}

	described := keyInfoOf(e.admin.mustPost(t, "describe-key", map[string]any{"key_id": keyID}))
	if described["key_rotation_enabled"] != "true" {
		t.Errorf("describe-key key_rotation_enabled = %#v, want the string \"true\"",
			described["key_rotation_enabled"])
	}

	e.admin.mustPost(t, "disable-key-rotation", map[string]any{"key_id": keyID})
	status = e.admin.rotationStatus(t, keyID)
	if v, _ := status.Body["key_rotation_enabled"].(bool); v {
		t.Error("key_rotation_enabled is true after disable-key-rotation")
	}
}

func TestRotationErrors(t *testing.T) {
	e := newTestEnv(t)
	off := e.admin.createKey(t, "rotation-off")
	on := e.admin.createKey(t, "rotation-on")
	e.admin.mustPost(t, "enable-key-rotation", map[string]any{"key_id": on})
	disabled := e.admin.createKey(t, "rotation-disabled")
	e.admin.mustPost(t, "disable-key", map[string]any{"key_id": disabled})
	pending := e.admin.createKey(t, "rotation-pending")
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{"key_id": pending, "pending_days": "7"})

	tests := []struct {
		name     string
		op       string
		body     map[string]any
		wantCode string
	}{
		{"interval 29", "update-key-rotation-interval",
			map[string]any{"key_id": on, "rotation_interval": 29}, "KMS.0308"},
		{"interval 366", "update-key-rotation-interval",
			map[string]any{"key_id": on, "rotation_interval": 366}, "KMS.0308"},
		{"interval missing", "update-key-rotation-interval", map[string]any{"key_id": on}, "KMS.0204"},
		{"interval with rotation off", "update-key-rotation-interval",
			map[string]any{"key_id": off, "rotation_interval": 90}, "KMS.0313"},
		{"enable rotation of a pending key", "enable-key-rotation",
			map[string]any{"key_id": pending}, "KMS.0210"},
		{"rotate a disabled key", "rotate-on-demand", map[string]any{"key_id": disabled}, "KMS.0209"},
		{"rotate a pending key", "rotate-on-demand", map[string]any{"key_id": pending}, "KMS.0210"},
		{"status of an unknown key", "get-key-rotation-status",
			map[string]any{"key_id": "00000000-0000-0000-0000-000000000000"}, "KMS.0205"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, tt.op, e.admin.post(t, tt.op, tt.body), tt.wantCode)
		})
	}

	// A string holding the number is accepted, as for the API's other numbers.
	e.admin.mustPost(t, "update-key-rotation-interval", map[string]any{"key_id": on, "rotation_interval": "365"})
}

// TestScheduleDeletionTurnsRotationOff covers the choice documented in docs/lifecycle.md:
// scheduling deletion of a key with rotation on is accepted and turns rotation off, so
// no rotation happens while the key is pending deletion, nor after a cancel.
func TestScheduleDeletionTurnsRotationOff(t *testing.T) {
	clock := newTestClock()
	e := newTestEnvWith(t, service.Config{Clock: clock.Now})

	pending := e.admin.createKey(t, "scheduled-pending")
	rotating := e.admin.createKey(t, "scheduled-rotating")
	disabled := e.admin.createKey(t, "scheduled-disabled")
	for _, keyID := range []string{pending, rotating, disabled} {
		e.admin.mustPost(t, "enable-key-rotation", map[string]any{"key_id": keyID})
		e.admin.mustPost(t, "update-key-rotation-interval", map[string]any{"key_id": keyID, "rotation_interval": 30})
	}
	e.admin.mustPost(t, "schedule-key-deletion", map[string]any{"key_id": pending, "pending_days": "60"})
	e.admin.mustPost(t, "disable-key", map[string]any{"key_id": disabled})

	status := e.admin.rotationStatus(t, pending)
	if v, _ := status.Body["key_rotation_enabled"].(bool); v {
		t.Error("key_rotation_enabled is true after schedule-key-deletion")
	}

	e.restart()
	clock.advance(31 * 24 * time.Hour)
	n, err := e.svc.RunRotation(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("RunRotation 31 days on = %d, %v; want 1 (only the enabled key), nil", n, err)
	}

	want := map[string]int{pending: 1, rotating: 2, disabled: 1}
	for keyID, materials := range want {
		if got := materialCount(e.admin.rotationStatus(t, keyID)); got != materials {
			t.Errorf("key %s has %d key versions, want %d", keyID, got, materials)
		}
	}

	n, err = e.svc.RunRotation(context.Background())
	if err != nil || n != 0 {
		t.Errorf("RunRotation again at the same time = %d, %v; want 0, nil", n, err)
	}

	e.admin.mustPost(t, "cancel-key-deletion", map[string]any{"key_id": pending})
	status = e.admin.rotationStatus(t, pending)
	if v, _ := status.Body["key_rotation_enabled"].(bool); v {
		t.Error("key_rotation_enabled is true after cancel-key-deletion")
	}
}

func TestSealLimitRotates(t *testing.T) {
	const limit = 5
	e := newTestEnvWith(t, service.Config{SealLimit: limit})
	keyID := e.admin.createKey(t, "seal-limit")

	var first response
	for i := range limit {
		r := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
		if i == 0 {
			first = r
		}
	}
	if got := materialCount(e.admin.rotationStatus(t, keyID)); got != 2 {
		t.Fatalf("after %d seals the key has %d versions, want 2", limit, got)
	}

	// Two seals on version 2, flushed at the restart, then three more reach the limit
	// of version 2 only if the stored count survived.
	e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "a"})
	e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "b"})
	e.restart()
	for range limit - 2 {
		e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "c"})
	}
	if got := materialCount(e.admin.rotationStatus(t, keyID)); got != 3 {
		t.Errorf("after %d seals on version 2 across a restart the key has %d versions, want 3",
			limit, got)
	}

	r := e.admin.mustPost(t, "decrypt-datakey", map[string]any{"key_id": keyID,
		"cipher_text": first.str("cipher_text"), "datakey_cipher_length": "32"})
	if r.str("data_key") != first.str("plain_text") {
		t.Error("the first data key no longer decrypts after seal-limit rotations")
	}
}

func TestRotationRoleCheck(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "rotation-role")
	cred, secret, err := e.creds.Create(context.Background(), auth.CreateRequest{
		ProjectID: projectP1, DomainID: domainD1, Role: auth.RoleReadOnly,
	})
	if err != nil {
		t.Fatalf("create read-only credential: %v", err)
	}
	reader := e.client(cred.AccessKey, secret, projectP1)

	if r := reader.post(t, "rotate-on-demand", map[string]any{"key_id": keyID}); r.Status != http.StatusForbidden {
		t.Errorf("rotate-on-demand as read-only: status %d, want 403: %s", r.Status, r.Raw)
	}
	reader.mustPost(t, "get-key-rotation-status", map[string]any{"key_id": keyID})
}
