package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
)

func runCreateKey(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("create-key", flag.ContinueOnError)
	alias := fs.String("alias", "", "key alias (required)")
	desc := fs.String("description", "", "key description")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *alias == "" {
		return usageError{"--alias is required"}
	}

	var out map[string]any
	body := map[string]any{"key_alias": *alias, "key_description": *desc}
	if err := env.call(http.MethodPost, "kms/create-key", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runDescribeKey(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("describe-key", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	var out map[string]any
	if err := env.call(http.MethodPost, "kms/describe-key", map[string]any{"key_id": pos[0]}, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runListKeys(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("list-keys", flag.ContinueOnError)
	limit := fs.String("limit", "", "keys per page (1 to 1000)")
	marker := fs.String("marker", "", "offset of the page")
	state := fs.String("state", "", "key state: 1 to 5")
	spec := fs.String("spec", "", "key spec filter; ALL for every spec")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	body := map[string]any{}
	for k, v := range map[string]string{"limit": *limit, "marker": *marker, "key_state": *state, "key_spec": *spec} {
		if v != "" {
			body[k] = v
		}
	}
	var out map[string]any
	if err := env.call(http.MethodPost, "kms/list-keys", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

// bindingFlags adds --context and --aad to fs.
func bindingFlags(fs *flag.FlagSet) (contextFlag, *string) {
	ctx := contextFlag{}
	fs.Var(ctx, "context", "encryption context pair key=value (repeatable)")
	aad := fs.String("aad", "", "additional authenticated data")
	return ctx, aad
}

func addBinding(body map[string]any, ctx contextFlag, aad string) {
	if len(ctx) > 0 {
		body["encryption_context"] = map[string]string(ctx)
	}
	if aad != "" {
		body["additional_authenticated_data"] = aad
	}
}

func runCreateDataKey(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("create-datakey", flag.ContinueOnError)
	bits := fs.Int("bits", 256, "data key length in bits (8 to 8192, a multiple of 8)")
	noPlain := fs.Bool("no-plaintext", false, "return only the ciphertext")
	ctx, aad := bindingFlags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}

	op := "kms/create-datakey"
	if *noPlain {
		op = "kms/create-datakey-without-plaintext"
	}
	body := map[string]any{"key_id": pos[0], "datakey_length": strconv.Itoa(*bits)}
	addBinding(body, ctx, *aad)
	var out map[string]any
	if err := env.call(http.MethodPost, op, body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runEncryptDataKey(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("encrypt-datakey", flag.ContinueOnError)
	plainHex := fs.String("plain-hex", "", "the data key in hex (kmsctl appends its SHA-256)")
	ctx, aad := bindingFlags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	dek, err := hex.DecodeString(*plainHex)
	if err != nil || len(dek) == 0 {
		return usageError{"--plain-hex must be a non-empty hex string"}
	}
	sum := sha256.Sum256(dek)

	body := map[string]any{
		"key_id":               pos[0],
		"plain_text":           hex.EncodeToString(dek) + hex.EncodeToString(sum[:]),
		"datakey_plain_length": strconv.Itoa(len(dek)),
	}
	addBinding(body, ctx, *aad)
	var out map[string]any
	if err := env.call(http.MethodPost, "kms/encrypt-datakey", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

func runDecryptDataKey(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("decrypt-datakey", flag.ContinueOnError)
	cipherHex := fs.String("cipher", "", "cipher_text of create-datakey or encrypt-datakey")
	length := fs.Int("length", 32, "length of the data key in bytes")
	ctx, aad := bindingFlags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *cipherHex == "" {
		return usageError{"--cipher is required"}
	}

	body := map[string]any{"key_id": pos[0], "cipher_text": *cipherHex,
		"datakey_cipher_length": strconv.Itoa(*length)}
	addBinding(body, ctx, *aad)
	var out map[string]any
	if err := env.call(http.MethodPost, "kms/decrypt-datakey", body, &out); err != nil {
		return err
	}
	return printJSON(env.stdout, out)
}

// runEncryptFile seals IN into OUT with a fresh data key, streaming.
func runEncryptFile(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("encrypt-file", flag.ContinueOnError)
	ctx, _ := bindingFlags(fs)
	pos, err := parse(fs, args, 3)
	if err != nil {
		return err
	}
	keyID, inPath, outPath := pos[0], pos[1], pos[2]

	body := map[string]any{"key_id": keyID, "datakey_length": "256"}
	addBinding(body, ctx, "")
	var dk struct {
		KeyID      string `json:"key_id"`
		PlainText  string `json:"plain_text"`
		CipherText string `json:"cipher_text"`
	}
	if err := env.call(http.MethodPost, "kms/create-datakey", body, &dk); err != nil {
		return err
	}
	dek, err := hex.DecodeString(dk.PlainText)
	if err != nil {
		return fmt.Errorf("the service answered an invalid plain_text: %w", err)
	}
	defer clear(dek)

	in, err := os.Open(inPath)
	if err != nil {
		return err
	}
	defer in.Close()

	h := envelopeHeader{KeyID: dk.KeyID, CipherText: dk.CipherText, DataKeyLength: len(dek),
		EncryptionContext: ctx}
	return writeAtomically(outPath, func(out *os.File) error { return sealStream(out, in, dek, h) })
}

// runDecryptFile opens an envelope file; OUT appears only when every chunk verified.
func runDecryptFile(env *cliEnv, args []string) error {
	pos, err := parse(flag.NewFlagSet("decrypt-file", flag.ContinueOnError), args, 2)
	if err != nil {
		return err
	}
	in, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer in.Close()

	h, header, err := readEnvelopeHeader(in)
	if err != nil {
		return err
	}
	body := map[string]any{"key_id": h.KeyID, "cipher_text": h.CipherText,
		"datakey_cipher_length": strconv.Itoa(h.DataKeyLength)}
	if len(h.EncryptionContext) > 0 {
		body["encryption_context"] = h.EncryptionContext
	}
	var dk struct {
		DataKey string `json:"data_key"`
	}
	if err := env.call(http.MethodPost, "kms/decrypt-datakey", body, &dk); err != nil {
		return err
	}
	dek, err := hex.DecodeString(dk.DataKey)
	if err != nil {
		return fmt.Errorf("the service answered an invalid data_key: %w", err)
	}
	defer clear(dek)

	return writeAtomically(pos[1], func(out *os.File) error { return openStream(out, in, dek, h, header) })
}

// writeAtomically writes path through a temporary file in the same directory, renamed
// into place only when write succeeds, so a failed decryption leaves no partial output.
func writeAtomically(path string, write func(*os.File) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kmsctl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())

	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func runCredentials(env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usageError{"credentials needs create, list, disable, enable or delete"}
	}
	sub, args := args[0], args[1:]
	if isHelpFlag(sub) {
		return helpRequest{}
	}

	switch sub {
	case "create":
		fs := flag.NewFlagSet("credentials create", flag.ContinueOnError)
		role := fs.String("role", "crypto-user", "admin, key-manager, crypto-user or read-only")
		project := fs.String("project", "", "project id (default: the caller's)")
		domain := fs.String("domain", "", "domain id (default: the caller's)")
		user := fs.String("user", "", "user id (default: generated)")
		if _, err := parse(fs, args, 0); err != nil {
			return err
		}
		var out map[string]any
		body := map[string]any{"role": *role, "project_id": *project, "domain_id": *domain, "user_id": *user}
		if err := env.call(http.MethodPost, "kms-admin/credentials", body, &out); err != nil {
			return err
		}
		return printJSON(env.stdout, out)
	case "list":
		if _, err := parse(flag.NewFlagSet("credentials list", flag.ContinueOnError), args, 0); err != nil {
			return err
		}
		var out map[string]any
		if err := env.call(http.MethodGet, "kms-admin/credentials", nil, &out); err != nil {
			return err
		}
		return printJSON(env.stdout, out)
	case "disable", "enable", "delete":
		pos, err := parse(flag.NewFlagSet("credentials "+sub, flag.ContinueOnError), args, 1)
		if err != nil {
			return err
		}
		method, path := http.MethodPost, "kms-admin/credentials/"+pos[0]+"/"+sub
		if sub == "delete" {
			method, path = http.MethodDelete, "kms-admin/credentials/"+pos[0]
		}
		return env.call(method, path, nil, nil)
	default:
		return usageError{fmt.Sprintf("unknown credentials command %q", sub)}
	}
}
