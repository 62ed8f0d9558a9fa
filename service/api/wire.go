package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
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
	f.value, f.set = n.String(), true
	return nil
}

var errNotStringOrNumber = errors.New("must be a string or a number")

// int parses the value as a decimal integer. Absent values give 0, false.
func (f flexString) int(field, code string) (int, bool, error) {
	if !f.set || f.value == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(f.value))
	if err != nil {
		return 0, true, service.Errorf(code, "%s must be a whole number", field)
	}
	return n, true, nil
}

// fieldDecoder is a request type that decodes its own members with jsonscan, which
// avoids the reflection of encoding/json on the hot operations.
type fieldDecoder interface {
	decodeField(name string, raw []byte) error
}

// bind decodes the JSON body into v. An empty body decodes as {}. Query parameters are
// never read, so they cannot fill or override body fields.
func bind(c echo.Context, v any) error {
	body := bytes.TrimSpace(stateOf(c).body)
	if len(body) == 0 {
		return nil
	}

	if fd, ok := v.(fieldDecoder); ok {
		return bindFields(body, fd)
	}

	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}

	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return service.Errorf(service.CodeInvalidParameter,
			"%s has the wrong JSON type: expected %s", typeErr.Field, typeErr.Type)
	}
	if errors.Is(err, errNotStringOrNumber) {
		return service.Errorf(service.CodeInvalidParameter,
			"a numeric field must be a JSON string or number")
	}
	return service.Errorf(service.CodeInvalidJSON, "the request body is not a valid JSON object")
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
	if err != nil {
		return nil, service.Errorf(code, "%s must be an even number of hexadecimal digits", field)
	}
	return b, nil
}

// upperHex encodes b as upper-case hex, the form of Huawei's examples.
func upperHex(b []byte) string {
	dst := make([]byte, hex.EncodedLen(len(b)))
	const digits = "0123456789ABCDEF"
	for i, v := range b {
		dst[2*i] = digits[v>>4]
		dst[2*i+1] = digits[v&0x0f]
	}
	return string(dst)
}

// millis formats t as milliseconds since the epoch, as the API's dates are; "" for zero.
func millis(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func bindFields(body []byte, fd fieldDecoder) error {
	err := jsonscan.Object(body, fd.decodeField)
	var typeErr *fieldTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return service.Errorf(service.CodeInvalidParameter, "%s", typeErr.Error())
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
		*dst = flexString{value: string(raw), set: true}
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

// fieldTypeError names a member whose JSON type is wrong.
type fieldTypeError struct{ field, want string }

func (e *fieldTypeError) Error() string {
	return e.field + " has the wrong JSON type: expected " + e.want
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
