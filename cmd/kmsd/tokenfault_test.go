package main

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dataKeyClient sends signed data-key requests to one kmsd with the admin credential.
type dataKeyClient struct {
	p                 *kmsdProcess
	ak, sk, projectID string
	keyID             string
}

// call posts body to op and returns the status, the KMS error code (empty on success)
// and the decoded body, or status 0 when the request fails.
func (c dataKeyClient) call(t *testing.T, op string, body []byte) (int, string, map[string]any) {
	req := signedRequest(t, c.p, op, body, c.ak, c.sk, c.projectID)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil
	}
	defer res.Body.Close()

	raw, _ := io.ReadAll(res.Body)
	var decoded map[string]any
	_ = json.Unmarshal(raw, &decoded)
	code := ""
	if e, ok := decoded["error"].(map[string]any); ok {
		code, _ = e["error_code"].(string)
	}
	return res.StatusCode, code, decoded
}

// createDataKey returns the plaintext and ciphertext of a new 256-bit data key, or the
// status and error code of the failed request.
func (c dataKeyClient) createDataKey(t *testing.T) (plain, cipher string, status int, code string) {
	body := fmt.Appendf(nil, `{"key_id":%q,"datakey_length":"256"}`, c.keyID)
	status, code, decoded := c.call(t, "create-datakey", body)
	if status != http.StatusOK {
		return "", "", status, code
	}
	plain, _ = decoded["plain_text"].(string)
	cipher, _ = decoded["cipher_text"].(string)
	return plain, cipher, status, ""
}

// decryptDataKey returns the plaintext of cipher, or the status and error code.
func (c dataKeyClient) decryptDataKey(t *testing.T, cipher string) (plain string, status int, code string) {
	body := fmt.Appendf(nil, `{"key_id":%q,"cipher_text":%q,"datakey_cipher_length":"32"}`,
		c.keyID, cipher)
	status, code, decoded := c.call(t, "decrypt-datakey", body)
	if status != http.StatusOK {
		return "", status, code
	}
	plain, _ = decoded["data_key"].(string)
	return plain, status, ""
}

// dataKey is a data key that kmsd acknowledged with 200.
type dataKey struct{ plain, cipher string }

// faultLoad runs data-key requests from several workers until stop is closed, keeping
// each acknowledged data key and counting responses by status and error code.
type faultLoad struct {
	mu       sync.Mutex
	keys     []dataKey
	answers  map[string]int // "status code", for example "503 KMS.0102"
	wrong    []string       // ciphertexts that decrypt-datakey returned another plaintext for
	requests atomic.Int64
}

func (l *faultLoad) record(status int, code string) {
	l.requests.Add(1)
	l.mu.Lock()
	l.answers[fmt.Sprintf("%d %s", status, code)]++
	l.mu.Unlock()
}

// count returns how many answers had status and code.
func (l *faultLoad) count(status int, code string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answers[fmt.Sprintf("%d %s", status, code)]
}

