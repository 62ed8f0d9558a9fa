package api

import (
	"crypto/sha256"
	"encoding/json"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
)

// dataKeyFields are the members that every data-key request has.
type dataKeyFields struct {
	KeyID             string          `json:"key_id"`
	EncryptionContext json.RawMessage `json:"encryption_context"`
	AAD               string          `json:"additional_authenticated_data"`
	Sequence          string          `json:"sequence"`
}

// isDataKeyMember reports whether name is one of the members that every data-key request
// takes (memberChecker).
func isDataKeyMember(name string) bool {
	switch name {
	case "key_id", "encryption_context", "additional_authenticated_data", "sequence":
		return true
	}
	return false
}

// decodeField decodes one of the shared members. The request's knownMember rejects
// other names before they get here, apart from those it ignores.
func (f *dataKeyFields) decodeField(name string, raw []byte) error {
	switch name {
	case "key_id":
		return stringField(&f.KeyID, name, raw)
	case "encryption_context":
		f.EncryptionContext = raw // service.ParseEncryptionContext checks its type
		return nil
	case "additional_authenticated_data":
		return stringField(&f.AAD, name, raw)
	case "sequence":
		return stringField(&f.Sequence, name, raw)
	}
	return nil
}

// start runs the steps every data-key handler begins with: keep the sequence and the
// key for the audit record, and convert the binding.
func (f *dataKeyFields) start(st *requestState) (service.Binding, error) {
	if err := sequence(st, f.Sequence); err != nil {
		return service.Binding{}, err
	}
	st.keyID = f.KeyID
	return binding(f.EncryptionContext, f.AAD)
}

// requiredInt parses a numeric member that must be present.
func requiredInt(v flexString, field, code string) (int, error) {
	n, set, err := v.int(field, code)
	if err == nil && !set {
		err = service.Errorf(service.CodeMissingParameter, "%s is missing", field)
	}
	return n, err
}

type createDataKeyRequest struct {
	dataKeyFields
	KeySpec       string     `json:"key_spec"`
	DataKeyLength flexString `json:"datakey_length"`
}

// knownMember lists the members of create-datakey. pin and pin_type, for Huawei's
// dedicated HSM instances, are accepted and ignored.
func (r *createDataKeyRequest) knownMember(name string) bool {
	switch name {
	case "key_spec", "datakey_length", "pin", "pin_type":
		return true
	}
	return isDataKeyMember(name)
}

func (r *createDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "key_spec":
		return stringField(&r.KeySpec, name, raw)
	case "datakey_length":
		return flexField(&r.DataKeyLength, name, raw)
	}
	return r.dataKeyFields.decodeField(name, raw)
}

type createDataKeyResponse struct {
	KeyID      string        `json:"key_id"`
	PlainText  upperHexBytes `json:"plain_text,omitempty"`
	CipherText upperHexBytes `json:"cipher_text"`
}

func (r createDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendMember(append(b, '{'), "key_id", r.KeyID)
	if len(r.PlainText) > 0 {
		b = appendHexMember(append(b, ','), "plain_text", r.PlainText)
	}
	b = appendHexMember(append(b, ','), "cipher_text", r.CipherText)
	return append(b, '}')
}

func (s *Server) createDataKey(c echo.Context, st *requestState) (any, error) {
	return s.createDataKeyCommon(c, st, true)
}

func (s *Server) createDataKeyWithoutPlaintext(c echo.Context, st *requestState) (any, error) {
	return s.createDataKeyCommon(c, st, false)
}

func (s *Server) createDataKeyCommon(c echo.Context, st *requestState, withPlaintext bool) (any, error) {
	var req createDataKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	b, err := req.start(st)
	if err != nil {
		return nil, err
	}
	bits, bitsSet, err := req.DataKeyLength.int("datakey_length", service.CodeInvalidDataKeyBits)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.CreateDataKey(c.Request().Context(), st.principal, service.DataKeyInput{
		KeyRef: req.KeyID, Bits: bits, BitsSet: bitsSet, Spec: req.KeySpec, Binding: b,
	}, withPlaintext)
	if err != nil {
		return nil, err
	}
	defer clear(out.Plaintext)

	st.keyID, st.version = out.KeyID, out.Version
	resp := createDataKeyResponse{KeyID: out.KeyID, CipherText: out.Ciphertext}
	if withPlaintext {
		resp.PlainText = out.Plaintext
	}
	st.out = resp.appendJSON(st.responseBuffer())
	return encodedBody{}, nil
}

type encryptDataKeyRequest struct {
	dataKeyFields
	PlainText          string     `json:"plain_text"`
	DataKeyPlainLength flexString `json:"datakey_plain_length"`
}

