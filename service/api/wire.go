package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
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

// bind decodes the JSON body into v. An empty body decodes as {}. Query parameters are
// never read, so they cannot fill or override body fields.
func bind(c echo.Context, v any) error {
	body := bytes.TrimSpace(stateOf(c).body)
	if len(body) == 0 {
		return nil
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