// work creates a data key and decrypts it again, maxRequests times at most.
func (l *faultLoad) work(t *testing.T, c dataKeyClient, stop <-chan struct{}, maxRequests int) {
	for range maxRequests {
		select {
		case <-stop:
			return
		default:
		}

		plain, cipher, status, code := c.createDataKey(t)
		l.record(status, code)
		if status != http.StatusOK {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.keys = append(l.keys, dataKey{plain: plain, cipher: cipher})
		l.mu.Unlock()

		got, status, code := c.decryptDataKey(t, cipher)
		l.record(status, code)
		if status == http.StatusOK && !strings.EqualFold(got, plain) {
			l.mu.Lock()
			l.wrong = append(l.wrong, cipher)
			l.mu.Unlock()
		}
	}
}

// startWithKey starts kmsd on a fresh embedded data directory, waits until it is ready
// and creates a key with alias. It returns the process, the data directory and a client
// of that key with the admin credential.
func startWithKey(t *testing.T, alias string) (*kmsdProcess, string, dataKeyClient) {
	t.Helper()

	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", alias))
	ak, sk, projectID := readAdmin(t, dataDir)
	return p, dataDir, dataKeyClient{p: p, ak: ak, sk: sk, projectID: projectID, keyID: keyID}
}

// TestKmsdRecoversFromTokenDirectoryMove moves the token directory of the embedded
// default away and back under a load of four workers. While it is away, kmsd must return
// 503 with KMS.0102 and fail /readyz. Once it is back, kmsd must serve again without a
// restart and decrypt every data key it acknowledged.
func TestKmsdRecoversFromTokenDirectoryMove(t *testing.T) {
	p, dataDir, c := startWithKey(t, "token-move")

	load := &faultLoad{answers: make(map[string]int)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { load.work(t, c, stop, 20000) })
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopLoad()

	waitUntil(t, p, "100 acknowledged data keys", func() bool {
		return load.count(http.StatusOK, "") >= 100
	})

	tokens := filepath.Join(dataDir, "tokens")
	away := filepath.Join(t.TempDir(), "tokens-away")
	if err := os.Rename(tokens, away); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, p, "/readyz 503 with the token away", func() bool {
		status, _ := p.get("/readyz")
		return status == http.StatusServiceUnavailable
	})
	waitUntil(t, p, "503 KMS.0102 answers with the token away", func() bool {
		return load.count(http.StatusServiceUnavailable, "KMS.0102") >= 10
	})
	if err := os.Rename(away, tokens); err != nil {
		t.Fatal(err)
	}

	p.waitFor(t, "/readyz", http.StatusOK, 60*time.Second)
	recovered := load.count(http.StatusOK, "")
	waitUntil(t, p, "200 answers after the token is back", func() bool {
		return load.count(http.StatusOK, "") >= recovered+100
	})
	stopLoad()

	load.mu.Lock()
	t.Logf("answers during the test: %v", load.answers)
	for answer := range load.answers {
		if !strings.HasPrefix(answer, "200 ") && answer != "503 KMS.0102" {
			t.Errorf("kmsd answered %q %d times, expected only 200 and 503 KMS.0102",
				answer, load.answers[answer])
		}
	}
	if len(load.wrong) > 0 {
		t.Errorf("decrypt-datakey returned another data key for %d ciphertexts", len(load.wrong))
	}
	keys := load.keys
	load.mu.Unlock()

	for i, k := range keys {
		got, status, code := c.decryptDataKey(t, k.cipher)
		if status != http.StatusOK {
			t.Fatalf("data key %d of %d after recovery: status %d %s", i, len(keys), status, code)
		}
		if !strings.EqualFold(got, k.plain) {
			t.Fatalf("data key %d of %d after recovery: another plaintext", i, len(keys))
		}
	}
	if got := p.metric(t, "kms_token_reconnects_total"); got < 1 {
		t.Errorf("kms_token_reconnects_total = %v, expected at least 1", got)
	}
	p.stop(t)
}

// waitUntil polls cond every 50 ms for at most 60 s, failing t with what and the logs.
func waitUntil(t *testing.T, p *kmsdProcess, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 60 s; logs:\n%s", what, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKmsdNotReadyWithTokenOfAnotherStore starts kmsd on a store that holds credentials,
// with a fresh token in place of the one that sealed them. kmsd must log the mismatch
// once, stay not ready and generate no key in the fresh token. With the old token put
// back, the old credentials must work again.
func TestKmsdNotReadyWithTokenOfAnotherStore(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	kmsctl(t, p, dataDir, "create-key", "--alias", "before-swap")
	ak, sk, projectID := readAdmin(t, dataDir)
	p.stop(t)

	// With its token directory empty, and no record that the data directory held a
	// token, kmsd initialises a fresh token there. (With the record, which every start
	// writes, it refuses to start instead: TestKmsdRefusesLostToken.) A data directory
	// from before the record existed is in this state.
	tokens := filepath.Join(dataDir, "tokens")
	old := filepath.Join(t.TempDir(), "old-tokens")
	if err := os.Rename(tokens, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dataDir, "known-tokens.json")); err != nil {
		t.Fatal(err)
	}
	p = launchKmsd(t, []string{"--data-dir", dataDir})
	const mismatch = "kmsd is not ready: the token does not match the store"
	waitUntil(t, p, "mismatch error in the log", func() bool {
		return strings.Contains(p.logs.String(), mismatch)
	})

	if status, body := p.get("/readyz"); status != http.StatusServiceUnavailable ||
		!strings.Contains(body, reasonTokenMismatch) {
		t.Errorf("/readyz with the fresh token: status %d %s, expected 503 with the reason %q",
			status, body, reasonTokenMismatch)
	}
	res := postSigned(t, p, "list-keys", []byte(`{}`), ak, sk, projectID)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("list-keys with the fresh token: status %d, expected 503", res.StatusCode)
	}
	p.stop(t)

	logs := p.logs.String()
	if n := strings.Count(logs, mismatch); n != 1 {
		t.Errorf("the log has %d mismatch errors, expected 1:\n%s", n, logs)
	}
	if strings.Contains(logs, "sealing key generated") {
		t.Errorf("kmsd generated a sealing key in the fresh token:\n%s", logs)
	}
	if objects := tokenKeyObjects(t, dataDir); len(objects) != 0 {
		t.Errorf("the fresh token holds key objects %v, expected none", objects)
	}

	if err := os.RemoveAll(tokens); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, tokens); err != nil {
		t.Fatal(err)
	}
	p = launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	if res := postSigned(t, p, "list-keys", []byte(`{}`), ak, sk, projectID); res.StatusCode != http.StatusOK {
		t.Errorf("list-keys with the old token back: status %d, expected 200", res.StatusCode)
	}
	p.stop(t)
}

