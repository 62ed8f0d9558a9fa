package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"net/http"
	"strconv"
)

func init() {
	for _, op := range []string{"enable-key", "disable-key", "cancel-key-deletion",
		"enable-key-rotation", "disable-key-rotation", "get-key-rotation-status",
		"rotate-on-demand"} {
		commands[op] = command{op + " KEY", runKeyOperation(op)}
	}
	commands["schedule-key-deletion"] = command{"schedule-key-deletion KEY --days N (7 to 1096)",
		runScheduleKeyDeletion}
	commands["update-key-rotation-interval"] = command{
		"update-key-rotation-interval KEY --days N (30 to 365)", runUpdateKeyRotationInterval}
	commands["encrypt-data"] = command{"encrypt-data KEY TEXT [--aad TEXT]", runEncryptData}
	commands["decrypt-data"] = command{"decrypt-data CIPHERTEXT_BASE64 [--aad TEXT]", runDecryptData}
	commands["gen-random"] = command{"gen-random [--bits N] (8 to 8192, a multiple of 8)", runGenRandom}
	commands["re-encrypt"] = command{"re-encrypt CIPHERTEXT DESTINATION_KEY " +
		"[--source-aad TEXT] [--destination-aad TEXT]", runReEncrypt}
	commands["user-quotas"] = command{"user-quotas", runGetOperation("user-quotas")}
	commands["user-instances"] = command{"user-instances", runGetOperation("user-instances")}
}

// runKeyOperation returns the command that posts {key_id} to op and prints the response.
func runKeyOperation(op string) func(env *cliEnv, args []string) error {
	return func(env *cliEnv, args []string) error {
		pos, err := parse(flag.NewFlagSet(op, flag.ContinueOnError), args, 1)
		if err != nil {
			return err
		}
		return callPrintingJSON(env, http.MethodPost, "kms/"+op, map[string]any{"key_id": pos[0]})
	}
}

// runGetOperation returns the command that sends GET to op and prints the response.
func runGetOperation(op string) func(env *cliEnv, args []string) error {
	return func(env *cliEnv, args []string) error {
		if _, err := parse(flag.NewFlagSet(op, flag.ContinueOnError), args, 0); err != nil {
			return err
		}
		return callPrintingJSON(env, http.MethodGet, "kms/"+op, nil)
	}
}

func runScheduleKeyDeletion(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("schedule-key-deletion", flag.ContinueOnError)
	days := fs.Int("days", 0, "days until the key is destroyed, 7 to 1096 (required)")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *days == 0 {
		return usageError{"--days is required"}
	}

	body := map[string]any{"key_id": pos[0], "pending_days": strconv.Itoa(*days)}
	return callPrintingJSON(env, http.MethodPost, "kms/schedule-key-deletion", body)
}

func runUpdateKeyRotationInterval(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("update-key-rotation-interval", flag.ContinueOnError)
	days := fs.Int("days", 0, "rotation interval in days, 30 to 365 (required)")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *days == 0 {
		return usageError{"--days is required"}
	}

	body := map[string]any{"key_id": pos[0], "rotation_interval": *days}
	return callPrintingJSON(env, http.MethodPost, "kms/update-key-rotation-interval", body)
}

func runEncryptData(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("encrypt-data", flag.ContinueOnError)
	aad := fs.String("aad", "", "additional authenticated data")
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}

	body := map[string]any{"key_id": pos[0], "plain_text": pos[1]}
	if *aad != "" {
		body["additional_authenticated_data"] = *aad
	}
	return callPrintingJSON(env, http.MethodPost, "kms/encrypt-data", body)
}

func runDecryptData(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("decrypt-data", flag.ContinueOnError)
	aad := fs.String("aad", "", "additional authenticated data given to encrypt-data")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if _, err := base64.StdEncoding.DecodeString(pos[0]); err != nil {
		return usageError{fmt.Sprintf("CIPHERTEXT_BASE64 is not valid base64: %v", err)}
	}

	body := map[string]any{"cipher_text": pos[0]}
	if *aad != "" {
		body["additional_authenticated_data"] = *aad
	}
	return callPrintingJSON(env, http.MethodPost, "kms/decrypt-data", body)
}

func runGenRandom(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("gen-random", flag.ContinueOnError)
	bits := fs.Int("bits", 256, "random bits, a multiple of 8 from 8 to 8192")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}

	body := map[string]any{"random_data_length": strconv.Itoa(*bits)}
	return callPrintingJSON(env, http.MethodPost, "kms/gen-random", body)
}

func runReEncrypt(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("re-encrypt", flag.ContinueOnError)
	sourceAAD := fs.String("source-aad", "", "additional authenticated data of the ciphertext")
	destAAD := fs.String("destination-aad", "", "additional authenticated data to bind to the new ciphertext")
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}

	body := map[string]any{"cipher_text": pos[0], "destination_key_id": pos[1]}
	if *sourceAAD != "" {
		body["source_additional_authenticated_data"] = *sourceAAD
	}
	if *destAAD != "" {
		body["destination_additional_authenticated_data"] = *destAAD
	}
	return callPrintingJSON(env, http.MethodPost, "kms/re-encrypt", body)
}
