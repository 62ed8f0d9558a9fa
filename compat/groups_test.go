package compat

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
)

// The tests in this file cover operation groups that are added to kmsd one by one. Each
// skips itself until kmsd serves its routes (see requireRoute).

func TestKeyStateChanges(t *testing.T) {
	requireRoutes(t, "disable-key", "enable-key", "schedule-key-deletion", "cancel-key-deletion")
	client := adminClient(t)
	keyID := createKey(t, client, "compat-key-state")
	operate := &model.OperateKeyRequestBody{KeyId: keyID}

	disabled, err := client.DisableKey(&model.DisableKeyRequest{Body: operate})
	if err != nil {
		t.Fatalf("disable-key: %v", err)
	}
	if got := deref(disabled.KeyInfo.KeyState); got != "3" {
		t.Errorf("disable-key key_state = %q, want \"3\"", got)
	}
	if err := createDataKeyAs(client, keyID); err == nil {
		t.Error("create-datakey on a disabled key succeeded")
	} else if code := serviceError(t, err).ErrorCode; code != "KMS.0209" {
		t.Errorf("create-datakey on a disabled key: error_code = %q, want KMS.0209", code)
	}

	enabled, err := client.EnableKey(&model.EnableKeyRequest{Body: operate})
	if err != nil {
		t.Fatalf("enable-key: %v", err)
	}
	if got := deref(enabled.KeyInfo.KeyState); got != "2" {
		t.Errorf("enable-key key_state = %q, want \"2\"", got)
	}

	scheduled, err := client.DeleteKey(&model.DeleteKeyRequest{
		Body: &model.ScheduleKeyDeletionRequestBody{KeyId: keyID, PendingDays: "7"},
	})
	if err != nil {
		t.Fatalf("schedule-key-deletion: %v", err)
	}
	if got := deref(scheduled.KeyState); got != "4" {
		t.Errorf("schedule-key-deletion key_state = %q, want \"4\"", got)
	}

	cancelled, err := client.CancelKeyDeletion(&model.CancelKeyDeletionRequest{Body: operate})
	if err != nil {
		t.Fatalf("cancel-key-deletion: %v", err)
	}
	if got := deref(cancelled.KeyState); got != "3" {
		t.Errorf("cancel-key-deletion key_state = %q, want \"3\" (disabled)", got)
	}
}

func TestKeyRotation(t *testing.T) {
	requireRoutes(t, "enable-key-rotation", "get-key-rotation-status",
		"update-key-rotation-interval", "rotate-on-demand", "disable-key-rotation")
	client := adminClient(t)
	keyID := createKey(t, client, "compat-rotation")
	operate := &model.OperateKeyRequestBody{KeyId: keyID}

	before, err := client.CreateDatakey(&model.CreateDatakeyRequest{
		Body: &model.CreateDatakeyRequestBody{KeyId: keyID, DatakeyLength: ptr("256")},
	})
	if err != nil {
		t.Fatalf("create-datakey: %v", err)
	}

	if _, err := client.EnableKeyRotation(&model.EnableKeyRotationRequest{Body: operate}); err != nil {
		t.Fatalf("enable-key-rotation: %v", err)
	}
	_, err = client.UpdateKeyRotationInterval(&model.UpdateKeyRotationIntervalRequest{
		Body: &model.UpdateKeyRotationIntervalRequestBody{KeyId: keyID, RotationInterval: 30},
	})
	if err != nil {
		t.Fatalf("update-key-rotation-interval: %v", err)
	}
	rotated, err := client.RotateOnDemand(&model.RotateOnDemandRequest{
		Body: &model.RotateOnDemandRequestBody{KeyId: keyID},
	})
	if err != nil {
		t.Fatalf("rotate-on-demand: %v", err)
	}
	if got := deref(rotated.KeyId); got != keyID {
		t.Errorf("rotate-on-demand key_id = %q, want %q", got, keyID)
	}

	status, err := client.ShowKeyRotationStatus(&model.ShowKeyRotationStatusRequest{Body: operate})
	if err != nil {
		t.Fatalf("get-key-rotation-status: %v", err)
	}
	if status.KeyRotationEnabled == nil || !*status.KeyRotationEnabled {
		t.Errorf("key_rotation_enabled = %v, want true", status.KeyRotationEnabled)
	}
	if status.RotationInterval == nil || *status.RotationInterval != 30 {
		t.Errorf("rotation_interval = %v, want 30", status.RotationInterval)
	}
	if status.NumberOfRotations == nil || *status.NumberOfRotations < 1 {
		t.Errorf("number_of_rotations = %v, want at least 1", status.NumberOfRotations)
	}

	// A data key wrapped before the rotation still decrypts with the old key version.
	_, err = client.DecryptDatakey(&model.DecryptDatakeyRequest{
		Body: &model.DecryptDatakeyRequestBody{
			KeyId: keyID, CipherText: *before.CipherText, DatakeyCipherLength: "32",
		},
	})
	if err != nil {
		t.Errorf("decrypt-datakey of a data key made before rotate-on-demand: %v", err)
	}

	if _, err := client.DisableKeyRotation(&model.DisableKeyRotationRequest{Body: operate}); err != nil {
		t.Fatalf("disable-key-rotation: %v", err)
	}
}