// knownMember lists the members of encrypt-datakey. pin, pin_type and key_spec, for
// Huawei's dedicated HSM instances, are accepted and ignored.
func (r *encryptDataKeyRequest) knownMember(name string) bool {
	switch name {
	case "plain_text", "datakey_plain_length", "pin", "pin_type", "key_spec":
		return true
	}
	return isDataKeyMember(name)
}

func (r *encryptDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "plain_text":
		return stringField(&r.PlainText, name, raw)
	case "datakey_plain_length":
		return flexField(&r.DataKeyPlainLength, name, raw)
	}
	return r.dataKeyFields.decodeField(name, raw)
}

type encryptDataKeyResponse struct {
	KeyID         string        `json:"key_id"`
	CipherText    upperHexBytes `json:"cipher_text"`
	DataKeyLength string        `json:"datakey_length"`
}

func (r encryptDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendMember(append(b, '{'), "key_id", r.KeyID)
	b = appendHexMember(append(b, ','), "cipher_text", r.CipherText)
	b = appendMember(append(b, ','), "datakey_length", r.DataKeyLength)
	return append(b, '}')
}

func (s *Server) encryptDataKey(c echo.Context, st *requestState) (any, error) {
	var req encryptDataKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	b, err := req.start(st)
	if err != nil {
		return nil, err
	}
	n, err := requiredInt(req.DataKeyPlainLength, "datakey_plain_length", service.CodeInvalidPlainLength)
	if err != nil {
		return nil, err
	}
	plain, err := decodeHex("plain_text", service.CodeInvalidPlainText, req.PlainText)
	if err != nil {
		return nil, err
	}
	defer clear(plain)

	out, err := s.svc.EncryptDataKey(c.Request().Context(), st.principal, service.EncryptDataKeyInput{
		KeyRef: req.KeyID, PlainText: plain, DataKeyLen: n, Binding: b,
	})
	if err != nil {
		return nil, err
	}

	st.keyID, st.version = out.KeyID, out.Version
	resp := encryptDataKeyResponse{
		KeyID:         out.KeyID,
		CipherText:    out.Ciphertext,
		DataKeyLength: strconv.Itoa(n),
	}
	st.out = resp.appendJSON(st.responseBuffer())
	return encodedBody{}, nil
}

type decryptDataKeyRequest struct {
	dataKeyFields
	CipherText          string     `json:"cipher_text"`
	DataKeyCipherLength flexString `json:"datakey_cipher_length"`
}

// knownMember lists the members of decrypt-datakey.
func (r *decryptDataKeyRequest) knownMember(name string) bool {
	return name == "cipher_text" || name == "datakey_cipher_length" || isDataKeyMember(name)
}

func (r *decryptDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "cipher_text":
		return stringField(&r.CipherText, name, raw)
	case "datakey_cipher_length":
		return flexField(&r.DataKeyCipherLength, name, raw)
	}
	return r.dataKeyFields.decodeField(name, raw)
}

type decryptDataKeyResponse struct {
	DataKey       upperHexBytes `json:"data_key"`
	DataKeyLength string        `json:"datakey_length"`
	DataKeyDigest upperHexBytes `json:"datakey_dgst"`
}

func (r decryptDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendHexMember(append(b, '{'), "data_key", r.DataKey)
	b = appendMember(append(b, ','), "datakey_length", r.DataKeyLength)
	b = appendHexMember(append(b, ','), "datakey_dgst", r.DataKeyDigest)
	return append(b, '}')
}

func (s *Server) decryptDataKey(c echo.Context, st *requestState) (any, error) {
	var req decryptDataKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	b, err := req.start(st)
	if err != nil {
		return nil, err
	}
	n, err := requiredInt(req.DataKeyCipherLength, "datakey_cipher_length", service.CodeInvalidCipherLength)
	if err != nil {
		return nil, err
	}
	ct, err := decodeHex("cipher_text", service.CodeInvalidCipherText, req.CipherText)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.DecryptDataKey(c.Request().Context(), st.principal, service.DecryptDataKeyInput{
		KeyRef: req.KeyID, Ciphertext: ct, DataKeyLen: n, Binding: b,
	})
	if err != nil {
		return nil, err
	}
	defer clear(out.Plaintext)

	st.keyID, st.version = out.KeyID, out.Version
	digest := sha256.Sum256(out.Plaintext)
	resp := decryptDataKeyResponse{
		DataKey:       out.Plaintext,
		DataKeyLength: strconv.Itoa(len(out.Plaintext)),
		DataKeyDigest: digest[:],
	}
	st.out = resp.appendJSON(st.responseBuffer())
	return encodedBody{}, nil
}
