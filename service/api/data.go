package api

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
)

// dataRoutes registers encrypt-data, decrypt-data, gen-random and re-encrypt.
func (s *Server) dataRoutes(g *routeGroup) {
	g.POST("/encrypt-data", s.op("encrypt-data", s.encryptData))
	g.POST("/decrypt-data", s.op("decrypt-data", s.decryptData))
	g.POST("/gen-random", s.op("gen-random", s.genRandom))
	g.POST("/re-encrypt", s.op("re-encrypt", s.reEncrypt))
}

// maxDataCipherTextChars is the longest base64 cipher_text that decrypt-data accepts,
// from the Huawei Cloud KMS API v1.0. The API also gives a minimum of 128 characters,
// which this service does not apply: its ciphertext of a 1-byte plaintext is 71 bytes,
// 96 base64 characters.
const maxDataCipherTextChars = 5648

type encryptDataRequest struct {
	KeyID               string          `json:"key_id"`
	PlainText           *string         `json:"plain_text"`
	EncryptionAlgorithm string          `json:"encryption_algorithm"`
	EncryptionContext   json.RawMessage `json:"encryption_context"`
	AAD                 string          `json:"additional_authenticated_data"`
	Sequence            string          `json:"sequence"`
}

// knownMember lists the members of encrypt-data.
func (r *encryptDataRequest) knownMember(name string) bool {
	switch name {
	case "key_id", "plain_text", "encryption_algorithm", "encryption_context",
		"additional_authenticated_data", "sequence":
		return true
	}
	return false
}

type encryptDataResponse struct {
	KeyID      string `json:"key_id"`
	CipherText string `json:"cipher_text"`
}

func (s *Server) encryptData(c echo.Context, st *requestState) (any, error) {
	var req encryptDataRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	if req.PlainText == nil || *req.PlainText == "" {
		return nil, service.Errorf(service.CodeMissingParameter, "plain_text is missing")
	}
	plain := []byte(*req.PlainText)
	defer clear(plain)
	b, err := binding(req.EncryptionContext, req.AAD)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.EncryptData(c.Request().Context(), st.principal, service.EncryptDataInput{
		KeyRef: req.KeyID, Plaintext: plain, Algorithm: req.EncryptionAlgorithm, Binding: b,
	})
	if err != nil {
		return nil, err
	}

	st.keyID, st.version = out.KeyID, out.Version
	return encryptDataResponse{
		KeyID:      out.KeyID,
		CipherText: base64.StdEncoding.EncodeToString(out.Ciphertext),
	}, nil
}

type decryptDataRequest struct {
	CipherText          string          `json:"cipher_text"`
	EncryptionAlgorithm string          `json:"encryption_algorithm"`
	KeyID               string          `json:"key_id"`
	EncryptionContext   json.RawMessage `json:"encryption_context"`
	AAD                 string          `json:"additional_authenticated_data"`
	Sequence            string          `json:"sequence"`
}

// knownMember lists the members of decrypt-data.
func (r *decryptDataRequest) knownMember(name string) bool {
	switch name {
	case "cipher_text", "encryption_algorithm", "key_id", "encryption_context",
		"additional_authenticated_data", "sequence":
		return true
	}
	return false
}

type decryptDataResponse struct {
	KeyID           string `json:"key_id"`
	PlainText       string `json:"plain_text"`
	PlainTextBase64 string `json:"plain_text_base64"`
}

func (s *Server) decryptData(c echo.Context, st *requestState) (any, error) {
	var req decryptDataRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.KeyID

	ct, err := decodeDataCipherText("cipher_text", req.CipherText)
	if err != nil {
		return nil, err
	}
	b, err := binding(req.EncryptionContext, req.AAD)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.DecryptData(c.Request().Context(), st.principal, service.DecryptDataInput{
		Ciphertext: ct, KeyRef: req.KeyID, Algorithm: req.EncryptionAlgorithm, Binding: b,
	})
	if err != nil {
		return nil, err
	}
	defer clear(out.Plaintext)

	st.keyID, st.version = out.KeyID, out.Version
	return decryptDataResponse{
		KeyID:           out.KeyID,
		PlainText:       string(out.Plaintext),
		PlainTextBase64: base64.StdEncoding.EncodeToString(out.Plaintext),
	}, nil
}

// decodeDataCipherText decodes the base64 ciphertext of encrypt-data.
func decodeDataCipherText(field, s string) ([]byte, error) {
	if s == "" {
		return nil, service.Errorf(service.CodeMissingParameter, "%s is missing", field)
	}
	if len(s) > maxDataCipherTextChars {
		return nil, service.Errorf(service.CodeInvalidCipherText,
			"%s is longer than %d base64 characters", field, maxDataCipherTextChars)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, service.Errorf(service.CodeInvalidCipherText, "%s is not valid base64", field)
	}
	return b, nil
}

type genRandomRequest struct {
	RandomDataLength flexString `json:"random_data_length"`
	Sequence         string     `json:"sequence"`
}

type genRandomResponse struct {
	RandomData string `json:"random_data"`
}

