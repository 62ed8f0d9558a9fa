package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// seedRequest is the decrypt-datakey request shape of Huawei's documentation page:
// key_id, datakey_cipher_length, cipher_text, with encryption_context and sequence.
func TestDecryptDataKeySeedShape(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "seed")

	ctx := map[string]string{"Key1": "Value1", "Key2": "Value2"}
	created := e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id": keyID, "datakey_length": "512", "encryption_context": ctx,
	})
	plain := created.str("plain_text")
	if len(plain) != 128 {
		t.Fatalf("plain_text has %d hex digits, want 128", len(plain))
	}

	r := e.admin.mustPost(t, "decrypt-datakey", map[string]any{
		"key_id":                keyID,
		"datakey_cipher_length": "64",
		"cipher_text":           created.str("cipher_text"),
		"encryption_context":    ctx,
		"sequence":              "919c82d4-8046-4722-9094-35c3c6524cff",
	})
	if r.str("data_key") != plain {
		t.Errorf("data_key = %s, want %s", r.str("data_key"), plain)
	}
	if r.str("datakey_length") != "64" {
		t.Errorf("datakey_length = %q, want \"64\"", r.str("datakey_length"))
	}
	dek, _ := hex.DecodeString(plain)
	sum := sha256.Sum256(dek)
	if r.str("datakey_dgst") != strings.ToUpper(hex.EncodeToString(sum[:])) {
		t.Errorf("datakey_dgst = %s", r.str("datakey_dgst"))
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id header")
	}
}

func TestDataKeyAllZeroVector(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "zero")

	dek := make([]byte, 64)
	sum := sha256.Sum256(dek)
	enc := e.admin.mustPost(t, "encrypt-datakey", map[string]any{
		"key_id":               keyID,
		"plain_text":           hex.EncodeToString(dek) + hex.EncodeToString(sum[:]),
		"datakey_plain_length": "64",
	})
	if enc.str("datakey_length") != "64" {
		t.Errorf("datakey_length = %q", enc.str("datakey_length"))
	}

	dec := e.admin.mustPost(t, "decrypt-datakey", map[string]any{
		"key_id": keyID, "cipher_text": enc.str("cipher_text"), "datakey_cipher_length": "64",
	})
	if dec.str("data_key") != strings.Repeat("0", 128) {
		t.Errorf("data_key = %s, want 128 zeros", dec.str("data_key"))
	}
	const wantDigest = "F5A5FD42D16A20302798EF6ED309979B43003D2320D9F0E8EA9831A92759FB4B"
	if dec.str("datakey_dgst") != wantDigest {
		t.Errorf("datakey_dgst = %s, want %s", dec.str("datakey_dgst"), wantDigest)
	}
}

func TestEncryptDataKeyRejects(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "enc-rejects")
	dek := make([]byte, 32)
	sum := sha256.Sum256(dek)
	good := hex.EncodeToString(dek) + hex.EncodeToString(sum[:])
	wrongDigest := hex.EncodeToString(dek) + strings.Repeat("00", 32)

	tests := []struct {
		name     string
		body     map[string]any
		wantCode string
	}{
		{"wrong digest", map[string]any{"key_id": keyID, "plain_text": wrongDigest,
			"datakey_plain_length": "32"}, "KMS.2103"},
		{"length mismatch", map[string]any{"key_id": keyID, "plain_text": good,
			"datakey_plain_length": "16"}, "KMS.2101"},
		{"length zero", map[string]any{"key_id": keyID, "plain_text": good,
			"datakey_plain_length": "0"}, "KMS.2102"},
		{"length 1025", map[string]any{"key_id": keyID, "plain_text": good,
			"datakey_plain_length": "1025"}, "KMS.2102"},
		{"length not a number", map[string]any{"key_id": keyID, "plain_text": good,
			"datakey_plain_length": "x"}, "KMS.2102"},
		{"length missing", map[string]any{"key_id": keyID, "plain_text": good}, "KMS.0204"},
		{"odd hex", map[string]any{"key_id": keyID, "plain_text": good[1:],
			"datakey_plain_length": "32"}, "KMS.2101"},
		{"plain_text missing", map[string]any{"key_id": keyID,
			"datakey_plain_length": "32"}, "KMS.0204"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.admin.post(t, "encrypt-datakey", tt.body)
			if r.Status != http.StatusBadRequest || r.code() != tt.wantCode {
				t.Fatalf("status %d code %s, want 400 %s: %s", r.Status, r.code(), tt.wantCode, r.Raw)
			}
		})
	}
}

