package api

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestEncryptDataPlaintextLimits(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "encrypt-data-limits")

	tests := []struct {
		name     string
		plain    any
		wantCode string // "" for 200
	}{
		{"one byte", "x", ""},
		{"4096 ASCII bytes", strings.Repeat("a", 4096), ""},
		{"1365 euro signs (4095 bytes)", strings.Repeat("€", 1365), ""},
		{"4097 ASCII bytes", strings.Repeat("a", 4097), "KMS.2101"},
		{"1366 euro signs (4098 bytes)", strings.Repeat("€", 1366), "KMS.2101"},
		{"empty", "", "KMS.0204"},
		{"missing", nil, "KMS.0204"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"key_id": keyID}
			if tt.plain != nil {
				body["plain_text"] = tt.plain
			}
			r := e.admin.post(t, "encrypt-data", body)
			if tt.wantCode != "" {
				wantError(t, "encrypt-data", r, tt.wantCode)
				return
			}
			if r.Status != 200 || r.str("key_id") != keyID {
				t.Fatalf("encrypt-data: status %d: %s", r.Status, r.Raw)
			}

			dec := e.admin.mustPost(t, "decrypt-data", map[string]any{"cipher_text": r.str("cipher_text")})
			if dec.str("plain_text") != tt.plain {
				t.Errorf("decrypt-data plain_text differs from the encrypted %d bytes", len(tt.plain.(string)))
			}
			want := base64.StdEncoding.EncodeToString([]byte(tt.plain.(string)))
			if dec.str("plain_text_base64") != want {
				t.Errorf("plain_text_base64 = %q, want %q", dec.str("plain_text_base64"), want)
			}
			if dec.str("key_id") != keyID {
				t.Errorf("decrypt-data key_id = %q, want %s", dec.str("key_id"), keyID)
			}
		})
	}
}

func TestEncryptDataCiphertextShape(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "encrypt-data-shape")

	r := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "x"})
	ct := r.str("cipher_text")
	// 42 header bytes, a 12-byte IV, 1 byte of data and a 16-byte tag.
	if len(ct) != 96 {
		t.Errorf("cipher_text of 1 byte has %d base64 characters, want 96", len(ct))
	}
	raw, err := base64.StdEncoding.DecodeString(ct)
	if err != nil {
		t.Fatalf("cipher_text is not standard base64: %v", err)
	}
	if string(raw[1:37]) != keyID {
		t.Errorf("cipher_text names key %q, want %s", raw[1:37], keyID)
	}

	long := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID,
		"plain_text": strings.Repeat("a", 4096)})
	if n := len(long.str("cipher_text")); n > maxDataCipherTextChars {
		t.Errorf("cipher_text of 4096 bytes has %d characters, more than the API's %d", n,
			maxDataCipherTextChars)
	}
}

func TestDecryptDataRejects(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "decrypt-data-rejects")
	otherKey := e.admin.createKey(t, "decrypt-data-other")

	sealed := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": keyID, "plain_text": "bound",
		"additional_authenticated_data": "context-1"})
	ct := sealed.str("cipher_text")
	dk := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	dkRaw, err := hex.DecodeString(dk.str("cipher_text"))
	if err != nil {
		t.Fatalf("create-datakey cipher_text is not hex: %v", err)
	}

	tests := []struct {
		name     string
		body     map[string]any
		wantCode string
	}{
		{"wrong AAD", map[string]any{"cipher_text": ct, "additional_authenticated_data": "context-2"}, "KMS.2203"},
		{"missing AAD", map[string]any{"cipher_text": ct}, "KMS.2203"},
		{"other key_id", map[string]any{"cipher_text": ct, "key_id": otherKey,
			"additional_authenticated_data": "context-1"}, "KMS.2201"},
		{"not base64", map[string]any{"cipher_text": "%%%"}, "KMS.2201"},
		{"data key ciphertext", map[string]any{"cipher_text": base64.StdEncoding.EncodeToString(dkRaw)}, "KMS.2201"},
		{"too long", map[string]any{"cipher_text": strings.Repeat("A", 5652)}, "KMS.2201"},
		{"missing", map[string]any{}, "KMS.0204"},
		{"asymmetric algorithm", map[string]any{"cipher_text": ct, "encryption_algorithm": "RSAES_OAEP_SHA_256"}, "KMS.0308"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, "decrypt-data", e.admin.post(t, "decrypt-data", tt.body), tt.wantCode)
		})
	}

	r := e.admin.mustPost(t, "decrypt-data", map[string]any{"cipher_text": ct, "key_id": keyID,
		"additional_authenticated_data": "context-1", "encryption_algorithm": "SYMMETRIC_DEFAULT"})
	if r.str("plain_text") != "bound" {
		t.Errorf("decrypt-data with the right AAD = %q, want \"bound\"", r.str("plain_text"))
	}
}

