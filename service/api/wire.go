package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/internal/jsonscan"
)

// flexString is a field that the API documents as a JSON string holding a number. It
// accepts a string or a JSON number, because some clients send numbers; responses always
// send strings.
type flexString struct {
	value string
	set   bool
	// number is set when the value came as a JSON number rather than a string.
	number bool
}

func (f *flexString) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &f.value); err != nil {
			return err
		}
		f.set = true
		return nil
	}

	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errNotStringOrNumber
	}
	f.value, f.set, f.number = n.String(), true, true
	return nil
}

var errNotStringOrNumber = errors.New("must be a string or a number")

// int parses the value as a decimal integer. Absent values and "" give 0, false. A
// string must be canonical: ASCII digits only, without sign, spaces or leading zeros
// (except "0" itself), so that every accepted value has one spelling. A JSON number
// must be an integer without fraction or exponent; JSON already forbids a plus sign
// and leading zeros, and its minus sign is left to the caller's range check.
func (f flexString) int(field, code string) (int, bool, error) {
	if !f.set || f.value == "" {
		return 0, false, nil
	}

	digits := f.value
	if f.number {
		digits = strings.TrimPrefix(digits, "-")
	}
	if !canonicalDigits(digits) {
		return 0, true, service.Errorf(code,
			"%s must be a whole number in decimal digits without sign, spaces or leading zeros",
			field)
	}

	n, err := strconv.Atoi(f.value)
	if err != nil {
		return 0, true, service.Errorf(code, "%s is out of range", field)
	}
	return n, true, nil
}

// listLimit returns the limit member of a list-keys or list-grants request, 0 when it is
// absent. The service reads 0 as "no limit given", so an explicit 0 is rejected here.
func listLimit(limit flexString) (int, error) {
	n, set, err := limit.int("limit", service.CodeInvalidLimit)
	if err != nil {
		return 0, err
	}
	if set && n < 1 {
		return 0, service.Errorf(service.CodeInvalidLimit, "limit must be 1 to %d",
			service.MaxListLimit)
	}
	return n, nil
}

// canonicalDigits reports whether s is "0" or a run of ASCII digits without a leading 0.
func canonicalDigits(s string) bool {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// fieldDecoder is a request type that decodes its own members with jsonscan, which
// avoids the reflection of encoding/json on the hot operations.
type fieldDecoder interface {
	decodeField(name string, raw []byte) error
}

// memberChecker is a request type that lists the members its body may hold, and bind
// rejects any other member with KMS.0202. The operations that bind a ciphertext to an
// encryption context or AAD implement it, because a misspelled encryption_context would
// otherwise seal a data key bound to nothing. Other operations ignore unknown members.
type memberChecker interface {
	// knownMember reports whether name, compared exactly, is a member of the request:
	// one that it decodes, or one of Huawei's API that it accepts and ignores.
	knownMember(name string) bool
}

// bind decodes the JSON body into v. An empty body decodes as {}. Query parameters are
// never read, so they cannot fill or override body fields.
//
// bind rejects with KMS.0202 a body that is not valid UTF-8 (or has an unpaired UTF-16
// surrogate escape) and a body that repeats a top-level member name, compared ignoring
// case. The decoders would otherwise replace the invalid text with U+FFFD and keep the
// last of the repeated members, so a proxy or log that reads the same bytes differently
// would see another request than the one served.
func bind(c echo.Context, v any) error {
	body := bytes.TrimSpace(stateOf(c).body)
	if len(body) == 0 {
		return nil
	}
	if !jsonscan.ValidText(body) {
		return service.Errorf(service.CodeInvalidJSON,
			"the request body is not valid UTF-8 or has an unpaired surrogate escape")
	}

	if fd, ok := v.(fieldDecoder); ok {
		return bindFields(body, fd)
	}

	// One jsonscan pass finds repeated names, which encoding/json silently merges.
	if err := bindFields(body, flexMembers{v}); err != nil {
		return err
	}

	err := json.Unmarshal(body, v)
	if err == nil {
		if path, t, found := nullElement(body, reflect.TypeOf(v), ""); found {
			return wrongType(path, jsonTypeName(t))
		}
		return nil
	}

	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		// The error's type is the element's for an element of an array, so the member's
		// own type, where v has one by that name, gives what the whole value must be.
		want := typeErr.Type
		if member, ok := memberType(v, typeErr.Field); ok {
			want = member
		}
		return wrongType(typeErr.Field, jsonTypeName(want))
	}
	if errors.Is(err, errNotStringOrNumber) {
		return service.Errorf(service.CodeInvalidParameter,
			"a numeric field must be a JSON string or number")
	}
	return service.Errorf(service.CodeInvalidJSON, "the request body is not a valid JSON object")
}