func TestKeyTags(t *testing.T) {
	const probeKeyID = "00000000-0000-0000-0000-000000000000"
	requireRoute(t, http.MethodPost, probeKeyID+"/tags")
	requireRoute(t, http.MethodPost, probeKeyID+"/tags/action")
	requireRoute(t, http.MethodGet, "tags")
	client := adminClient(t)
	keyID := createKey(t, client, "compat-tags")

	_, err := client.CreateKmsTag(&model.CreateKmsTagRequest{
		KeyId: keyID,
		Body:  &model.CreateKmsTagRequestBody{Tag: &model.TagItem{Key: "env:prod", Value: ptr("1")}},
	})
	if err != nil {
		t.Fatalf("create tag: %v", err)
	}
	_, err = client.BatchCreateKmsTags(&model.BatchCreateKmsTagsRequest{
		KeyId: keyID,
		Body: &model.BatchCreateKmsTagsRequestBody{Action: "create", Tags: []model.TagItem{
			{Key: "team", Value: ptr("compat")},
			{Key: "tier", Value: ptr("gold")},
		}},
	})
	if err != nil {
		t.Fatalf("batch create tags: %v", err)
	}

	keyTags, err := client.ShowKmsTags(&model.ShowKmsTagsRequest{KeyId: keyID})
	if err != nil {
		t.Fatalf("key tags: %v", err)
	}
	if keyTags.ExistTagsNum == nil || *keyTags.ExistTagsNum != 3 {
		t.Errorf("existTagsNum = %v, want 3", keyTags.ExistTagsNum)
	}
	if keyTags.Tags == nil || len(*keyTags.Tags) != 3 {
		t.Errorf("tags = %v, want three", keyTags.Tags)
	}

	project, err := client.ListKmsTags(&model.ListKmsTagsRequest{})
	if err != nil {
		t.Fatalf("project tags: %v", err)
	}
	found := false
	for _, tag := range items(project.Tags) {
		found = found || deref(tag.Key) == "team"
	}
	if !found {
		t.Errorf("project tags = %v, want the key team", project.Tags)
	}

	// The SDK sends the ":" of the tag key raw in the path and signs it as %3A.
	if _, err := client.DeleteTag(&model.DeleteTagRequest{KeyId: keyID, Key: "env:prod"}); err != nil {
		t.Fatalf("delete tag env:prod: %v", err)
	}
	after, err := client.ShowKmsTags(&model.ShowKmsTagsRequest{KeyId: keyID})
	if err != nil {
		t.Fatalf("key tags after delete: %v", err)
	}
	if after.ExistTagsNum == nil || *after.ExistTagsNum != 2 {
		t.Errorf("existTagsNum after delete = %v, want 2", after.ExistTagsNum)
	}
}

// items returns *p, or nil.
func items[T any](p *[]T) []T {
	if p == nil {
		return nil
	}
	return *p
}

