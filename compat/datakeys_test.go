package compat

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
)

// decryptDataKey decrypts a hex data-key ciphertext through the SDK and checks the
// response's data_key, datakey_length and datakey_dgst against the expected hex key.
func decryptDataKey(t *testing.T, client *kms.KmsClient, keyID, cipherText, aad, wantHex string) {
	t.Helper()
	body := &model.DecryptDatakeyRequestBody{
		KeyId:               keyID,
		CipherText:          cipherText,
		DatakeyCipherLength: "32",
	}
	if aad != "" {
		body.AdditionalAuthenticatedData = &aad
	}
	res, err := client.DecryptDatakey(&model.DecryptDatakeyRequest{Body: body})
	if err != nil {
		t.Fatalf("decrypt-datakey: %v", err)
	}

	if got := deref(res.DataKey); !strings.EqualFold(got, wantHex) {
		t.Errorf("data_key = %q, want %q", got, wantHex)
	}
	if got := deref(res.DatakeyLength); got != "32" {
		t.Errorf("datakey_length = %q, want \"32\"", got)
	}
	key, err := hex.DecodeString(wantHex)
	if err != nil {
		t.Fatalf("the expected key %q is not hex: %v", wantHex, err)
	}
	digest := sha256.Sum256(key)
	if got := deref(res.DatakeyDgst); !strings.EqualFold(got, hex.EncodeToString(digest[:])) {
		t.Errorf("datakey_dgst = %q, want the SHA-256 of the key %x", got, digest)
	}
}

func TestCreateDataKeyRoundTrip(t *testing.T) {
	client := adminClient(t)
	keyID := createKey(t, client, "compat-create-datakey")
	spec := model.GetCreateDatakeyRequestBodyKeySpecEnum().AES_256

	tests := []struct {
		name string
		body model.CreateDatakeyRequestBody
		aad  string
	}{
		{"key_spec AES_256", model.CreateDatakeyRequestBody{KeyId: keyID, KeySpec: &spec}, ""},
		{"datakey_length 256", model.CreateDatakeyRequestBody{KeyId: keyID, DatakeyLength: ptr("256")}, ""},
		{"with aad", model.CreateDatakeyRequestBody{
			KeyId: keyID, KeySpec: &spec, AdditionalAuthenticatedData: ptr("compat-aad"),
		}, "compat-aad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := client.CreateDatakey(&model.CreateDatakeyRequest{Body: &tt.body})
			if err != nil {
				t.Fatalf("create-datakey: %v", err)
			}
			if got := deref(res.KeyId); got != keyID {
				t.Errorf("key_id = %q, want %q", got, keyID)
			}
			plain := deref(res.PlainText)
			if len(plain) != 64 {
				t.Fatalf("plain_text = %q, want 64 hex digits", plain)
			}
			if _, err := hex.DecodeString(deref(res.CipherText)); err != nil {
				t.Fatalf("cipher_text %q is not hex: %v", deref(res.CipherText), err)
			}

			decryptDataKey(t, client, keyID, *res.CipherText, tt.aad, plain)
		})
	}
}

func TestCreateDataKeyWithoutPlaintext(t *testing.T) {
	client := adminClient(t)
	keyID := createKey(t, client, "compat-datakey-no-plaintext")

	res, err := client.CreateDatakeyWithoutPlaintext(&model.CreateDatakeyWithoutPlaintextRequest{
		Body: &model.CreateDatakeyRequestBody{KeyId: keyID, DatakeyLength: ptr("256")},
	})
	if err != nil {
		t.Fatalf("create-datakey-without-plaintext: %v", err)
	}
	if got := deref(res.KeyId); got != keyID {
		t.Errorf("key_id = %q, want %q", got, keyID)
	}
	if res.CipherText == nil {
		t.Fatal("cipher_text is missing")
	}

	dec, err := client.DecryptDatakey(&model.DecryptDatakeyRequest{
		Body: &model.DecryptDatakeyRequestBody{
			KeyId: keyID, CipherText: *res.CipherText, DatakeyCipherLength: "32",
		},
	})
	if err != nil {
		t.Fatalf("decrypt-datakey: %v", err)
	}
	if got := deref(dec.DataKey); len(got) != 64 {
		t.Errorf("data_key = %q, want 64 hex digits", got)
	}
}

func TestEncryptDataKeyRoundTrip(t *testing.T) {
	client := adminClient(t)
	keyID := createKey(t, client, "compat-encrypt-datakey")

	dek := strings.Repeat("0123456789abcdef", 4)
	dekBytes, _ := hex.DecodeString(dek)
	digest := sha256.Sum256(dekBytes)

	res, err := client.EncryptDatakey(&model.EncryptDatakeyRequest{
		Body: &model.EncryptDatakeyRequestBody{
			KeyId:                       keyID,
			PlainText:                   dek + hex.EncodeToString(digest[:]),
			DatakeyPlainLength:          "32",
			AdditionalAuthenticatedData: ptr("compat-aad"),
		},
	})
	if err != nil {
		t.Fatalf("encrypt-datakey: %v", err)
	}
	if got := deref(res.KeyId); got != keyID {
		t.Errorf("key_id = %q, want %q", got, keyID)
	}
	if got := deref(res.DatakeyLength); got != "32" {
		t.Errorf("datakey_length = %q, want \"32\"", got)
	}
	if res.CipherText == nil {
		t.Fatal("cipher_text is missing")
	}

	decryptDataKey(t, client, keyID, *res.CipherText, "compat-aad", dek)
}

func TestDataKeyErrorCodes(t *testing.T) {
	client := adminClient(t)
	keyID := createKey(t, client, "compat-datakey-errors")

	dek := strings.Repeat("ab", 32)
	created, err := client.CreateDatakey(&model.CreateDatakeyRequest{
		Body: &model.CreateDatakeyRequestBody{
			KeyId: keyID, DatakeyLength: ptr("256"), AdditionalAuthenticatedData: ptr("right"),
		},
	})
	if err != nil {
		t.Fatalf("create-datakey: %v", err)
	}

	tests := []struct {
		name string
		call func() error
		code string
	}{
		{"encrypt-datakey with a wrong digest", func() error {
			_, err := client.EncryptDatakey(&model.EncryptDatakeyRequest{
				Body: &model.EncryptDatakeyRequestBody{
					KeyId: keyID, PlainText: dek + strings.Repeat("00", 32), DatakeyPlainLength: "32",
				},
			})
			return err
		}, "KMS.2103"},
		{"decrypt-datakey with a wrong aad", func() error {
			_, err := client.DecryptDatakey(&model.DecryptDatakeyRequest{
				Body: &model.DecryptDatakeyRequestBody{
					KeyId: keyID, CipherText: *created.CipherText, DatakeyCipherLength: "32",
					AdditionalAuthenticatedData: ptr("wrong"),
				},
			})
			return err
		}, "KMS.2203"},
		{"create-datakey with an odd length", func() error {
			_, err := client.CreateDatakey(&model.CreateDatakeyRequest{
				Body: &model.CreateDatakeyRequestBody{KeyId: keyID, DatakeyLength: ptr("100")},
			})
			return err
		}, "KMS.1901"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			se := serviceError(t, tt.call())
			if se.StatusCode != 400 {
				t.Errorf("status = %d, want 400", se.StatusCode)
			}
			if se.ErrorCode != tt.code {
				t.Errorf("error_code = %q, want %s (message %q)", se.ErrorCode, tt.code, se.ErrorMessage)
			}
		})
	}
}