// jsonTypeName names the JSON type that encoding/json decodes into t, such as "string" or
// "array of objects", for error messages that must not show Go type names.
func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "string" // encoding/json reads []byte as base64 text
		}
		elem := jsonTypeName(t.Elem())
		if rest, ok := strings.CutPrefix(elem, "array of "); ok {
			return "array of arrays of " + rest
		}
		return "array of " + elem + "s"
	case reflect.Struct, reflect.Map:
		return "object"
	default:
		return "JSON value"
	}
}

// memberType returns the Go type of the member at path in the struct that v points to,
// as json tags or field names spell it, with "." between the members of nested objects
// (encoding/json's UnmarshalTypeError.Field). Arrays on the way are passed through to
// their elements.
func memberType(v any, path string) (reflect.Type, bool) {
	t := reflect.TypeOf(v)
	for name := range strings.SplitSeq(path, ".") {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice ||
			t.Kind() == reflect.Array) {
			t = t.Elem()
		}
		if t == nil || t.Kind() != reflect.Struct {
			return nil, false
		}
		field, ok := structMember(t, name)
		if !ok {
			return nil, false
		}
		t = field
	}
	return t, t != nil
}

// structMember returns the type of the field of struct type t that JSON calls name.
func structMember(t reflect.Type, name string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == name || (tag == "" && f.Name == name) {
			return f.Type, true
		}
	}
	return nil, false
}

// nullElement finds the first null element of an array that raw, a valid JSON value
// decoded into type t, holds at any depth, where the element type cannot be null.
// encoding/json leaves such an element at its zero value, "" or an empty object, and a
// later check would then name the wrong cause. It returns the member's path as
// memberType takes it and the member's type.
func nullElement(raw []byte, t reflect.Type, path string) (string, reflect.Type, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	raw = bytes.TrimSpace(raw)
	if !bytes.Contains(raw, []byte("null")) {
		return "", nil, false
	}

	switch {
	case t.Kind() == reflect.Struct && raw[0] == '{':
		var foundPath string
		var foundType reflect.Type
		_ = jsonscan.Object(raw, func(name string, value []byte) error {
			member, ok := structMember(t, name)
			if !ok || foundType != nil {
				return nil
			}
			memberPath := name
			if path != "" {
				memberPath = path + "." + name
			}
			foundPath, foundType, _ = nullElement(value, member, memberPath)
			return nil
		})
		return foundPath, foundType, foundType != nil

	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8 && raw[0] == '[':
		var elements []json.RawMessage
		if err := json.Unmarshal(raw, &elements); err != nil {
			return "", nil, false
		}
		for _, element := range elements {
			if string(element) == "null" && !nullable(t.Elem()) {
				return path, t, true
			}
			if elementPath, elementType, found := nullElement(element, t.Elem(), path); found {
				return elementPath, elementType, true
			}
		}
	}
	return "", nil, false
}

// nullable reports whether JSON null is a meaningful value of type t for encoding/json.
func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Slice, reflect.Map:
		return true
	}
	return false
}

// flexMembers is a fieldDecoder for the duplicate check of a body that encoding/json
// decodes into v. It decodes nothing, but rejects a top-level flexString member whose
// value is not a JSON string, number or null with the member's name, which
// flexString.UnmarshalJSON does not know.
type flexMembers struct{ v any }

// knownMember reports whether the request that m decodes lists name, or true when it
// lists no members (memberChecker).
func (m flexMembers) knownMember(name string) bool {
	checker, ok := m.v.(memberChecker)
	return !ok || checker.knownMember(name)
}

func (m flexMembers) decodeField(name string, raw []byte) error {
	if len(raw) == 0 || raw[0] == '"' || raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') ||
		bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if t, ok := memberType(m.v, name); !ok || t != reflect.TypeOf(flexString{}) {
		return nil
	}
	return &fieldTypeError{field: name, want: "string or number"}
}

// binding converts the two AAD fields of a request.
func binding(encryptionContext json.RawMessage, aad string) (service.Binding, error) {
	ec, err := service.ParseEncryptionContext(encryptionContext)
	if err != nil {
		return service.Binding{}, err
	}
	if err := service.ValidateAAD(aad); err != nil {
		return service.Binding{}, err
	}
	return service.Binding{Context: ec, AAD: aad}, nil
}