func TestGenRandomLengths(t *testing.T) {
	e := newTestEnv(t)

	tests := []struct {
		name      string
		length    any
		wantChars int    // hex digits on success
		wantCode  string // "" for 200
	}{
		{"8 bits", "8", 2, ""},
		{"512 bits as a number", 512, 128, ""},
		{"8192 bits", "8192", 2048, ""},
		{"0 bits", "0", 0, "KMS.1801"},
		{"8200 bits", "8200", 0, "KMS.1801"},
		{"not a multiple of 8", "12", 0, "KMS.1801"},
		{"not a number", "many", 0, "KMS.1801"},
		{"missing", nil, 0, "KMS.0204"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{}
			if tt.length != nil {
				body["random_data_length"] = tt.length
			}
			r := e.admin.post(t, "gen-random", body)
			if tt.wantCode != "" {
				wantError(t, "gen-random", r, tt.wantCode)
				return
			}
			if r.Status != 200 || len(r.str("random_data")) != tt.wantChars {
				t.Errorf("gen-random: status %d, %d hex digits, want 200 and %d: %s", r.Status,
					len(r.str("random_data")), tt.wantChars, r.Raw)
			}
		})
	}

	a := e.admin.mustPost(t, "gen-random", map[string]any{"random_data_length": "256"}).str("random_data")
	b := e.admin.mustPost(t, "gen-random", map[string]any{"random_data_length": "256"}).str("random_data")
	if a == b {
		t.Error("two gen-random answers of 256 bits are equal")
	}
}

