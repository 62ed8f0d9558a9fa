package api

import (
	"crypto/sha256"
	"encoding/json"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
)

type createDataKeyRequest struct {
	KeyID             string          `json:"key_id"`
	KeySpec           string          `json:"key_spec"`
	DataKeyLength     flexString      `json:"datakey_length"`
	EncryptionContext json.RawMessage `json:"encryption_context"`
	AAD               string          `json:"additional_authenticated_data"`
	Sequence          string          `json:"sequence"`
}

func (r *createDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "key_id":
		return stringField(&r.KeyID, name, raw)
	case "key_spec":
		return stringField(&r.KeySpec, name, raw)
	case "datakey_length":
		return flexField(&r.DataKeyLength, name, raw)
	case "encryption_context":
		r.EncryptionContext = raw // service.ParseEncryptionContext checks its type
		return nil
	case "additional_authenticated_data":
		return stringField(&r.AAD, name, raw)
	case "sequence":
		return stringField(&r.Sequence, name, raw)
	}
	return nil
}

type createDataKeyResponse struct {
	KeyID      string `json:"key_id"`
	PlainText  string `json:"plain_text,omitempty"`
	CipherText string `json:"cipher_text"`
}

func (r createDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendMember(append(b, '{'), "key_id", r.KeyID)
	if r.PlainText != "" {
		b = appendMember(append(b, ','), "plain_text", r.PlainText)
	}
	b = appendMember(append(b, ','), "cipher_text", r.CipherText)
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
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	bits, _, err := req.DataKeyLength.int("datakey_length", service.CodeInvalidDataKeyBits)
	if err != nil {
		return nil, err
	}
	b, err := binding(req.EncryptionContext, req.AAD)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.CreateDataKey(c.Request().Context(), st.principal, service.DataKeyInput{
		KeyRef: req.KeyID, Bits: bits, Spec: req.KeySpec, Binding: b,
	}, withPlaintext)
	if err != nil {
		return nil, err
	}
	defer clear(out.Plaintext)

	st.keyID, st.version = out.KeyID, out.Version
	resp := createDataKeyResponse{KeyID: out.KeyID, CipherText: upperHex(out.Ciphertext)}
	if withPlaintext {
		resp.PlainText = upperHex(out.Plaintext)
	}
	return resp, nil
}

type encryptDataKeyRequest struct {
	KeyID              string          `json:"key_id"`
	PlainText          string          `json:"plain_text"`
	DataKeyPlainLength flexString      `json:"datakey_plain_length"`
	EncryptionContext  json.RawMessage `json:"encryption_context"`
	AAD                string          `json:"additional_authenticated_data"`
	Sequence           string          `json:"sequence"`
}

func (r *encryptDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "key_id":
		return stringField(&r.KeyID, name, raw)
	case "plain_text":
		return stringField(&r.PlainText, name, raw)
	case "datakey_plain_length":
		return flexField(&r.DataKeyPlainLength, name, raw)
	case "encryption_context":
		r.EncryptionContext = raw // service.ParseEncryptionContext checks its type
		return nil
	case "additional_authenticated_data":
		return stringField(&r.AAD, name, raw)
	case "sequence":
		return stringField(&r.Sequence, name, raw)
	}
	return nil
}

type encryptDataKeyResponse struct {
	KeyID         string `json:"key_id"`
	CipherText    string `json:"cipher_text"`
	DataKeyLength string `json:"datakey_length"`
}

func (r encryptDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendMember(append(b, '{'), "key_id", r.KeyID)
	b = appendMember(append(b, ','), "cipher_text", r.CipherText)
	b = appendMember(append(b, ','), "datakey_length", r.DataKeyLength)
	return append(b, '}')
}

func (s *Server) encryptDataKey(c echo.Context, st *requestState) (any, error) {
	var req encryptDataKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	n, set, err := req.DataKeyPlainLength.int("datakey_plain_length", service.CodeInvalidPlainLength)
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, service.Errorf(service.CodeMissingParameter, "datakey_plain_length is missing")
	}
	plain, err := decodeHex("plain_text", service.CodeInvalidPlainText, req.PlainText)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	b, err := binding(req.EncryptionContext, req.AAD)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.EncryptDataKey(c.Request().Context(), st.principal, service.EncryptDataKeyInput{
		KeyRef: req.KeyID, PlainText: plain, DataKeyLen: n, Binding: b,
	})
	if err != nil {
		return nil, err
	}

	st.keyID, st.version = out.KeyID, out.Version
	return encryptDataKeyResponse{
		KeyID:         out.KeyID,
		CipherText:    upperHex(out.Ciphertext),
		DataKeyLength: strconv.Itoa(n),
	}, nil
}

type decryptDataKeyRequest struct {
	KeyID               string          `json:"key_id"`
	CipherText          string          `json:"cipher_text"`
	DataKeyCipherLength flexString      `json:"datakey_cipher_length"`
	EncryptionContext   json.RawMessage `json:"encryption_context"`
	AAD                 string          `json:"additional_authenticated_data"`
	Sequence            string          `json:"sequence"`
}

func (r *decryptDataKeyRequest) decodeField(name string, raw []byte) error {
	switch name {
	case "key_id":
		return stringField(&r.KeyID, name, raw)
	case "cipher_text":
		return stringField(&r.CipherText, name, raw)
	case "datakey_cipher_length":
		return flexField(&r.DataKeyCipherLength, name, raw)
	case "encryption_context":
		r.EncryptionContext = raw // service.ParseEncryptionContext checks its type
		return nil
	case "additional_authenticated_data":
		return stringField(&r.AAD, name, raw)
	case "sequence":
		return stringField(&r.Sequence, name, raw)
	}
	return nil
}

type decryptDataKeyResponse struct {
	DataKey       string `json:"data_key"`
	DataKeyLength string `json:"datakey_length"`
	DataKeyDigest string `json:"datakey_dgst"`
}

func (r decryptDataKeyResponse) appendJSON(b []byte) []byte {
	b = appendMember(append(b, '{'), "data_key", r.DataKey)
	b = appendMember(append(b, ','), "datakey_length", r.DataKeyLength)
	b = appendMember(append(b, ','), "datakey_dgst", r.DataKeyDigest)
	return append(b, '}')
}

func (s *Server) decryptDataKey(c echo.Context, st *requestState) (any, error) {
	var req decryptDataKeyRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	n, set, err := req.DataKeyCipherLength.int("datakey_cipher_length", service.CodeInvalidCipherLength)
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, service.Errorf(service.CodeMissingParameter, "datakey_cipher_length is missing")
	}
	ct, err := decodeHex("cipher_text", service.CodeInvalidCipherText, req.CipherText)
	if err != nil {
		return nil, err
	}
	b, err := binding(req.EncryptionContext, req.AAD)
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
	return decryptDataKeyResponse{
		DataKey:       upperHex(out.Plaintext),
		DataKeyLength: strconv.Itoa(len(out.Plaintext)),
		DataKeyDigest: upperHex(digest[:]),
	}, nil
}