// decodeHex decodes a hex field of either case.
func decodeHex(field, code, s string) ([]byte, error) {
	if s == "" {
		return nil, service.Errorf(service.CodeMissingParameter, "%s is missing", field)
	}
	b, err := hex.DecodeString(s)
	var invalid hex.InvalidByteError
	switch {
	case errors.As(err, &invalid) && invalid < utf8.RuneSelf:
		return nil, service.Errorf(code, "%s contains %q, which is not a hexadecimal digit",
			field, rune(invalid))
	case errors.As(err, &invalid):
		return nil, service.Errorf(code, "%s contains the byte 0x%02X, which is not a "+
			"hexadecimal digit", field, byte(invalid))
	case err != nil:
		return nil, service.Errorf(code, "%s must be an even number of hexadecimal digits", field)
	}
	return b, nil
}

// upperHex encodes b as upper-case hex, the form of Huawei's examples.
func upperHex(b []byte) string {
	var dst strings.Builder
	dst.Grow(hex.EncodedLen(len(b)))
	for _, v := range b {
		dst.WriteByte(upperHexDigits[v>>4])
		dst.WriteByte(upperHexDigits[v&0x0f])
	}
	return dst.String()
}

const upperHexDigits = "0123456789ABCDEF"

// upperHexBytes is binary data that JSON encodes as a string of upper-case hex, as
// upperHex writes it. Responses that carry a data key use it, so that the key's hex is
// written into the response buffer, which is cleared after use, and not into a string,
// which cannot be cleared.
type upperHexBytes []byte

func (b upperHexBytes) MarshalJSON() ([]byte, error) {
	return appendUpperHexString(nil, b), nil
}

// appendUpperHexString appends b to dst as a JSON string of upper-case hex digits.
func appendUpperHexString(dst, b []byte) []byte {
	dst = append(dst, '"')
	for _, v := range b {
		dst = append(dst, upperHexDigits[v>>4], upperHexDigits[v&0x0f])
	}
	return append(dst, '"')
}

// millis formats t as milliseconds since the epoch, as the API's dates are; "" for zero.
func millis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// bindFields decodes body with fd in one jsonscan pass. It rejects with KMS.0202 a
// repeated top-level member name, and a member that fd does not list (memberChecker).
func bindFields(body []byte, fd fieldDecoder) error {
	checker, _ := fd.(memberChecker)
	var names memberNames
	// The first member that fails to decode does not stop the scan, so that a body that
	// is not valid JSON after it gets the syntax error, which names the real cause.
	var memberErr error
	err := jsonscan.Object(body, func(name string, raw []byte) error {
		if memberErr != nil {
			return nil
		}
		switch {
		case !names.add(name):
			memberErr = &duplicateMemberError{name: name}
		case checker != nil && !checker.knownMember(name):
			memberErr = &unknownMemberError{name: name}
		default:
			memberErr = fd.decodeField(name, raw)
		}
		return nil
	})
	if err == nil {
		err = memberErr
	}
	if err == nil {
		// Before the errors.As targets below, which would otherwise move to the heap on
		// every call.
		return nil
	}

	var typeErr *fieldTypeError
	var dupErr *duplicateMemberError
	var unknownErr *unknownMemberError
	switch {
	case errors.As(err, &dupErr):
		return service.Errorf(service.CodeInvalidJSON, "%s", dupErr.Error())
	case errors.As(err, &unknownErr):
		return service.Errorf(service.CodeInvalidJSON, "%s", unknownErr.Error())
	case errors.As(err, &typeErr):
		return wrongType(typeErr.field, typeErr.want)
	case errors.Is(err, jsonscan.ErrTooDeep):
		return service.Errorf(service.CodeInvalidJSON,
			"the request body nests JSON deeper than %d levels", jsonscan.MaxDepth)
	case errors.Is(err, jsonscan.ErrSyntax):
		return service.Errorf(service.CodeInvalidJSON, "the request body is not a valid JSON object")
	default:
		return err
	}
}

// stringField decodes a member that must be a JSON string; null leaves it empty.
func stringField(dst *string, name string, raw []byte) error {
	switch raw[0] {
	case '"':
		s, err := jsonscan.String(raw)
		*dst = s
		return err
	case 'n':
		return nil
	default:
		return &fieldTypeError{field: name, want: "string"}
	}
}