func (s *Server) genRandom(c echo.Context, st *requestState) (any, error) {
	var req genRandomRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}

	bits, set, err := req.RandomDataLength.int("random_data_length", service.CodeInvalidRandomLength)
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, service.Errorf(service.CodeMissingParameter, "random_data_length is missing")
	}

	random, err := s.svc.GenRandom(c.Request().Context(), st.principal, bits)
	if err != nil {
		return nil, err
	}
	defer clear(random)
	return genRandomResponse{RandomData: upperHex(random)}, nil
}

type reEncryptRequest struct {
	CipherText       string `json:"cipher_text"`
	DestinationKeyID string `json:"destination_key_id"`
	SourceKeyID      string `json:"source_key_id"`
	SourceAAD        string `json:"source_additional_authenticated_data"`
	DestinationAAD   string `json:"destination_additional_authenticated_data"`
	// The encryption contexts are this service's addition to Huawei's request, so that a
	// data key bound to an encryption_context (the legacy API) can be resealed too.
	SourceEncryptionContext        json.RawMessage `json:"source_encryption_context"`
	DestinationEncryptionContext   json.RawMessage `json:"destination_encryption_context"`
	SourceEncryptionAlgorithm      string          `json:"source_encryption_algorithm"`
	DestinationEncryptionAlgorithm string          `json:"destination_encryption_algorithm"`
	DataKeyCipherLength            flexString      `json:"datakey_cipher_length"`
	Sequence                       string          `json:"sequence"`
}

// knownMember lists the members of re-encrypt.
func (r *reEncryptRequest) knownMember(name string) bool {
	switch name {
	case "cipher_text", "destination_key_id", "source_key_id",
		"source_additional_authenticated_data", "destination_additional_authenticated_data",
		"source_encryption_context", "destination_encryption_context",
		"source_encryption_algorithm", "destination_encryption_algorithm",
		"datakey_cipher_length", "sequence":
		return true
	}
	return false
}

type reEncryptResponse struct {
	KeyID                          string `json:"key_id"`
	SourceKeyID                    string `json:"source_key_id"`
	SourceEncryptionAlgorithm      string `json:"source_encryption_algorithm"`
	DestinationEncryptionAlgorithm string `json:"destination_encryption_algorithm"`
	CipherText                     string `json:"cipher_text"`
}

// reEncrypt reseals a data key ciphertext (hex, as create-datakey returns it) or an
// encrypt-data ciphertext (base64), and returns the new ciphertext in the same encoding. datakey_cipher_length
// is accepted and ignored: it matters only for Huawei's CBC data key format.
func (s *Server) reEncrypt(c echo.Context, st *requestState) (any, error) {
	var req reEncryptRequest
	if err := bind(c, &req); err != nil {
		return nil, err
	}
	if err := sequence(st, req.Sequence); err != nil {
		return nil, err
	}
	st.keyID = req.DestinationKeyID

	for _, algorithm := range []string{req.SourceEncryptionAlgorithm, req.DestinationEncryptionAlgorithm} {
		if algorithm != "" && algorithm != service.AlgorithmSymmetricDefault {
			return nil, service.Errorf(service.CodeInvalidParameter,
				"encryption algorithm %q is not supported for AES_256 keys; use %s", algorithm,
				service.AlgorithmSymmetricDefault)
		}
	}
	ct, isHex, err := decodeReEncryptCipherText(req.CipherText)
	if err != nil {
		return nil, err
	}
	src, err := binding(req.SourceEncryptionContext, req.SourceAAD)
	if err != nil {
		return nil, err
	}
	dst, err := binding(req.DestinationEncryptionContext, req.DestinationAAD)
	if err != nil {
		return nil, err
	}

	out, err := s.svc.ReEncrypt(c.Request().Context(), st.principal, service.ReEncryptInput{
		Ciphertext: ct, SourceKeyRef: req.SourceKeyID, DestKeyRef: req.DestinationKeyID,
		SourceBinding: src, DestBinding: dst,
	})
	if err != nil {
		return nil, err
	}

	st.keyID, st.version = out.KeyID, out.Version
	resp := reEncryptResponse{
		KeyID:                          out.KeyID,
		SourceKeyID:                    out.SourceKeyID,
		SourceEncryptionAlgorithm:      service.AlgorithmSymmetricDefault,
		DestinationEncryptionAlgorithm: service.AlgorithmSymmetricDefault,
		CipherText:                     base64.StdEncoding.EncodeToString(out.Ciphertext),
	}
	if isHex {
		resp.CipherText = upperHex(out.Ciphertext)
	}
	return resp, nil
}

// decodeReEncryptCipherText decodes cipher_text as hex when it is valid hex, else as
// base64. A base64 ciphertext of this service never decodes as hex: its first byte is
// the format byte 0x02, base64 "A" followed by a letter that is not a hex digit.
func decodeReEncryptCipherText(s string) (ct []byte, isHex bool, err error) {
	if s == "" {
		return nil, false, service.Errorf(service.CodeMissingParameter, "cipher_text is missing")
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, true, nil
	}
	ct, err = decodeDataCipherText("cipher_text", s)
	return ct, false, err
}