// TestContextBinding runs the binding matrix on both operations that seal a data key.
func TestContextBinding(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "binding")

	seal := map[string]func(t *testing.T, ctx any) (cipher, plain string){
		"create-datakey": func(t *testing.T, ctx any) (string, string) {
			body := map[string]any{"key_id": keyID, "datakey_length": "256"}
			if ctx != nil {
				body["encryption_context"] = ctx
			}
			r := e.admin.mustPost(t, "create-datakey", body)
			return r.str("cipher_text"), r.str("plain_text")
		},
		"encrypt-datakey": func(t *testing.T, ctx any) (string, string) {
			dek := []byte("0123456789abcdef0123456789abcdef")
			sum := sha256.Sum256(dek)
			body := map[string]any{"key_id": keyID, "datakey_plain_length": "32",
				"plain_text": hex.EncodeToString(dek) + hex.EncodeToString(sum[:])}
			if ctx != nil {
				body["encryption_context"] = ctx
			}
			r := e.admin.mustPost(t, "encrypt-datakey", body)
			return r.str("cipher_text"), strings.ToUpper(hex.EncodeToString(dek))
		},
	}

	decrypt := func(t *testing.T, cipher string, ctx any) response {
		body := map[string]any{"key_id": keyID, "cipher_text": cipher, "datakey_cipher_length": "32"}
		if ctx != nil {
			body["encryption_context"] = ctx
		}
		return e.admin.post(t, "decrypt-datakey", body)
	}

	a1 := map[string]string{"a": "1"}
	matrix := []struct {
		name   string
		with   any
		wantOK bool
	}{
		{"same context", a1, true},
		{"context omitted", nil, false},
		{"empty context", map[string]string{}, false},
		{"other value", map[string]string{"a": "2"}, false},
		{"extra pair", map[string]string{"a": "1", "b": "2"}, false},
	}

	for opName, sealWith := range seal {
		t.Run(opName, func(t *testing.T) {
			cipher, plain := sealWith(t, a1)
			for _, m := range matrix {
				t.Run(m.name, func(t *testing.T) {
					r := decrypt(t, cipher, m.with)
					if m.wantOK {
						if r.Status != http.StatusOK || r.str("data_key") != plain {
							t.Fatalf("status %d, data key match %v: %s", r.Status, r.str("data_key") == plain, r.Raw)
						}
						return
					}
					if r.Status != http.StatusBadRequest || !strings.HasPrefix(r.code(), "KMS.") {
						t.Fatalf("status %d code %q, want 400 with a KMS code", r.Status, r.code())
					}
					if strings.Contains(string(r.Raw), plain) {
						t.Fatal("a rejected answer contains the plaintext")
					}
				})
			}

			noContext, plain2 := sealWith(t, nil)
			for _, with := range []any{nil, map[string]string{}} {
				r := decrypt(t, noContext, with)
				if r.Status != http.StatusOK || r.str("data_key") != plain2 {
					t.Fatalf("sealed without context, decrypted with %v: status %d", with, r.Status)
				}
			}
		})
	}
}

func TestContextOrderUnicodeRestart(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "order")

	sealed := e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id":             keyID,
		"encryption_context": map[string]string{"x": "1", "ключ": "значение", "鍵": "値"},
	})

	// The same pairs, in another order, as raw JSON so the order is the one written.
	body := fmt.Sprintf(`{"key_id":%q,"cipher_text":%q,"datakey_cipher_length":"32",`+
		`"encryption_context":{"鍵":"値","x":"1","ключ":"значение"}}`, keyID, sealed.str("cipher_text"))

	r := e.admin.post(t, "decrypt-datakey", body)
	if r.Status != http.StatusOK || r.str("data_key") != sealed.str("plain_text") {
		t.Fatalf("reordered context: status %d: %s", r.Status, r.Raw)
	}

	e.restart()
	r = e.admin.post(t, "decrypt-datakey", body)
	if r.Status != http.StatusOK || r.str("data_key") != sealed.str("plain_text") {
		t.Fatalf("after restart: status %d: %s", r.Status, r.Raw)
	}

	// {"ab":"c"} and {"a":"bc"} must not be interchangeable.
	ab := e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id": keyID, "encryption_context": map[string]string{"ab": "c"},
	})
	r = e.admin.post(t, "decrypt-datakey", map[string]any{
		"key_id": keyID, "cipher_text": ab.str("cipher_text"), "datakey_cipher_length": "32",
		"encryption_context": map[string]string{"a": "bc"},
	})
	if r.Status != http.StatusBadRequest {
		t.Fatalf(`{"ab":"c"} opened with {"a":"bc"}: status %d`, r.Status)
	}
}