// flexField decodes a member that is a string holding a number, or a JSON number.
func flexField(dst *flexString, name string, raw []byte) error {
	switch c := raw[0]; {
	case c == '"':
		s, err := jsonscan.String(raw)
		*dst = flexString{value: s, set: true}
		return err
	case c == 'n':
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		*dst = flexString{value: string(raw), set: true, number: true}
		return nil
	default:
		return &fieldTypeError{field: name, want: "string or number"}
	}
}

// objectField keeps the raw bytes of a member that must be a JSON object or null.
func objectField(dst *json.RawMessage, name string, raw []byte) error {
	if raw[0] != '{' && raw[0] != 'n' {
		return &fieldTypeError{field: name, want: "object"}
	}
	*dst = raw
	return nil
}

// memberNames is the set of member names seen in one object, compared ignoring case as
// encoding/json matches names to struct fields. Most bodies have a few members, so the
// first ones live in an array and a map is made only for long bodies.
type memberNames struct {
	few   [8]string
	count int
	many  map[string]struct{}
}

// add records name and reports whether it was new.
func (m *memberNames) add(name string) bool {
	key := foldName(name)
	if m.many != nil {
		if _, dup := m.many[key]; dup {
			return false
		}
		m.many[key] = struct{}{}
		return true
	}

	for _, seen := range m.few[:m.count] {
		if seen == key {
			return false
		}
	}
	if m.count < len(m.few) {
		m.few[m.count] = key
		m.count++
		return true
	}

	m.many = make(map[string]struct{}, 2*len(m.few))
	for _, seen := range m.few {
		m.many[seen] = struct{}{}
	}
	m.many[key] = struct{}{}
	return true
}

// foldName maps name to one representative of its case-folding class, so two names
// that strings.EqualFold matches map to the same string. Each rune becomes a
// representative of its unicode.SimpleFold orbit: the lower-case ASCII letter when the
// orbit has one (K, k and the Kelvin sign all become k), else the smallest rune. Names
// without upper-case ASCII or non-ASCII bytes, such as the API's own, are their own
// representative.
func foldName(name string) string {
	plain := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= utf8.RuneSelf || (c >= 'A' && c <= 'Z') {
			plain = false
			break
		}
	}
	if plain {
		return name
	}

	var b strings.Builder
	for _, r := range name {
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

func foldRune(r rune) rune {
	smallest := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f >= 'a' && f <= 'z' {
			return f
		}
		smallest = min(smallest, f)
	}
	if r >= 'a' && r <= 'z' {
		return r
	}
	return smallest
}

// duplicateMemberError names a top-level member that occurs more than once.
type duplicateMemberError struct{ name string }

func (e *duplicateMemberError) Error() string {
	return fmt.Sprintf("the request body has the member %q more than once "+
		"(names are compared ignoring case)", shortMemberName(e.name))
}

// shortMemberName returns name cut to 64 bytes, for error messages.
func shortMemberName(name string) string {
	if len(name) > 64 {
		return name[:64] + "..."
	}
	return name
}

// unknownMemberError names a top-level member that the request does not list
// (memberChecker).
type unknownMemberError struct{ name string }

func (e *unknownMemberError) Error() string {
	return fmt.Sprintf("the request body has the member %q, which this operation does not "+
		"take; check its spelling", shortMemberName(e.name))
}

// fieldTypeError names a member whose JSON type is wrong.
type fieldTypeError struct{ field, want string }

func (e *fieldTypeError) Error() string {
	return e.field + " has the wrong JSON type: expected " + e.want
}

// wrongType returns the KMS error of a member at path whose JSON type is not want.
func wrongType(path, want string) error {
	return service.Errorf(service.CodeInvalidParameter, "%s",
		(&fieldTypeError{field: path, want: want}).Error())
}

// jsonAppender is a response type that encodes itself, which avoids the reflection of
// encoding/json on the hot operations. The output must equal what encoding/json writes
// for the same value (a test checks each type).
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

// appendMember appends "name":"value" with value escaped as encoding/json escapes it.
func appendMember(b []byte, name, value string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendHexMember appends "name":"<value in upper-case hex>".
func appendHexMember(b []byte, name string, value upperHexBytes) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendUpperHexString(b, value)
}

// appendString appends s as a JSON string, escaping as encoding/json does: its
// HTML-safe escapes of <, > and &, U+2028 and U+2029 as \u escapes, and invalid UTF-8 as
// U+FFFD.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			default:
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}

		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}
