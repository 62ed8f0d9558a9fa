package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hsmkms/kms/service"
)

// TestBindRejectsRepeatedMembers sends bodies that repeat a top-level member, to
// operations decoded by jsonscan (create-datakey, encrypt-datakey) and by encoding/json
// (describe-key, create-key, list-keys), and expects 400 KMS.0202 from each.
func TestBindRejectsRepeatedMembers(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "repeated")

	tests := []struct {
		name string
		op   string
		body string
	}{
		{"create-datakey exact repeat", "create-datakey",
			`{"key_id":"` + keyID + `","datakey_length":"256","key_id":"other"}`},
		{"create-datakey unknown member repeated", "create-datakey",
			`{"key_id":"` + keyID + `","x":1,"x":2}`},
		{"encrypt-datakey context repeated", "encrypt-datakey",
			`{"key_id":"` + keyID + `","encryption_context":{"a":"1"},` +
				`"encryption_context":{"a":"2"}}`},
		{"describe-key exact repeat", "describe-key",
			`{"key_id":"` + keyID + `","key_id":"alias/other"}`},
		{"describe-key case variant", "describe-key",
			`{"key_id":"` + keyID + `","KEY_ID":"alias/other"}`},
		{"describe-key escaped variant", "describe-key",
			`{"key_id":"` + keyID + `","key\u005fid":"alias/other"}`},
		{"create-key alias repeated", "create-key",
			`{"key_alias":"first","key_alias":"second"}`},
		{"list-keys repeat after many members", "list-keys",
			`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"limit":"1",` +
				`"j":10,"LIMIT":"2"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.admin.post(t, tc.op, tc.body)
			checkError(t, tc.op, r, http.StatusBadRequest, service.CodeInvalidJSON)
		})
	}

	t.Run("nested repeat left to the field", func(t *testing.T) {
		// Only top-level names are checked here; encryption_context checks its own keys.
		r := e.admin.post(t, "create-datakey",
			`{"key_id":"`+keyID+`","encryption_context":{"a":"1","a":"2"}}`)
		checkError(t, "create-datakey", r, http.StatusBadRequest, service.CodeInvalidContext)
	})
}

// TestBindRejectsInvalidText sends bodies that are not valid UTF-8 or escape an unpaired
// surrogate, which the decoders would turn into U+FFFD, and expects 400 KMS.0202.
func TestBindRejectsInvalidText(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "text")
	dek := strings.Repeat("00", 32)

	encryptWith := func(context string) string {
		return `{"key_id":"` + keyID + `","datakey_plain_length":"32",` +
			`"plain_text":"` + dek + `66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",` +
			`"encryption_context":` + context + `}`
	}
	tests := []struct {
		name string
		op   string
		body string
	}{
		{"invalid byte in context value", "encrypt-datakey", encryptWith(`{"a":"` + "\xff" + `"}`)},
		{"invalid byte in context key", "encrypt-datakey", encryptWith(`{"` + "\xfe" + `":"a"}`)},
		{"lone low surrogate in context", "encrypt-datakey", encryptWith(`{"a":"\udcff"}`)},
		{"lone high surrogate in context", "encrypt-datakey", encryptWith(`{"a":"\ud800x"}`)},
		{"invalid byte in alias", "create-key", `{"key_alias":"` + "ab\xc3" + `"}`},
		{"invalid byte in ignored member", "describe-key",
			`{"key_id":"` + keyID + `","note":"` + "\x80" + `"}`},
		{"truncated sequence outside strings", "list-keys", "{\"limit\":\"1\"}\xe2\x82"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.admin.post(t, tc.op, tc.body)
			checkError(t, tc.op, r, http.StatusBadRequest, service.CodeInvalidJSON)
		})
	}

	t.Run("valid pair and replacement character accepted", func(t *testing.T) {
		r := e.admin.post(t, "encrypt-datakey", encryptWith(`{"a":"\ud83d\ude00","b":"\ufffd"}`))
		checkOK(t, "encrypt-datakey", r)
	})
}

// TestFlexIntegerCanonical checks that numeric fields accept only canonical decimal
// strings and JSON integers.
func TestFlexIntegerCanonical(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "numbers")

	tests := []struct {
		name   string
		length string // the raw JSON of datakey_length
		ok     bool
	}{
		{"string digits", `"256"`, true},
		{"number digits", `256`, true},
		{"string leading space", `" 256"`, false},
		{"string trailing space", `"256 "`, false},
		{"string plus sign", `"+256"`, false},
		{"string minus sign", `"-256"`, false},
		{"string leading zero", `"0256"`, false},
		{"string inner space", `"25 6"`, false},
		{"string fraction", `"256.0"`, false},
		{"string exponent", `"2.56e2"`, false},
		{"string non-ASCII digit", `"２56"`, false},
		{"number fraction", `256.0`, false},
		{"number exponent", `2.56e2`, false},
		{"number integer exponent", `256e0`, false},
		{"string out of range", `"99999999999999999999999"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.admin.post(t, "create-datakey",
				`{"key_id":"`+keyID+`","datakey_length":`+tc.length+`}`)
			if tc.ok {
				checkOK(t, "create-datakey", r)
				return
			}
			checkError(t, "create-datakey", r, http.StatusBadRequest,
				service.CodeInvalidDataKeyBits)
		})
	}

	// list-keys decodes limit with encoding/json, the other path to flexString.
	for _, limit := range []string{`" 5"`, `"+5"`, `"05"`, `5.0`, `5e0`, `"0"`, `0`, `"-1"`} {
		t.Run("list-keys limit "+limit, func(t *testing.T) {
			r := e.admin.post(t, "list-keys", `{"limit":`+limit+`}`)
			checkError(t, "list-keys", r, http.StatusBadRequest, service.CodeInvalidLimit)
		})
	}
	checkOK(t, "list-keys limit 5", e.admin.post(t, "list-keys", `{"limit":"5"}`))
}