func TestAdditionalAuthenticatedData(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "aad")

	sealed := e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id": keyID, "additional_authenticated_data": "tenant-7",
	})
	open := func(aad string) response {
		return e.admin.post(t, "decrypt-datakey", map[string]any{
			"key_id": keyID, "cipher_text": sealed.str("cipher_text"), "datakey_cipher_length": "32",
			"additional_authenticated_data": aad,
		})
	}

	if r := open("tenant-7"); r.Status != http.StatusOK {
		t.Fatalf("same AAD: status %d: %s", r.Status, r.Raw)
	}
	if r := open("tenant-8"); r.Status != http.StatusBadRequest {
		t.Fatalf("other AAD: status %d", r.Status)
	}
	if r := open(""); r.Status != http.StatusBadRequest {
		t.Fatalf("AAD omitted: status %d", r.Status)
	}
	long := e.admin.post(t, "create-datakey", map[string]any{
		"key_id": keyID, "additional_authenticated_data": strings.Repeat("a", 129),
	})
	if long.Status != http.StatusBadRequest {
		t.Fatalf("129-byte AAD: status %d", long.Status)
	}
}

func TestCiphertextTampering(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "tamper")
	otherID := e.admin.createKey(t, "tamper-other")

	dek := make([]byte, 64)
	sum := sha256.Sum256(dek)
	plain := hex.EncodeToString(dek) + hex.EncodeToString(sum[:])
	encrypt := func() string {
		return e.admin.mustPost(t, "encrypt-datakey", map[string]any{
			"key_id": keyID, "plain_text": plain, "datakey_plain_length": "64",
		}).str("cipher_text")
	}

	first, second := encrypt(), encrypt()
	if first == second {
		t.Fatal("two encryptions of the same data key gave the same ciphertext")
	}

	raw, _ := hex.DecodeString(first)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return strings.ToUpper(hex.EncodeToString(b))
	}
	cut := func(n int) string { return first[:len(first)-2*n] }

	const ivAt, sealedAt = 42, 54
	tagAt := len(raw) - 16
	cases := []struct {
		name   string
		keyID  string
		cipher string
		length string
	}{
		{"flipped IV byte", keyID, flip(ivAt), "64"},
		{"flipped sealed byte", keyID, flip(sealedAt + 3), "64"},
		{"flipped tag byte", keyID, flip(tagAt + 5), "64"},
		{"flipped key version", keyID, flip(40), "64"},
		{"flipped format", keyID, flip(0), "64"},
		{"cut by 1 byte", keyID, cut(1), "64"},
		{"cut by 4 bytes", keyID, cut(4), "64"},
		{"cut by 12 bytes", keyID, cut(12), "64"},
		{"cut by 16 bytes", keyID, cut(16), "64"},
		{"odd length", keyID, first[:len(first)-1], "64"},
		{"non-hex character", keyID, "G" + first[1:], "64"},
		{"mismatched datakey_cipher_length", keyID, first, "32"},
		{"datakey_cipher_length not a number", keyID, first, "sixty-four"},
		{"another key's key_id", otherID, first, "64"},
		{"empty cipher_text", keyID, "", "64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.admin.post(t, "decrypt-datakey", map[string]any{
				"key_id": tc.keyID, "cipher_text": tc.cipher, "datakey_cipher_length": tc.length,
			})
			if r.Status != http.StatusBadRequest || !strings.HasPrefix(r.code(), "KMS.") {
				t.Fatalf("status %d code %q, want 400 with a KMS code: %s", r.Status, r.code(), r.Raw)
			}
			if strings.Contains(string(r.Raw), strings.Repeat("0", 64)) {
				t.Fatal("the answer contains the plaintext")
			}
		})
	}
}