func TestAliases(t *testing.T) {
	requireRoute(t, http.MethodPost, "aliases")
	requireRoute(t, http.MethodGet, "aliases")
	requireRoute(t, http.MethodPost, "alias/associate")
	client := adminClient(t)
	first := createKey(t, client, "compat-alias-1")
	second := createKey(t, client, "compat-alias-2")
	alias := "alias/compat-" + randomHex(4)

	created, err := client.CreateAlias(&model.CreateAliasRequest{
		Body: &model.CreateAliasRequestBody{KeyId: first, Alias: alias},
	})
	if err != nil {
		t.Fatalf("create alias: %v", err)
	}
	if got := deref(created.Alias); got != alias {
		t.Errorf("alias = %q, want %q", got, alias)
	}
	if got := deref(created.KeyId); got != first {
		t.Errorf("key_id = %q, want %q", got, first)
	}
	if got := deref(created.AliasUrn); got == "" || got == "<nil>" {
		t.Errorf("alias_urn = %q, want the alias URN", got)
	}

	// ListAliases is the one operation whose response is a top-level JSON array.
	listed, err := client.ListAliases(&model.ListAliasesRequest{KeyId: &first, Limit: ptr("10")})
	if err != nil {
		t.Fatalf("list aliases: %v", err)
	}
	if listed.Body == nil || len(*listed.Body) != 1 {
		t.Fatalf("list aliases body = %v, want an array of one page", listed.Body)
	}
	page := (*listed.Body)[0]
	if len(page.Aliases) != 1 || page.Aliases[0].Alias != alias {
		t.Errorf("aliases = %v, want only %s", page.Aliases, alias)
	}
	if page.PageInfo == nil || page.PageInfo.CurrentCount == nil || *page.PageInfo.CurrentCount != 1 {
		t.Errorf("page_info = %v, want current_count 1", page.PageInfo)
	}

	moved, err := client.AssociateAlias(&model.AssociateAliasRequest{
		Body: &model.AssociateAliasRequestBody{Alias: alias, TargetKeyId: second},
	})
	if err != nil {
		t.Fatalf("associate alias: %v", err)
	}
	if got := deref(moved.KeyId); got != second {
		t.Errorf("associate alias key_id = %q, want %q", got, second)
	}

	_, err = client.DeleteAlias(&model.DeleteAliasRequest{
		Body: &model.DeleteAliasRequestBody{KeyId: second, Aliases: []string{alias}},
	})
	if err != nil {
		t.Fatalf("delete alias: %v", err)
	}
}

func TestEncryptDecryptData(t *testing.T) {
	requireRoutes(t, "encrypt-data", "decrypt-data")
	client := adminClient(t)
	keyID := createKey(t, client, "compat-data")
	const plaintext = "compat plaintext"

	enc, err := client.EncryptData(&model.EncryptDataRequest{Body: &model.EncryptDataRequestBody{
		KeyId: keyID, PlainText: plaintext, AdditionalAuthenticatedData: ptr("compat-aad"),
	}})
	if err != nil {
		t.Fatalf("encrypt-data: %v", err)
	}
	if got := deref(enc.KeyId); got != keyID {
		t.Errorf("encrypt-data key_id = %q, want %q", got, keyID)
	}
	if _, err := base64.StdEncoding.DecodeString(deref(enc.CipherText)); err != nil {
		t.Fatalf("cipher_text %q is not base64: %v", deref(enc.CipherText), err)
	}

	// decrypt-data takes no key_id for symmetric keys: the ciphertext names its key.
	dec, err := client.DecryptData(&model.DecryptDataRequest{Body: &model.DecryptDataRequestBody{
		CipherText: *enc.CipherText, AdditionalAuthenticatedData: ptr("compat-aad"),
	}})
	if err != nil {
		t.Fatalf("decrypt-data: %v", err)
	}
	if got := deref(dec.KeyId); got != keyID {
		t.Errorf("decrypt-data key_id = %q, want %q", got, keyID)
	}
	if got := deref(dec.PlainText); got != plaintext {
		t.Errorf("plain_text = %q, want %q", got, plaintext)
	}
	if got, want := deref(dec.PlainTextBase64), base64.StdEncoding.EncodeToString([]byte(plaintext)); got != want {
		t.Errorf("plain_text_base64 = %q, want %q", got, want)
	}
}

func TestGenRandom(t *testing.T) {
	requireRoute(t, http.MethodPost, "gen-random")
	client := adminClient(t)

	res, err := client.CreateRandom(&model.CreateRandomRequest{
		Body: &model.GenRandomRequestBody{RandomDataLength: "512"},
	})
	if err != nil {
		t.Fatalf("gen-random: %v", err)
	}
	b, err := hex.DecodeString(deref(res.RandomData))
	if err != nil {
		t.Fatalf("random_data %q is not hex: %v", deref(res.RandomData), err)
	}
	if len(b) != 64 {
		t.Errorf("random_data has %d bytes, want 64 for 512 bits", len(b))
	}
}