// TestBindNamesTheCause checks that body errors name their real cause. A body that is not
// valid JSON after a member of the wrong type gets the syntax error. A body nested too
// deep gets its own message. Wrong types are named as JSON types, not Go types.
func TestBindNamesTheCause(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "causes")
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)

	tests := []struct {
		name     string
		op       string
		body     string
		wantCode string
		wantMsg  string
	}{
		{"unquoted hex after a key id", "decrypt-datakey",
			`{"key_id":"` + keyID + `","cipher_text":0133AB,"datakey_cipher_length":"32"}`,
			service.CodeInvalidJSON, "not a valid JSON object"},
		{"repeat before a syntax error", "create-datakey",
			`{"key_id":"` + keyID + `","key_id":"x",}`,
			service.CodeInvalidJSON, "not a valid JSON object"},
		{"valid JSON nested too deep", "create-datakey",
			`{"key_id":"` + keyID + `","x":` + deep + `}`,
			service.CodeInvalidJSON, "deeper than 64 levels"},
		{"too deep for encoding/json operations", "describe-key",
			`{"key_id":"` + keyID + `","x":` + deep + `}`,
			service.CodeInvalidJSON, "deeper than 64 levels"},
		{"wrong type still reported", "decrypt-datakey",
			`{"key_id":"` + keyID + `","cipher_text":12,"datakey_cipher_length":"32"}`,
			service.CodeInvalidParameter, "cipher_text has the wrong JSON type: expected string"},
		{"object expected", keyID + "/tags", `{"tag":"x"}`,
			service.CodeInvalidParameter, "tag has the wrong JSON type: expected object"},
		{"array of objects expected", "resource_instances/action",
			`{"action":"filter","tags":"x"}`,
			service.CodeInvalidParameter, "tags has the wrong JSON type: expected array of objects"},
		{"array element not an object", keyID + "/tags/action",
			`{"action":"create","tags":["a"]}`,
			service.CodeInvalidParameter, "tags has the wrong JSON type: expected array of objects"},
		{"nested array element not a string", "resource_instances/action",
			`{"action":"filter","tags":[{"key":"a","values":[1]}]}`,
			service.CodeInvalidParameter,
			"tags.values has the wrong JSON type: expected array of strings"},
		{"array element not a string", "create-grant",
			`{"key_id":"` + keyID + `","grantee_principal":"u","operations":[1]}`,
			service.CodeInvalidParameter,
			"operations has the wrong JSON type: expected array of strings"},
		{"boolean for a number", "list-keys", `{"limit":true}`, service.CodeInvalidParameter,
			"limit has the wrong JSON type: expected string or number"},
		{"array for a number", "list-keys", `{"key_state":[1]}`, service.CodeInvalidParameter,
			"key_state has the wrong JSON type: expected string or number"},
		{"null array element", "create-grant",
			`{"key_id":"` + keyID + `","grantee_principal":"u","operations":[ null ]}`,
			service.CodeInvalidParameter,
			"operations has the wrong JSON type: expected array of strings"},
		{"null object element", keyID + "/tags/action",
			`{"action":"create","tags":[{"key":"a","value":"b"},null]}`,
			service.CodeInvalidParameter, "tags has the wrong JSON type: expected array of objects"},
		{"nested null element", "resource_instances/action",
			`{"action":"filter","tags":[{"key":"a","values":["x",null]}]}`,
			service.CodeInvalidParameter,
			"tags.values has the wrong JSON type: expected array of strings"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.admin.post(t, tc.op, tc.body)
			checkError(t, tc.op, r, http.StatusBadRequest, tc.wantCode)
			if !strings.Contains(string(r.Raw), tc.wantMsg) {
				t.Errorf("%s: message %s, want one containing %q", tc.op, r.Raw, tc.wantMsg)
			}
		})
	}
}

