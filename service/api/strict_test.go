package api

import (
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
