package main

import (
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

// ceilingCipherHex is a stand-in ciphertext of the size kmsd returns for a 32-byte
// data key (134 - 64 + 32 = 102 bytes).
var ceilingCipherHex = strings.Repeat("AB", 102)

func ceilingHandler(c echo.Context) error {
	var req ceilingRequest
	if err := json.NewDecoder(c.Request().Body).Decode(&req); err != nil {
		return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid JSON"})
	}

	switch c.Param("op") {
	case "decrypt-datakey":
		ct, err := hex.DecodeString(req.CipherText)
		if err != nil || len(ct) < 70 {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid cipher_text"})
		}
		n := len(ct) - 70 // the data key length of a kmsd ciphertext
		return c.JSON(http.StatusOK, map[string]string{
			"data_key":       strings.Repeat("00", n),
			"datakey_length": strconv.Itoa(n),
			"datakey_dgst":   strings.Repeat("F5", 32),
		})
	case "create-datakey":
		return c.JSON(http.StatusOK, map[string]string{
			"key_id": req.KeyID, "plain_text": strings.Repeat("00", 32), "cipher_text": ceilingCipherHex,
		})
	case "encrypt-datakey":
		if _, err := hex.DecodeString(req.PlainText); err != nil {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "invalid plain_text"})
		}
		return c.JSON(http.StatusOK, map[string]string{
			"key_id": req.KeyID, "cipher_text": ceilingCipherHex, "datakey_length": "32",
		})
	case "encrypt-data":
		return c.JSON(http.StatusOK, map[string]string{
			"key_id": req.KeyID, "cipher_text": strings.Repeat("QUJD", 32),
		})
	default:
		return c.JSON(http.StatusNotFound, map[string]string{"error": "unknown operation"})
	}
}