// initStrayToken initialises a SoftHSM2 token labelled kms with the user PIN of
// dataDir's embedded token, in a token directory of its own, and returns that directory.
// It runs softhsm2-util, from the same Debian package as the library.
func initStrayToken(t *testing.T, dataDir string) string {
	t.Helper()

	pin, err := os.ReadFile(filepath.Join(dataDir, "user-pin"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "kms",
		"--so-pin", "stray-so-pin-1234", "--pin", strings.TrimSpace(string(pin)))
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return tokens
}

// TestKmsdRefusesReplacedToken puts another token, with the same label and PIN, in the
// place of the embedded token while kmsd serves. kmsd must not use it: calls get 503
// KMS.0102 and no key is made in it. With the first token back, the data keys made
// before decrypt again.
func TestKmsdRefusesReplacedToken(t *testing.T) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skip("softhsm2-util is not installed")
	}
	p, dataDir, c := startWithKey(t, "token-swap")
	plain, cipher, status, code := c.createDataKey(t)
	if status != http.StatusOK {
		t.Fatalf("create-datakey before the swap: status %d %s", status, code)
	}

	stray := initStrayToken(t, dataDir)
	connects := strings.Count(p.logs.String(), "token connected")
	tokens := filepath.Join(dataDir, "tokens")
	away := filepath.Join(t.TempDir(), "tokens-away")
	if err := os.Rename(tokens, away); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(stray, tokens); err != nil {
		t.Fatal(err)
	}

	waitUntil(t, p, "the replaced token reported in the log", func() bool {
		_, _, _, _ = c.createDataKey(t)
		return strings.Contains(p.logs.String(), "token replaced")
	})
	if status, _ := p.get("/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the other token: status %d, expected 503", status)
	}
	for range 3 {
		if _, _, status, code := c.createDataKey(t); status != http.StatusServiceUnavailable ||
			code != "KMS.0102" {
			t.Errorf("create-datakey with the other token: %d %s, expected 503 KMS.0102",
				status, code)
		}
	}
	res := postSigned(t, p, "create-key", []byte(`{"key_alias":"in-other-token"}`), c.ak,
		c.sk, c.projectID)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("create-key with the other token: status %d, expected 503", res.StatusCode)
	}
	if n := strings.Count(p.logs.String(), "token connected"); n != connects {
		t.Errorf("kmsd connected %d times with the other token in place:\n%s",
			n-connects, p.logs)
	}

	if err := os.Rename(tokens, stray); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, tokens); err != nil {
		t.Fatal(err)
	}
	checkDecryptsWhenReady(t, p, c, plain, cipher)
	p.stop(t)
}

// TestKmsdRefusesTokenSwappedInPlace puts another token's files, with the same label and
// PIN, in the folder of the token that kmsd is connected to, which keeps the connection
// open. kmsd must notice the new serial number before it creates a key: create-key gets
// 503 and no key is made in the other token.
func TestKmsdRefusesTokenSwappedInPlace(t *testing.T) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skip("softhsm2-util is not installed")
	}
	p, dataDir, c := startWithKey(t, "token-in-place")
	plain, cipher, status, code := c.createDataKey(t)
	if status != http.StatusOK {
		t.Fatalf("create-datakey before the swap: status %d %s", status, code)
	}

	tokenDir := onlyEntry(t, filepath.Join(dataDir, "tokens"))
	strayDir := onlyEntry(t, initStrayToken(t, dataDir))
	generated := strings.Count(p.logs.String(), `msg="key generated"`)
	away := filepath.Join(t.TempDir(), "token-away")
	if err := os.Rename(tokenDir, away); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", strayDir, tokenDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the other token's files: %v\n%s", err, out)
	}

	res := postSigned(t, p, "create-key", []byte(`{"key_alias":"in-other-token"}`), c.ak,
		c.sk, c.projectID)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("create-key with the other token's files in place: status %d, expected 503",
			res.StatusCode)
	}
	waitUntil(t, p, "the replaced token reported in the log", func() bool {
		return strings.Contains(p.logs.String(), "token replaced")
	})
	if status, _ := p.get("/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the other token's files in place: status %d, expected 503",
			status)
	}
	if n := strings.Count(p.logs.String(), `msg="key generated"`); n != generated {
		t.Errorf("kmsd generated %d keys with the other token in place:\n%s", n-generated,
			p.logs)
	}

	if err := os.RemoveAll(tokenDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, tokenDir); err != nil {
		t.Fatal(err)
	}
	checkDecryptsWhenReady(t, p, c, plain, cipher)
	p.stop(t)
}