func TestCreateDataKeySizes(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "sizes")

	tests := []struct {
		name      string
		body      map[string]any
		wantBytes int // 0 for a rejection
	}{
		{"AES_128", map[string]any{"key_spec": "AES_128"}, 16},
		{"AES_256", map[string]any{"key_spec": "AES_256"}, 32},
		{"neither", map[string]any{}, 32},
		{"datakey_length 512", map[string]any{"datakey_length": "512"}, 64},
		{"both, datakey_length wins", map[string]any{"key_spec": "AES_128", "datakey_length": "512"}, 64},
		{"datakey_length as a JSON number", map[string]any{"datakey_length": 512}, 64},
		{"datakey_length 8", map[string]any{"datakey_length": "8"}, 1},
		{"datakey_length 8192", map[string]any{"datakey_length": "8192"}, 1024},
		{"datakey_length 7", map[string]any{"datakey_length": "7"}, 0},
		{"datakey_length 8200", map[string]any{"datakey_length": "8200"}, 0},
		{"datakey_length 12", map[string]any{"datakey_length": "12"}, 0},
		{"datakey_length 0 is not the default", map[string]any{"datakey_length": "0"}, 0},
		{"datakey_length 0 as a JSON number", map[string]any{"datakey_length": 0}, 0},
		{"datakey_length -256", map[string]any{"datakey_length": -256}, 0},
		{"empty datakey_length takes the default", map[string]any{"datakey_length": ""}, 32},
		{"datakey_length not a number", map[string]any{"datakey_length": "many"}, 0},
		{"unknown key_spec", map[string]any{"key_spec": "AES_512"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.body["key_id"] = keyID
			r := e.admin.post(t, "create-datakey", tt.body)
			if tt.wantBytes == 0 {
				if r.Status != http.StatusBadRequest || !strings.HasPrefix(r.code(), "KMS.") {
					t.Fatalf("status %d code %q, want 400 with a KMS code", r.Status, r.code())
				}
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("status %d: %s", r.Status, r.Raw)
			}
			if got := len(r.str("plain_text")) / 2; got != tt.wantBytes {
				t.Fatalf("data key has %d bytes, want %d", got, tt.wantBytes)
			}
		})
	}
}

func TestCreateDataKeyWithoutPlaintext(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "no-plain")

	r := e.admin.mustPost(t, "create-datakey-without-plaintext", map[string]any{"key_id": keyID})
	if _, has := r.Body["plain_text"]; has {
		t.Fatal("create-datakey-without-plaintext answered a plain_text")
	}
	if r.str("key_id") != keyID || r.str("cipher_text") == "" {
		t.Fatalf("answer %s", r.Raw)
	}

	dec := e.admin.mustPost(t, "decrypt-datakey", map[string]any{
		"key_id": keyID, "cipher_text": r.str("cipher_text"), "datakey_cipher_length": "32",
	})
	if len(dec.str("data_key")) != 64 {
		t.Fatalf("data_key %q", dec.str("data_key"))
	}
}

func TestDataKeysConcurrent(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "concurrent")

	const workers, rounds = 64, 5
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				ctx := map[string]string{"worker": fmt.Sprint(w), "round": fmt.Sprint(i)}
				c := e.admin.post(t, "create-datakey", map[string]any{"key_id": keyID, "encryption_context": ctx})
				if c.Status != http.StatusOK {
					errs <- fmt.Sprintf("create-datakey: %d %s", c.Status, c.Raw)
					continue
				}
				d := e.admin.post(t, "decrypt-datakey", map[string]any{
					"key_id": keyID, "cipher_text": c.str("cipher_text"), "datakey_cipher_length": "32",
					"encryption_context": ctx,
				})
				if d.Status != http.StatusOK || d.str("data_key") != c.str("plain_text") {
					errs <- fmt.Sprintf("decrypt-datakey: %d %s", d.Status, d.Raw)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}

func TestKeyReferenceLength(t *testing.T) {
	e := newTestEnv(t)
	longest := "alias/" + strings.Repeat("a", 255)

	tests := []struct {
		name        string
		keyID       string
		wantMessage string
	}{
		{"longest alias reference", longest, "does not exist"},
		{"one byte longer", longest + "a", "longer than 261 bytes"},
		{"long key id", strings.Repeat("0", 10000), "longer than 261 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.admin.post(t, "create-datakey", map[string]any{"key_id": tt.keyID})
			if r.Status != http.StatusBadRequest || r.code() != "KMS.0205" {
				t.Fatalf("status %d code %q, want 400 KMS.0205", r.Status, r.code())
			}
			if !strings.Contains(string(r.Raw), tt.wantMessage) {
				t.Errorf("message %s does not contain %q", r.Raw, tt.wantMessage)
			}
		})
	}
}
