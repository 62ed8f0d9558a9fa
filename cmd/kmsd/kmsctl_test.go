package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// kmsctlResult is the outcome of one kmsctl run.
type kmsctlResult struct {
	stdout, stderr []byte
	exitCode       int
}

// runKmsctl runs kmsctl against p with the admin credential of dataDir, or with the
// access key pair in env (KMS_ACCESS_KEY=..., KMS_SECRET_KEY=..., KMS_PROJECT_ID=...),
// and returns its outcome whatever its exit status.
func runKmsctl(t *testing.T, p *kmsdProcess, dataDir string, env []string,
	args ...string) kmsctlResult {
	t.Helper()

	cmd := kmsctlCommand(t, p, dataDir, env, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()

	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run kmsctl %s: %v", strings.Join(args, " "), err)
	}
	return kmsctlResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(),
		exitCode: cmd.ProcessState.ExitCode()}
}

func kmsctlCommand(t *testing.T, p *kmsdProcess, dataDir string, env []string,
	args ...string) *exec.Cmd {
	t.Helper()

	bin := build(t, "github.com/hsmkms/kms/cmd/kmsctl", "kmsctl")
	cmd := exec.Command(bin, append([]string{"--endpoint", "http://" + p.addr}, args...)...)
	cmd.Env = append(os.Environ(), "KMS_DATA_DIR="+dataDir, "KMS_ACCESS_KEY=",
		"KMS_SECRET_KEY=", "KMS_PROJECT_ID=")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// mustKmsctl runs kmsctl and fails t unless it exits 0. It returns the standard output.
func mustKmsctl(t *testing.T, p *kmsdProcess, dataDir string, env []string,
	args ...string) []byte {
	t.Helper()

	r := runKmsctl(t, p, dataDir, env, args...)
	if r.exitCode != 0 {
		t.Fatalf("kmsctl %s: exit status %d\n%s", strings.Join(args, " "), r.exitCode,
			r.stderr)
	}
	return r.stdout
}

// kmsctlFor returns a function that runs kmsctl with the admin credential of dataDir,
// fails t unless it exits 0, and returns its standard output.
func kmsctlFor(t *testing.T, p *kmsdProcess, dataDir string) func(args ...string) []byte {
	return func(args ...string) []byte {
		t.Helper()
		return mustKmsctl(t, p, dataDir, nil, args...)
	}
}

// field returns the value at the path of object keys in a decoded JSON object, or nil.
func field(m map[string]any, path ...string) any {
	var v any = m
	for _, key := range path {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[key]
	}
	return v
}

// checkField fails t unless the JSON output has want at path.
func checkField(t *testing.T, what string, out []byte, want any, path ...string) {
	t.Helper()
	if got := field(decodeJSON(t, out), path...); got != want {
		t.Errorf("%s: %s = %v, want %v: %s", what, strings.Join(path, "."), got, want, out)
	}
}

// listed returns the values of key in the objects of the JSON array at path.
func listed(t *testing.T, out []byte, key string, path ...string) []string {
	t.Helper()
	items, _ := field(decodeJSON(t, out), path...).([]any)
	var values []string
	for _, item := range items {
		obj, _ := item.(map[string]any)
		s, _ := obj[key].(string)
		values = append(values, s)
	}
	return values
}

// listedAliases returns the aliases in a list-aliases output: a JSON array of one page
// object, the shape that the Huawei Cloud SDK decodes.
func listedAliases(t *testing.T, out []byte) []string {
	t.Helper()

	var pages []struct {
		Aliases []struct {
			Alias string `json:"alias"`
		} `json:"aliases"`
	}
	if err := json.Unmarshal(out, &pages); err != nil || len(pages) != 1 {
		t.Fatalf("list-aliases printed %s, want an array of one page (error %v)", out, err)
	}
	var aliases []string
	for _, a := range pages[0].Aliases {
		aliases = append(aliases, a.Alias)
	}
	return aliases
}

// quotaUsed returns the used count of quota type typ in a user-quotas output.
func quotaUsed(t *testing.T, out []byte, typ string) float64 {
	t.Helper()
	resources, _ := field(decodeJSON(t, out), "quotas", "resources").([]any)
	for _, res := range resources {
		entry, _ := res.(map[string]any)
		if entry["type"] == typ {
			used, _ := entry["used"].(float64)
			return used
		}
	}
	t.Fatalf("user-quotas has no %s resource: %s", typ, out)
	return 0
}

// TestKmsctlEndToEnd runs the kmsctl commands of every operation group against one
// kmsd and checks what they print: lifecycle and data, aliases, tags, grants, and the
// audit trail, whose export must verify and whose tampered copy must not.
func TestKmsctlEndToEnd(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := startKmsd(t, dataDir)
	ctl := kmsctlFor(t, p, dataDir)

	keyID := keyIDOf(t, ctl("create-key", "--alias", "ctl-main"))
	destID := keyIDOf(t, ctl("create-key", "--alias", "ctl-dest"))

	t.Run("lifecycle", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		checkField(t, "disable-key", ctl("disable-key", keyID), "3", "key_info", "key_state")
		checkField(t, "describe-key of a disabled key", ctl("describe-key", keyID), "3",
			"key_info", "key_state")
		checkField(t, "enable-key", ctl("enable-key", keyID), "2", "key_info", "key_state")

		checkField(t, "schedule-key-deletion",
			ctl("schedule-key-deletion", keyID, "--days", "7"), "4", "key_state")
		checkField(t, "cancel-key-deletion", ctl("cancel-key-deletion", keyID), "3",
			"key_state")
		ctl("enable-key", keyID)
		checkField(t, "describe-key after cancel and enable", ctl("describe-key", keyID), "2",
			"key_info", "key_state")

		ctl("enable-key-rotation", keyID)
		ctl("update-key-rotation-interval", keyID, "--days", "30")
		checkField(t, "rotate-on-demand", ctl("rotate-on-demand", keyID), keyID, "key_id")
		status := ctl("get-key-rotation-status", keyID)
		checkField(t, "get-key-rotation-status", status, true, "key_rotation_enabled")
		checkField(t, "get-key-rotation-status", status, float64(30), "rotation_interval")
		checkField(t, "get-key-rotation-status", status, float64(1), "number_of_rotations")
		if got := listed(t, status, "material_id", "key_materials"); !slices.Equal(got,
			[]string{"1", "2"}) {
			t.Errorf("get-key-rotation-status material ids = %v, want [1 2]: %s", got, status)
		}
		ctl("disable-key-rotation", keyID)
		checkField(t, "get-key-rotation-status after disable-key-rotation",
			ctl("get-key-rotation-status", keyID), false, "key_rotation_enabled")
	})

	t.Run("data", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		enc := decodeJSON(t, ctl("encrypt-data", keyID, "kmsctl plain text", "--aad", "ctl"))
		cipher, _ := enc["cipher_text"].(string)
		if enc["key_id"] != keyID || cipher == "" {
			t.Fatalf("encrypt-data printed key_id %v and cipher_text %q", enc["key_id"], cipher)
		}
		checkField(t, "decrypt-data", ctl("decrypt-data", cipher, "--aad", "ctl"),
			"kmsctl plain text", "plain_text")
		wrongAAD := runKmsctl(t, p, dataDir, nil, "decrypt-data", cipher, "--aad", "other")
		if wrongAAD.exitCode != 1 {
			t.Errorf("decrypt-data with the wrong AAD: exit status %d, want 1: %s",
				wrongAAD.exitCode, wrongAAD.stderr)
		}

		moved := decodeJSON(t, ctl("re-encrypt", cipher, destID, "--source-aad", "ctl",
			"--destination-aad", "moved"))
		if moved["key_id"] != destID || moved["source_key_id"] != keyID {
			t.Errorf("re-encrypt printed key_id %v source_key_id %v, want %s and %s",
				moved["key_id"], moved["source_key_id"], destID, keyID)
		}
		movedCipher, _ := moved["cipher_text"].(string)
		checkField(t, "decrypt-data of the re-encrypted text",
			ctl("decrypt-data", movedCipher, "--aad", "moved"), "kmsctl plain text",
			"plain_text")

		random, _ := field(decodeJSON(t, ctl("gen-random", "--bits", "128")),
			"random_data").(string)
		if !regexp.MustCompile(`^[0-9a-fA-F]{32}$`).MatchString(random) {
			t.Errorf("gen-random --bits 128 printed random_data %q, want 32 hex digits", random)
		}
	})

	t.Run("aliases", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		ctl("create-alias", keyID, "alias/ctl-alias")
		aliases := ctl("list-aliases", "--key", keyID)
		if got := listedAliases(t, aliases); !slices.Equal(got,
			[]string{"alias/ctl-alias"}) {
			t.Errorf("list-aliases --key of the main key = %v: %s", got, aliases)
		}
		checkField(t, "describe-key by alias", ctl("describe-key", "alias/ctl-alias"), keyID,
			"key_info", "key_id")

		ctl("associate-alias", "alias/ctl-alias", destID)
		checkField(t, "describe-key by the moved alias",
			ctl("describe-key", "alias/ctl-alias"), destID, "key_info", "key_id")
		ctl("delete-alias", destID, "alias/ctl-alias")
		aliases = ctl("list-aliases")
		if got := listedAliases(t, aliases); len(got) != 0 {
			t.Errorf("list-aliases after delete-alias = %v, want none: %s", got, aliases)
		}

		checkField(t, "update-key-alias", ctl("update-key-alias", keyID, "ctl-renamed"),
			"ctl-renamed", "key_info", "key_alias")
		checkField(t, "update-key-description",
			ctl("update-key-description", keyID, "kmsctl test key"), "kmsctl test key",
			"key_info", "key_description")
		checkField(t, "describe-key after the updates", ctl("describe-key", keyID),
			"kmsctl test key", "key_info", "key_description")
	})

	t.Run("tags", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		ctl("create-tag", keyID, "env=prod")
		ctl("batch-tags", keyID, "create", "team=crypto", "tier=gold")
		tags := ctl("list-tags", keyID)
		if got := listed(t, tags, "key", "tags"); !slices.Equal(got,
			[]string{"env", "team", "tier"}) {
			t.Errorf("list-tags keys = %v, want [env team tier]: %s", got, tags)
		}
		if got := listed(t, ctl("project-tags"), "key", "tags"); !slices.Equal(got,
			[]string{"env", "team", "tier"}) {
			t.Errorf("project-tags keys = %v, want [env team tier]", got)
		}

		found := ctl("find-keys", "--tag", "env=prod")
		if got := listed(t, found, "resource_id", "resources"); !slices.Equal(got,
			[]string{keyID}) {
			t.Errorf("find-keys --tag env=prod = %v, want [%s]: %s", got, keyID, found)
		}
		checkField(t, "find-keys --count", ctl("find-keys", "--tag", "env", "--count"),
			float64(1), "total_count")

		ctl("delete-tag", keyID, "env")
		ctl("batch-tags", keyID, "delete", "team", "tier")
		tags = ctl("list-tags", keyID)
		if got := listed(t, tags, "key", "tags"); len(got) != 0 {
			t.Errorf("list-tags after deleting every tag = %v: %s", got, tags)
		}
	})

	t.Run("grants", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		grantee := decodeJSON(t, ctl("credentials", "create", "--role", "read-only",
			"--user", "ctl-grantee"))
		granteeEnv := []string{"KMS_ACCESS_KEY=" + grantee["access_key"].(string),
			"KMS_SECRET_KEY=" + grantee["secret_key"].(string),
			"KMS_PROJECT_ID=" + grantee["project_id"].(string)}
		adminUserID := adminUserIDOf(t, ctl("credentials", "list"), dataDir)

		dk := decodeJSON(t, ctl("create-datakey", keyID))
		cipher, plain := dk["cipher_text"].(string), dk["plain_text"].(string)
		denied := runKmsctl(t, p, dataDir, granteeEnv, "decrypt-datakey", keyID,
			"--cipher", cipher)
		if denied.exitCode != 1 || !bytes.Contains(denied.stderr, []byte("KMS.0307")) {
			t.Errorf("decrypt-datakey without a grant: exit status %d, want 1 and KMS.0307: %s",
				denied.exitCode, denied.stderr)
		}

		grantID, _ := decodeJSON(t, ctl("create-grant", keyID, "--grantee", "ctl-grantee",
			"--operations", "decrypt-datakey", "--name", "ctl-grant",
			"--retiring", adminUserID))["grant_id"].(string)
		if grantID == "" {
			t.Fatal("create-grant printed no grant_id")
		}
		checkField(t, "decrypt-datakey with a grant", mustKmsctl(t, p, dataDir, granteeEnv,
			"decrypt-datakey", keyID, "--cipher", cipher), plain, "data_key")

		if got := listed(t, ctl("list-grants", keyID), "grant_id", "grants"); !slices.Equal(
			got, []string{grantID}) {
			t.Errorf("list-grants = %v, want [%s]", got, grantID)
		}
		if got := listed(t, ctl("list-retirable-grants"), "grant_id", "grants"); !slices.Equal(
			got, []string{grantID}) {
			t.Errorf("list-retirable-grants = %v, want [%s]", got, grantID)
		}
		if used := quotaUsed(t, ctl("user-quotas"), "grant_per_CMK"); used != 1 {
			t.Errorf("user-quotas grant_per_CMK used = %v, want 1", used)
		}
		if used := quotaUsed(t, ctl("user-quotas"), "CMK"); used != 2 {
			t.Errorf("user-quotas CMK used = %v, want 2", used)
		}

		ctl("retire-grant", keyID, grantID)
		if got := listed(t, ctl("list-grants", keyID), "grant_id", "grants"); len(got) != 0 {
			t.Errorf("list-grants after retire-grant = %v, want none", got)
		}

		revoked, _ := decodeJSON(t, ctl("create-grant", keyID, "--grantee", "ctl-grantee",
			"--operations", "decrypt-datakey"))["grant_id"].(string)
		ctl("revoke-grant", keyID, revoked)
		if got := listed(t, ctl("list-grants", keyID), "grant_id", "grants"); len(got) != 0 {
			t.Errorf("list-grants after revoke-grant = %v, want none", got)
		}
		if used := quotaUsed(t, ctl("user-quotas"), "grant_per_CMK"); used != 0 {
			t.Errorf("user-quotas grant_per_CMK used after revoke = %v, want 0", used)
		}

		exported := ctl("audit", "export")
		if !bytes.Contains(exported, []byte(`"grant_id":"`+grantID+`"`)) {
			t.Errorf("the audit export has no record naming grant %s", grantID)
		}
	})

	t.Run("audit", func(t *testing.T) {
		ctl := kmsctlFor(t, p, dataDir)
		work := t.TempDir()
		keyPath := filepath.Join(work, "audit-key.pem")
		exportPath := filepath.Join(work, "audit.jsonl")

		ctl("audit", "public-key", "--out", keyPath)
		if pem := ctl("audit", "public-key"); !bytes.Equal(pem, mustRead(t, keyPath)) {
			t.Errorf("audit public-key printed a key that differs from its --out file")
		}

		tailed := tailOneRecord(t, p, dataDir, ctl)
		if tailed["type"] != "record" || tailed["operation"] != "gen-random" {
			t.Errorf("audit tail printed %v, want a gen-random record", tailed)
		}

		ctl("audit", "export", "--out", exportPath)
		verified := ctl("audit", "verify", "--in", exportPath, "--public-key", keyPath)
		if !bytes.Contains(verified, []byte("verified 1 chains")) {
			t.Errorf("audit verify of the export printed %s", verified)
		}

		tamperedPath := filepath.Join(work, "tampered.jsonl")
		tamperExport(t, exportPath, tamperedPath)
		r := runKmsctl(t, p, dataDir, nil, "audit", "verify", "--in", tamperedPath,
			"--public-key", keyPath)
		if r.exitCode == 0 {
			t.Errorf("audit verify of a tampered export exited 0: %s", r.stdout)
		}

		p.stop(t)
		verifyAuditTrail(t, p, dataDir, keyPath)
	})
}

