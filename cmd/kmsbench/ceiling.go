package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// runCeiling serves the ceiling server: echo, the same routes as kmsd, parsing the same
// request bodies (JSON and hex) and writing response bodies of the same shape and size, with no
// signature check, no token, no store and no audit. It is the upper bound of what an echo
// server on this machine reaches for these requests.
func runCeiling(listen string) error {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/v1.0/:project_id/kms/:op", ceilingHandler)

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return http.Serve(ln, e)
}

type ceilingRequest struct {
	KeyID               string          `json:"key_id"`
	CipherText          string          `json:"cipher_text"`
	PlainText           string          `json:"plain_text"`
	DataKeyLength       json.RawMessage `json:"datakey_length"`
	DataKeyCipherLength json.RawMessage `json:"datakey_cipher_length"`
	DataKeyPlainLength  json.RawMessage `json:"datakey_plain_length"`
	EncryptionContext   json.RawMessage `json:"encryption_context"`
	AAD                 string          `json:"additional_authenticated_data"`
	Sequence            string          `json:"sequence"`
}

// Sizes of kmsd's ciphertexts beyond the plaintext they seal: header, IV and tag.
const (
	dataKeyCiphertextOverhead = 70 // a data key ciphertext (hex in the API)
	dataCiphertextOverhead    = 72 // an encrypt-data ciphertext (base64 in the API)
)

// ceilingCipherHex is a stand-in ciphertext of the size kmsd returns for a 32-byte
// data key.
var ceilingCipherHex = strings.Repeat("AB", dataKeyCiphertextOverhead+32)

// ceilingRequestID is a fixed value for the X-Request-Id header that kmsd sends with
// every response (32 hex digits), so that the responses of both servers have the same
// size.
const ceilingRequestID = "0123456789abcdef0123456789abcdef"

func ceilingHandler(c echo.Context) error {
	c.Response().Header().Set("X-Request-Id", ceilingRequestID)
	var req ceilingRequest
	if err := json.NewDecoder(c.Request().Body).Decode(&req); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
	}

	switch c.Param("op") {
	case "decrypt-datakey":
		ct, err := hex.DecodeString(req.CipherText)
		if err != nil || len(ct) < dataKeyCiphertextOverhead {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid cipher_text"})
		}
		n := len(ct) - dataKeyCiphertextOverhead
		return ceilingJSON(c, map[string]string{
			"data_key":       strings.Repeat("00", n),
			"datakey_length": strconv.Itoa(n),
			"datakey_dgst":   strings.Repeat("F5", 32),
		})
	case "create-datakey":
		return ceilingJSON(c, map[string]string{
			"key_id": req.KeyID, "plain_text": strings.Repeat("00", 32), "cipher_text": ceilingCipherHex,
		})
	case "encrypt-datakey":
		plain, err := hex.DecodeString(req.PlainText)
		if err != nil || len(plain) < sha256.Size {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid plain_text"})
		}
		n := len(plain) - sha256.Size // the data key, followed by its SHA-256 digest
		return ceilingJSON(c, map[string]string{
			"key_id":         req.KeyID,
			"cipher_text":    strings.Repeat("AB", dataKeyCiphertextOverhead+n),
			"datakey_length": strconv.Itoa(n),
		})
	case "encrypt-data":
		// kmsd writes encrypt-data responses with echo's c.JSON, newline included.
		n := base64.StdEncoding.EncodedLen(dataCiphertextOverhead + len(req.PlainText))
		return c.JSON(http.StatusOK, map[string]string{
			"key_id": req.KeyID, "cipher_text": strings.Repeat("A", n),
		})
	default:
		return c.JSON(http.StatusNotFound, map[string]string{"error": "unknown operation"})
	}
}

// ceilingJSON writes v as a 200 response without the newline that echo's c.JSON appends,
// as kmsd writes its data-key responses.
func ceilingJSON(c echo.Context, v map[string]string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, b)
}