// onlyEntry returns the path of the one entry of dir, and fails t when dir holds another
// number of entries.
func onlyEntry(t *testing.T, dir string) string {
	t.Helper()

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("%s holds %d entries, expected 1", dir, len(entries))
	}
	return filepath.Join(dir, entries[0].Name())
}

// TestKmsdNotReadyWithAnotherKmsdsToken starts kmsd on a store with the token of another
// kmsd, which has the same label and PIN and its own credential sealing key under the
// same reference. kmsd must report that the token does not match the store, not serve
// with a key that opens none of the store's credentials.
func TestKmsdNotReadyWithAnotherKmsdsToken(t *testing.T) {
	first := filepath.Join(t.TempDir(), "first")
	p := launchKmsd(t, []string{"--data-dir", first})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	p.stop(t)

	// The second data directory gets the first one's PIN before its token is made.
	second := filepath.Join(t.TempDir(), "second")
	if err := os.MkdirAll(second, 0o700); err != nil {
		t.Fatal(err)
	}
	pin, err := os.ReadFile(filepath.Join(first, "user-pin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, "user-pin"), pin, 0o600); err != nil {
		t.Fatal(err)
	}
	p = launchKmsd(t, []string{"--data-dir", second})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	p.stop(t)

	if err := os.Rename(filepath.Join(first, "tokens"), filepath.Join(t.TempDir(), "kept")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(second, "tokens"), filepath.Join(first, "tokens")); err != nil {
		t.Fatal(err)
	}
	p = launchKmsd(t, []string{"--data-dir", first})
	waitUntil(t, p, "mismatch error in the log", func() bool {
		return strings.Contains(p.logs.String(), "does not open the store's credentials")
	})
	if status, body := p.get("/readyz"); status != http.StatusServiceUnavailable ||
		!strings.Contains(body, reasonTokenMismatch) {
		t.Errorf("/readyz with the other kmsd's token: status %d %s, expected 503 with %q",
			status, body, reasonTokenMismatch)
	}
	p.stop(t)
}

// checkDecryptsWhenReady waits until kmsd is ready again, then checks that cipher, a data
// key made before a token fault, still decrypts to plain.
func checkDecryptsWhenReady(t *testing.T, p *kmsdProcess, c dataKeyClient, plain, cipher string) {
	t.Helper()

	p.waitFor(t, "/readyz", http.StatusOK, 60*time.Second)
	got, status, code := c.decryptDataKey(t, cipher)
	if status != http.StatusOK || !strings.EqualFold(got, plain) {
		t.Errorf("decrypt-datakey with the first token back: status %d %s, plaintext match %t",
			status, code, strings.EqualFold(got, plain))
	}
}

// TestKmsdRefusesOlderCopyOfItsToken puts back a backup of kmsd's own token, taken
// before a key was created. The copy has the serial number and the sealing key of the
// live token, so only the missing key shows that it is older. kmsd must stay not ready,
// name that key version, and create no key in the copy, also with an
// --accept-restored-token that names another version. With the version named, kmsd must
// mark it lost, disable its key and serve the keys the copy holds.
func TestKmsdRefusesOlderCopyOfItsToken(t *testing.T) {
	p, dataDir, older := startWithKey(t, "before-backup")
	olderPlain, olderCipher, status, code := older.createDataKey(t)
	if status != http.StatusOK {
		t.Fatalf("create-datakey before the backup: status %d %s", status, code)
	}
	p.stop(t)
	tokens := filepath.Join(dataDir, "tokens")
	backup := filepath.Join(t.TempDir(), "tokens-backup")
	if out, err := exec.Command("cp", "-a", tokens, backup).CombinedOutput(); err != nil {
		t.Fatalf("back up the token: %v\n%s", err, out)
	}

	p = launchKmsd(t, []string{"--data-dir", dataDir})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	newer := older
	newer.p = p
	newer.keyID = keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "after-backup"))
	_, newerCipher, status, code := newer.createDataKey(t)
	if status != http.StatusOK {
		t.Fatalf("create-datakey after the backup: status %d %s", status, code)
	}
	p.stop(t)

	if err := os.RemoveAll(tokens); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", backup, tokens).CombinedOutput(); err != nil {
		t.Fatalf("restore the token: %v\n%s", err, out)
	}
	objects := tokenKeyObjects(t, dataDir)
	missing := "kms:" + newer.keyID + ":1"

	p = launchKmsd(t, []string{"--data-dir", dataDir, "--accept-restored-token", "kms:other:1"})
	advice := "--accept-restored-token " + missing
	waitUntil(t, p, "the older token reported in the log", func() bool {
		return strings.Contains(p.logs.String(), advice)
	})
	if status, body := p.get("/readyz"); status != http.StatusServiceUnavailable ||
		!strings.Contains(body, reasonTokenMismatch) {
		t.Errorf("/readyz with the older token: status %d %s, expected 503 with the reason %q",
			status, body, reasonTokenMismatch)
	}
	older.p = p
	status, code, body := older.call(t, "create-key", []byte(`{"key_alias":"in-older-token"}`))
	if status != http.StatusServiceUnavailable || code != "KMS.0102" ||
		!strings.Contains(fmt.Sprint(body), "does not match its store") {
		t.Errorf("create-key with the older token: %d %s %v, expected 503 KMS.0102 saying "+
			"the token does not match", status, code, body)
	}
	p.stop(t)
	if ignored := "accept_restored_token is kms:other:1, not the missing version"; !strings.Contains(p.logs.String(), ignored) {
		t.Errorf("the log does not say that the other version accepts nothing:\n%s", p.logs)
	}
	if got := tokenKeyObjects(t, dataDir); len(got) != len(objects) {
		t.Errorf("the older token holds %v after kmsd ran, expected %v", got, objects)
	}
	if strings.Contains(p.logs.String(), "key version lost") {
		t.Errorf("kmsd marked versions lost with another version named:\n%s", p.logs)
	}

	p = launchKmsd(t, []string{"--data-dir", dataDir, "--accept-restored-token", missing})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	older.p, newer.p = p, p
	if got, status, code := older.decryptDataKey(t, olderCipher); status != http.StatusOK ||
		!strings.EqualFold(got, olderPlain) {
		t.Errorf("decrypt-datakey under the key in the copy: status %d %s", status, code)
	}
	if _, status, code := newer.decryptDataKey(t, newerCipher); status != http.StatusBadRequest ||
		code != "KMS.0209" {
		t.Errorf("decrypt-datakey under the lost key: %d %s, expected 400 KMS.0209", status, code)
	}
	keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "after-restore"))
	p.stop(t)
	for _, want := range []string{`msg="key version lost`, `msg="key disabled`,
		`msg="accepted a token restored from a backup`} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, p.logs)
		}
	}

	p = launchKmsd(t, []string{"--data-dir", dataDir, "--accept-restored-token", missing})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	p.stop(t)
	if !strings.Contains(p.logs.String(), "accept_restored_token is set but") {
		t.Errorf("a leftover accept_restored_token was not logged:\n%s", p.logs)
	}
}

// TestKmsdReplacesTornSealingKey starts kmsd on testdata/torn-sealing-key: the token,
// PINs and known-tokens.json of a data directory whose first start was killed while
// SoftHSM2 2.6.1 wrote the object file of the credential sealing key. That file
// (b10d70dd-....object) holds 739 of its 835 bytes, and the token rejects the key with
// CKR_MECHANISM_INVALID. No credential was stored yet, so kmsd must generate the key
// again and become ready, instead of retrying the admin credential for good.
func TestKmsdReplacesTornSealingKey(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	copyTree(t, filepath.Join("testdata", "torn-sealing-key"), dataDir)

	p := startKmsd(t, dataDir)
	p.stop(t)

	if !strings.Contains(p.logs.String(), "generating it again") {
		t.Errorf("kmsd did not log the replaced sealing key:\n%s", p.logs)
	}
}

// copyTree copies the files under src to dst with the modes kmsd gives its data
// directory (0700 folders, 0600 files), which git does not keep.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