// adminUserIDOf returns the user id of the admin credential of dataDir from the output
// of credentials list.
func adminUserIDOf(t *testing.T, list []byte, dataDir string) string {
	t.Helper()

	ak, _, _ := readAdmin(t, dataDir)
	creds, _ := field(decodeJSON(t, list), "credentials").([]any)
	for _, c := range creds {
		entry, _ := c.(map[string]any)
		if entry["access_key"] == ak {
			id, _ := entry["user_id"].(string)
			return id
		}
	}
	t.Fatalf("credentials list has no entry for the admin access key: %s", list)
	return ""
}

// tailOneRecord starts kmsctl audit tail, makes gen-random calls until the tail prints a
// line, and returns that line. The tail runs until it is killed, so it is killed here.
func tailOneRecord(t *testing.T, p *kmsdProcess, dataDir string,
	ctl func(args ...string) []byte) map[string]any {
	t.Helper()

	cmd := kmsctlCommand(t, p, dataDir, nil, "audit", "tail", "--interval", "50ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		if scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()

	// The tail skips the records that exist when it starts, and the test cannot see
	// when that first read is done, so it makes calls until one of them is printed.
	for range 100 {
		ctl("gen-random", "--bits", "64")
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("audit tail ended without printing a record: %s", stderr.Bytes())
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("audit tail printed a line that is not JSON: %v: %s", err, line)
			}
			return m
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("audit tail printed nothing after 100 calls: %s", stderr.Bytes())
	return nil
}

// tamperExport copies the export at from to to with the operation of its first record
// changed, as someone hiding a call would.
func tamperExport(t *testing.T, from, to string) {
	t.Helper()

	lines := strings.SplitAfter(string(mustRead(t, from)), "\n")
	changed := false
	for i, line := range lines {
		if strings.Contains(line, `"type":"record"`) &&
			strings.Contains(line, `"operation":"create-key"`) {
			lines[i] = strings.Replace(line, `"operation":"create-key"`,
				`"operation":"list-keys"`, 1)
			changed = true
			break
		}
	}
	if !changed {
		t.Fatalf("the export %s has no create-key record to tamper with", from)
	}
	if err := os.WriteFile(to, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKmsctlAuditExportDamagedChain checks that an export with a damaged chain file
// still writes the other chains to --out, marks the damaged chain with a "damaged" line
// that fails verification, and exits 1.
func TestKmsctlAuditExportDamagedChain(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := startKmsd(t, dataDir)
	kmsctl(t, p, dataDir, "gen-random", "--bits", "256")
	p.stop(t)

	chains, err := filepath.Glob(filepath.Join(dataDir, "kms.db-audit", "*.jsonl"))
	if err != nil || len(chains) != 1 {
		t.Fatalf("chain files = %v, %v; want one", chains, err)
	}
	damagedID := strings.TrimSuffix(filepath.Base(chains[0]), ".jsonl")
	f, err := os.OpenFile(chains[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("garbage\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	p = startKmsd(t, dataDir)
	kmsctl(t, p, dataDir, "gen-random", "--bits", "256")
	exportPath := filepath.Join(t.TempDir(), "audit.jsonl")
	r := runKmsctl(t, p, dataDir, nil, "audit", "export", "--out", exportPath)
	if r.exitCode != 1 {
		t.Errorf("audit export exit status %d, want 1\n%s%s", r.exitCode, r.stdout, r.stderr)
	}
	if !bytes.Contains(r.stderr, []byte(damagedID)) {
		t.Errorf("audit export error names no damaged chain %s: %s", damagedID, r.stderr)
	}

	exported, err := os.ReadFile(exportPath)
	if err != nil {
		t.Fatalf("audit export wrote no file: %v", err)
	}
	if !bytes.Contains(exported, []byte(`"type":"damaged","chain_id":"`+damagedID+`"`)) {
		t.Errorf("the export has no damaged line for chain %s:\n%s", damagedID, exported)
	}
	if n := bytes.Count(exported, []byte(`"type":"record"`)); n < 1 {
		t.Errorf("the export has %d records of the intact chain, want at least 1", n)
	}
	p.stop(t)
}