func TestReEncrypt(t *testing.T) {
	e := newTestEnv(t)
	source := e.admin.createKey(t, "re-encrypt-source")
	dest := e.admin.createKey(t, "re-encrypt-dest")

	dk := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": source,
		"additional_authenticated_data": "src-aad"})
	r := e.admin.mustPost(t, "re-encrypt", map[string]any{
		"cipher_text":                               dk.str("cipher_text"),
		"destination_key_id":                        dest,
		"source_additional_authenticated_data":      "src-aad",
		"destination_additional_authenticated_data": "dst-aad",
	})
	if r.str("key_id") != dest || r.str("source_key_id") != source {
		t.Errorf("re-encrypt answered key_id %q source_key_id %q, want %s and %s",
			r.str("key_id"), r.str("source_key_id"), dest, source)
	}
	if r.str("destination_encryption_algorithm") != "SYMMETRIC_DEFAULT" {
		t.Errorf("destination_encryption_algorithm = %q", r.str("destination_encryption_algorithm"))
	}

	dec := e.admin.mustPost(t, "decrypt-datakey", map[string]any{"key_id": dest,
		"cipher_text": r.str("cipher_text"), "datakey_cipher_length": "32",
		"additional_authenticated_data": "dst-aad"})
	if dec.str("data_key") != dk.str("plain_text") {
		t.Error("the re-encrypted data key does not decrypt to the original under the destination key")
	}
	wantError(t, "decrypt-datakey of the resealed key with the source AAD",
		e.admin.post(t, "decrypt-datakey", map[string]any{"key_id": dest,
			"cipher_text": r.str("cipher_text"), "datakey_cipher_length": "32",
			"additional_authenticated_data": "src-aad"}), "KMS.2203")

	wantError(t, "re-encrypt with the wrong source AAD", e.admin.post(t, "re-encrypt", map[string]any{
		"cipher_text": dk.str("cipher_text"), "destination_key_id": dest,
		"source_additional_authenticated_data": "other",
	}), "KMS.2203")
	wantError(t, "re-encrypt with a wrong source_key_id", e.admin.post(t, "re-encrypt", map[string]any{
		"cipher_text": dk.str("cipher_text"), "destination_key_id": dest, "source_key_id": dest,
		"source_additional_authenticated_data": "src-aad",
	}), "KMS.2201")
	wantError(t, "re-encrypt without a destination", e.admin.post(t, "re-encrypt", map[string]any{
		"cipher_text": dk.str("cipher_text"), "source_additional_authenticated_data": "src-aad",
	}), "KMS.0204")

	withContext := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": source,
		"encryption_context": map[string]string{"app": "src"}})
	r = e.admin.mustPost(t, "re-encrypt", map[string]any{
		"cipher_text":                    withContext.str("cipher_text"),
		"destination_key_id":             dest,
		"source_encryption_context":      map[string]string{"app": "src"},
		"destination_encryption_context": map[string]string{"app": "dst"},
	})
	dec = e.admin.mustPost(t, "decrypt-datakey", map[string]any{"key_id": dest,
		"cipher_text": r.str("cipher_text"), "datakey_cipher_length": "32",
		"encryption_context": map[string]string{"app": "dst"}})
	if dec.str("data_key") != withContext.str("plain_text") {
		t.Error("the data key resealed with encryption contexts does not decrypt to the original")
	}
	wantError(t, "re-encrypt with the wrong source encryption context",
		e.admin.post(t, "re-encrypt", map[string]any{
			"cipher_text": withContext.str("cipher_text"), "destination_key_id": dest,
			"source_encryption_context": map[string]string{"app": "other"},
		}), "KMS.2203")
	wantError(t, "re-encrypt with a source encryption context that is not an object",
		e.admin.post(t, "re-encrypt", map[string]any{
			"cipher_text": withContext.str("cipher_text"), "destination_key_id": dest,
			"source_encryption_context": "app=src",
		}), "KMS.0208")

	data := e.admin.mustPost(t, "encrypt-data", map[string]any{"key_id": source, "plain_text": "hello"})
	r = e.admin.mustPost(t, "re-encrypt", map[string]any{
		"cipher_text": data.str("cipher_text"), "destination_key_id": dest,
	})
	plain := e.admin.mustPost(t, "decrypt-data", map[string]any{"cipher_text": r.str("cipher_text")})
	if plain.str("plain_text") != "hello" || plain.str("key_id") != dest {
		t.Errorf("re-encrypted data decrypts to %q under key %q, want \"hello\" under %s",
			plain.str("plain_text"), plain.str("key_id"), dest)
	}

	e.admin.mustPost(t, "disable-key", map[string]any{"key_id": dest})
	wantError(t, "re-encrypt to a disabled key", e.admin.post(t, "re-encrypt", map[string]any{
		"cipher_text": data.str("cipher_text"), "destination_key_id": dest,
	}), "KMS.0209")
}

// TestReEncryptNamesDisabledKey checks that the error of a re-encrypt that fails on a
// disabled key names the source or the destination key.
func TestReEncryptNamesDisabledKey(t *testing.T) {
	e := newTestEnv(t)
	source := e.admin.createKey(t, "named-source")
	dest := e.admin.createKey(t, "named-dest")
	dk := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": source})

	tests := []struct {
		disabled string
		want     string
	}{
		{dest, "the destination key: the key is disabled"},
		{source, "the source key: the key is disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			e.admin.mustPost(t, "disable-key", map[string]any{"key_id": tt.disabled})
			defer e.admin.mustPost(t, "enable-key", map[string]any{"key_id": tt.disabled})

			r := e.admin.post(t, "re-encrypt", map[string]any{
				"cipher_text": dk.str("cipher_text"), "destination_key_id": dest,
			})
			wantError(t, "re-encrypt with a disabled key", r, "KMS.0209")
			if got := r.errorMessage(); got != tt.want {
				t.Errorf("error_msg = %q, want %q", got, tt.want)
			}
		})
	}
}