func TestJSONTypeName(t *testing.T) {
	type object struct{ A int }
	tests := []struct {
		value any
		want  string
	}{
		{"", "string"},
		{true, "boolean"},
		{int64(0), "number"},
		{1.5, "number"},
		{[]byte(nil), "string"},
		{[]string(nil), "array of strings"},
		{object{}, "object"},
		{map[string]string(nil), "object"},
		{[]object(nil), "array of objects"},
		{[][]int(nil), "array of arrays of numbers"},
		{&object{}, "object"},
	}
	for _, tt := range tests {
		if got := jsonTypeName(reflect.TypeOf(tt.value)); got != tt.want {
			t.Errorf("jsonTypeName(%T) = %q, want %q", tt.value, got, tt.want)
		}
	}
}

// TestBindRejectsUnknownMembers sends members that the operations which bind a
// ciphertext do not take, such as a misspelled encryption_context, and expects 400
// KMS.0202 naming the member instead of a data key bound to nothing.
func TestBindRejectsUnknownMembers(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "unknown-members")
	sealed := e.admin.mustPost(t, "create-datakey", map[string]any{"key_id": keyID})
	cipher, _ := sealed.Body["cipher_text"].(string)
	encrypted := e.admin.mustPost(t, "encrypt-data", map[string]any{
		"key_id": keyID, "plain_text": "secret"})
	dataCipher, _ := encrypted.Body["cipher_text"].(string)

	tests := []struct {
		name   string
		op     string
		body   string
		member string
	}{
		{"create-datakey misspelled context", "create-datakey",
			`{"key_id":"` + keyID + `","encryption_contxt":{"tenant":"alice"}}`,
			"encryption_contxt"},
		{"create-datakey context in other case", "create-datakey",
			`{"key_id":"` + keyID + `","Encryption_Context":{"tenant":"alice"}}`,
			"Encryption_Context"},
		{"create-datakey-without-plaintext misspelled AAD",
			"create-datakey-without-plaintext",
			`{"key_id":"` + keyID + `","additional_authenticated_dat":"x"}`,
			"additional_authenticated_dat"},
		{"encrypt-datakey unknown member", "encrypt-datakey",
			`{"key_id":"` + keyID + `","plain_text":"00","datakey_plain_length":"1","x":1}`, "x"},
		{"decrypt-datakey misspelled context", "decrypt-datakey",
			`{"key_id":"` + keyID + `","cipher_text":"` + cipher + `",` +
				`"datakey_cipher_length":"32","encryption_contxt":{"a":"b"}}`,
			"encryption_contxt"},
		{"encrypt-data misspelled AAD", "encrypt-data",
			`{"key_id":"` + keyID + `","plain_text":"p","aad":"x"}`, "aad"},
		{"encrypt-data key id in upper case", "encrypt-data",
			`{"KEY_ID":"` + keyID + `","plain_text":"p"}`, "KEY_ID"},
		{"decrypt-data misspelled context", "decrypt-data",
			`{"cipher_text":"` + dataCipher + `","encryption_contxt":{"a":"b"}}`,
			"encryption_contxt"},
		{"re-encrypt misspelled destination context", "re-encrypt",
			`{"cipher_text":"` + dataCipher + `","destination_key_id":"` + keyID + `",` +
				`"destination_encryption_contxt":{"a":"b"}}`,
			"destination_encryption_contxt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.admin.post(t, tt.op, tt.body)
			checkError(t, tt.op, r, http.StatusBadRequest, service.CodeInvalidJSON)
			if msg := r.errorMessage(); !strings.Contains(msg, `"`+tt.member+`"`) {
				t.Errorf("message %q does not name the member %q", msg, tt.member)
			}
		})
	}
}

