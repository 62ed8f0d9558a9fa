package compat

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"

	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
)

// keyIDPattern is the key_id format of the Huawei KMS API: a lower-case UUID.
var keyIDPattern = regexp.MustCompile(`^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`)

// millisPattern is a date as the API sends it: milliseconds since the epoch, as a string.
var millisPattern = regexp.MustCompile(`^[1-9][0-9]{12}$`)

// createKey creates an AES_256 key through the SDK and returns its id.
func createKey(t *testing.T, client *kms.KmsClient, alias string) string {
	t.Helper()
	spec := model.GetCreateKeyRequestBodyKeySpecEnum().AES_256
	res, err := client.CreateKey(&model.CreateKeyRequest{Body: &model.CreateKeyRequestBody{
		KeyAlias:       alias,
		KeySpec:        &spec,
		KeyDescription: ptr("created by the compat tests"),
	}})
	if err != nil {
		t.Fatalf("create-key %q: %v", alias, err)
	}
	if res.KeyInfo == nil || res.KeyInfo.KeyId == nil {
		t.Fatalf("create-key %q: no key_info.key_id in %v", alias, res)
	}
	return *res.KeyInfo.KeyId
}

func ptr[T any](v T) *T { return &v }

// deref returns *p, or "<nil>" so that a missing field shows in a failure message.
func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestCreateKeyAnswer(t *testing.T) {
	client := adminClient(t)
	spec := model.GetCreateKeyRequestBodyKeySpecEnum().AES_256
	usage := model.GetCreateKeyRequestBodyKeyUsageEnum().ENCRYPT_DECRYPT

	res, err := client.CreateKey(&model.CreateKeyRequest{Body: &model.CreateKeyRequestBody{
		KeyAlias:       "compat-create-key",
		KeySpec:        &spec,
		KeyUsage:       &usage,
		KeyDescription: ptr("create-key response"),
		Sequence:       ptr("919c82d4-8046-4722-9094-35c3c6524cff"),
	}})
	if err != nil {
		t.Fatalf("create-key: %v", err)
	}

	if res.HttpStatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", res.HttpStatusCode)
	}
	if res.KeyInfo == nil {
		t.Fatal("key_info is missing")
	}
	if id := deref(res.KeyInfo.KeyId); !keyIDPattern.MatchString(id) {
		t.Errorf("key_info.key_id = %q, want a lower-case UUID", id)
	}
	if got := deref(res.KeyInfo.DomainId); got != kmsd.domainID {
		t.Errorf("key_info.domain_id = %q, want %q", got, kmsd.domainID)
	}
	if got := deref(res.KeyInfo.RegionId); got == "" || got == "<nil>" {
		t.Errorf("key_info.region_id = %q, want the region", got)
	}
}

func TestDescribeKeyDetails(t *testing.T) {
	client := adminClient(t)
	id := createKey(t, client, "compat-describe-key")

	res, err := client.ListKeyDetail(&model.ListKeyDetailRequest{
		Body: &model.OperateKeyRequestBody{KeyId: id},
	})
	if err != nil {
		t.Fatalf("describe-key: %v", err)
	}
	k := res.KeyInfo
	if k == nil {
		t.Fatal("key_info is missing")
	}

	stringFields := []struct {
		name string
		got  *string
		want string
	}{
		{"key_id", k.KeyId, id},
		{"domain_id", k.DomainId, kmsd.domainID},
		{"key_alias", k.KeyAlias, "compat-describe-key"},
		{"key_description", k.KeyDescription, "created by the compat tests"},
		{"key_state", k.KeyState, "2"},
		{"default_key_flag", k.DefaultKeyFlag, "0"},
		{"key_rotation_enabled", k.KeyRotationEnabled, "false"},
		{"scheduled_deletion_date", k.ScheduledDeletionDate, ""},
	}
	for _, f := range stringFields {
		if got := deref(f.got); got != f.want {
			t.Errorf("%s = %q, want %q", f.name, got, f.want)
		}
	}

	if k.KeySpec == nil || k.KeySpec.Value() != "AES_256" {
		t.Errorf("key_spec = %v, want AES_256", k.KeySpec)
	}
	if k.KeyUsage == nil || k.KeyUsage.Value() != "ENCRYPT_DECRYPT" {
		t.Errorf("key_usage = %v, want ENCRYPT_DECRYPT", k.KeyUsage)
	}
	if k.Origin == nil || k.Origin.Value() != "kms" {
		t.Errorf("origin = %v, want kms", k.Origin)
	}
	if got := deref(k.CreationDate); !millisPattern.MatchString(got) {
		t.Errorf("creation_date = %q, want milliseconds since the epoch", got)
	}
}

func TestListKeysPaging(t *testing.T) {
	client := adminClient(t)
	first := createKey(t, client, "compat-list-keys-1")
	second := createKey(t, client, "compat-list-keys-2")

	page, err := client.ListKeys(&model.ListKeysRequest{Body: &model.ListKeysRequestBody{
		Limit: ptr("1"),
	}})
	if err != nil {
		t.Fatalf("list-keys limit 1: %v", err)
	}
	if page.Keys == nil || len(*page.Keys) != 1 {
		t.Fatalf("keys = %v, want one id", page.Keys)
	}
	if page.KeyDetails == nil || len(*page.KeyDetails) != 1 {
		t.Fatalf("key_details = %v, want one entry", page.KeyDetails)
	}
	if page.Truncated == nil || page.Truncated.Value() != "true" {
		t.Errorf("truncated = %v, want true with at least two keys", page.Truncated)
	}
	if got := deref(page.NextMarker); got != "1" {
		t.Errorf("next_marker = %q, want \"1\"", got)
	}
	if page.Total == nil || *page.Total < 2 {
		t.Errorf("total = %v, want at least 2", page.Total)
	}

	all, err := client.ListKeys(&model.ListKeysRequest{Body: &model.ListKeysRequestBody{
		Limit: ptr(strconv.Itoa(1000)),
	}})
	if err != nil {
		t.Fatalf("list-keys limit 1000: %v", err)
	}
	if all.Truncated == nil || all.Truncated.Value() != "false" {
		t.Errorf("truncated = %v, want false", all.Truncated)
	}
	listed := map[string]bool{}
	for _, id := range *all.Keys {
		listed[id] = true
	}
	for _, id := range []string{first, second} {
		if !listed[id] {
			t.Errorf("key %s is missing from list-keys", id)
		}
	}
	if all.Total == nil || int(*all.Total) != len(*all.Keys) {
		t.Errorf("total = %v, want %d", all.Total, len(*all.Keys))
	}
}
