package jsonscan

import (
	"encoding/json"
	"errors"
	"testing"
)

func members(t *testing.T, in string) (map[string]string, error) {
	t.Helper()
	out := map[string]string{}
	err := Object([]byte(in), func(name string, value []byte) error {
		out[name] = string(value)
		return nil
	})
	return out, err
}

func TestObjectMembers(t *testing.T) {
	got, err := members(t, ` {"a":"x", "b" : 12.5e-3 ,"c":{"d":[1,true,null,"]"]},"é\u00e9":"\"q\""} `)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a": `"x"`, "b": `12.5e-3`, "c": `{"d":[1,true,null,"]"]}`, "éé": `"\"q\""`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("member %q = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d members, want %d", len(got), len(want))
	}
}

func TestObjectRejects(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `"a"`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}{}`, `{a:1}`,
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":tru}`, `{"a":"\x"}`,
		"{\"a\":\"\x01\"}", `{"a":"\u12"}`, `{"a":[1 2]}`, `{"a":{"b" 1}}`,
	} {
		if _, err := members(t, in); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: error %v, want ErrSyntax", in, err)
		}
	}
}

func TestObjectDepthLimit(t *testing.T) {
	deep := `{"a":` + string(repeat('[', 100)) + string(repeat(']', 100)) + `}`
	if _, err := members(t, deep); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("100 levels of nesting: error %v, want ErrTooDeep", err)
	}
	if _, err := members(t, deep); !errors.Is(err, ErrSyntax) {
		t.Errorf("100 levels of nesting: error %v does not wrap ErrSyntax", err)
	}
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func TestStringDecodes(t *testing.T) {
	for raw, want := range map[string]string{
		`"plain"`: "plain", `"a\nb"`: "a\nb", `"\u00e9"`: "é", `"ключ"`: "ключ",
	} {
		got, err := String([]byte(raw))
		if err != nil || got != want {
			t.Errorf("String(%s) = %q, %v; want %q", raw, got, err, want)
		}
	}
}

// FuzzObject checks that Object accepts an input exactly when encoding/json decodes it
// as an object, so the fast path never changes which bodies are valid.
func FuzzObject(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"a":"b"}`, `{"key_id":"x","datakey_length":"512","encryption_context":{"k":"v"}}`,
		`{"a":[1,2,{"b":null}],"c":-0.5E+3}`, `{"a":"\ud83d\ude00"}`, `{"a":1}x`, `[1]`, `{"a":"\x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m map[string]json.RawMessage
		stdErr := json.Unmarshal(b, &m)
		stdOK := stdErr == nil && m != nil

		err := Object(b, func(string, []byte) error { return nil })
		if (err == nil) != stdOK {
			t.Fatalf("Object error %v, encoding/json error %v, for %q", err, stdErr, b)
		}
	})
}