// TestBindAcceptsHuaweiMembers sends every member that the Huawei Cloud Go SDK
// (huaweicloud-sdk-go-v3, services/kms/v2/model) has for the operations that check their
// members, including those that kmsd ignores, and expects 200.
func TestBindAcceptsHuaweiMembers(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "huawei-members")
	const sequence = "919c82d4-8046-4722-9094-35c3c6524cff"

	sealed := e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id": keyID, "key_spec": "AES_256", "additional_authenticated_data": "aad",
		"sequence": sequence, "pin": "", "pin_type": "CipherText"})
	cipher, _ := sealed.Body["cipher_text"].(string)
	plain, _ := sealed.Body["plain_text"].(string)
	dek, err := hex.DecodeString(plain)
	if err != nil || len(dek) != 32 {
		t.Fatalf("create-datakey plain_text %q is not 32 bytes of hex: %v", plain, err)
	}
	digest := sha256.Sum256(dek)

	e.admin.mustPost(t, "create-datakey", map[string]any{
		"key_id": keyID, "datakey_length": "256", "encryption_context": map[string]string{"a": "b"}})
	e.admin.mustPost(t, "create-datakey-without-plaintext", map[string]any{
		"key_id": keyID, "key_spec": "AES_256", "sequence": sequence, "pin_type": "CipherText"})
	e.admin.mustPost(t, "encrypt-datakey", map[string]any{
		"key_id": keyID, "plain_text": plain + hex.EncodeToString(digest[:]),
		"datakey_plain_length": "32", "additional_authenticated_data": "aad",
		"sequence": sequence, "pin": "", "pin_type": "CipherText", "key_spec": "AES_256"})
	e.admin.mustPost(t, "decrypt-datakey", map[string]any{
		"key_id": keyID, "cipher_text": cipher, "datakey_cipher_length": "32",
		"additional_authenticated_data": "aad", "sequence": sequence})

	encrypted := e.admin.mustPost(t, "encrypt-data", map[string]any{
		"key_id": keyID, "plain_text": "secret", "encryption_algorithm": "SYMMETRIC_DEFAULT",
		"additional_authenticated_data": "aad", "sequence": sequence})
	dataCipher, _ := encrypted.Body["cipher_text"].(string)
	e.admin.mustPost(t, "decrypt-data", map[string]any{
		"cipher_text": dataCipher, "encryption_algorithm": "SYMMETRIC_DEFAULT", "key_id": keyID,
		"additional_authenticated_data": "aad", "sequence": sequence})
	e.admin.mustPost(t, "re-encrypt", map[string]any{
		"cipher_text": dataCipher, "source_key_id": keyID,
		"source_additional_authenticated_data":      "aad",
		"source_encryption_algorithm":               "SYMMETRIC_DEFAULT",
		"destination_key_id":                        keyID,
		"destination_additional_authenticated_data": "aad2",
		"destination_encryption_algorithm":          "SYMMETRIC_DEFAULT"})
}

// TestMemberCheckersListTheirFields checks that each request type that lists its members
// lists every member it decodes, so that adding a field without listing it fails here.
func TestMemberCheckersListTheirFields(t *testing.T) {
	checkers := []memberChecker{
		&createDataKeyRequest{}, &encryptDataKeyRequest{}, &decryptDataKeyRequest{},
		&encryptDataRequest{}, &decryptDataRequest{}, &reEncryptRequest{},
	}
	for _, checker := range checkers {
		typ := reflect.TypeOf(checker).Elem()
		t.Run(typ.Name(), func(t *testing.T) {
			for _, name := range jsonMemberNames(typ) {
				if !checker.knownMember(name) {
					t.Errorf("%s decodes the member %q but does not list it", typ.Name(), name)
				}
			}
		})
	}
}

// jsonMemberNames returns the json tag names of struct type typ, with those of its
// embedded structs.
func jsonMemberNames(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			names = append(names, jsonMemberNames(f.Type)...)
			continue
		}
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// TestBindIgnoresUnknownMembersElsewhere checks that operations which bind no ciphertext
// ignore members they do not take.
func TestBindIgnoresUnknownMembersElsewhere(t *testing.T) {
	e := newTestEnv(t)
	keyID := e.admin.createKey(t, "ignored-members")

	r := e.admin.post(t, "describe-key", `{"key_id":"`+keyID+`","future_member":1}`)
	if r.Status != http.StatusOK {
		t.Errorf("describe-key with an unknown member: status %d: %s", r.Status, r.Raw)
	}
}
