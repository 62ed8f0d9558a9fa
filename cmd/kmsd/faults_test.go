package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
)

// launchKmsd starts kmsd with args and env added to the test's environment, without
// waiting for it to become ready.
func launchKmsd(t *testing.T, args []string, env ...string) *kmsdProcess {
	t.Helper()
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")

	p := &kmsdProcess{addr: freeAddr(t), logs: &syncBuffer{}}
	p.cmd = exec.Command(bin, append([]string{"--listen", p.addr}, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})

	return p
}

// waitForFailedExit waits up to 30 s for p to exit, and fails the test unless it exits
// with an error. after names what should have ended kmsd, for the failure message.
func waitForFailedExit(t *testing.T, p *kmsdProcess, after string) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("kmsd exited with status 0, want an error; logs:\n%s", p.logs)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
		t.Fatalf("kmsd still runs 30 s after %s; logs:\n%s", after, p.logs)
	}
}

// get sends an unsigned GET to kmsd and returns the status and body, or status 0 when
// kmsd does not respond.
func (p *kmsdProcess) get(path string) (int, string) {
	res, err := http.Get("http://" + p.addr + path)
	if err != nil {
		return 0, ""
	}
	defer res.Body.Close()

	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// waitFor polls path every 100 ms until it responds with status, for at most limit.
func (p *kmsdProcess) waitFor(t *testing.T, path string, status int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if got, _ := p.get(path); got == status {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %v; logs:\n%s", path, status, limit, p.logs)
}

// metric returns the value of the /metrics sample that starts with series, or -1.
func (p *kmsdProcess) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body := p.get("/metrics")
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// externalToken initialises a token labelled label in base, a SoftHSM2 data directory
// of the test's own, and returns the kmsd arguments and environment that select it.
func externalToken(t *testing.T, base, label, dataDir string) ([]string, []string) {
	t.Helper()
	setup, err := softhsmtest.CreateToken(base, label)
	if err != nil {
		t.Fatal(err)
	}

	args := []string{"--data-dir", dataDir, "--pkcs11-module", setup.ModulePath,
		"--token-label", label, "--pin-file", setup.PINFile}
	return args, []string{"SOFTHSM2_CONF=" + setup.ConfPath}
}

func TestKmsdIdleSessionsClosed(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := launchKmsd(t, []string{"--data-dir", dataDir, "--session-idle-timeout", "2s"})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)

	keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "idle"))
	dek := strings.Repeat("ab", 32)
	kmsctl(t, p, dataDir, "encrypt-datakey", keyID, "--plain-hex", dek)

	// Longer than the idle timeout, so every pooled session has expired.
	time.Sleep(6 * time.Second)

	enc := decodeJSON(t, kmsctl(t, p, dataDir, "encrypt-datakey", keyID, "--plain-hex", dek))
	dec := decodeJSON(t, kmsctl(t, p, dataDir, "decrypt-datakey", keyID,
		"--cipher", enc["cipher_text"].(string), "--length", "32"))
	if !strings.EqualFold(dec["data_key"].(string), dek) {
		t.Errorf("data_key = %v, expected %s", dec["data_key"], dek)
	}
	if got := p.metric(t, "kms_token_sessions_expired_total"); got < 1 {
		t.Errorf("kms_token_sessions_expired_total = %v, expected at least 1", got)
	}
	p.stop(t)
}

func TestKmsdWaitsForMissingToken(t *testing.T) {
	base := t.TempDir()
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	// A token of another label gives the SoftHSM2 directory its configuration.
	other, err := softhsmtest.CreateToken(base, "other")
	if err != nil {
		t.Fatal(err)
	}
	const label, pin = "late", "late-user-pin-1234"
	p := launchKmsd(t, []string{"--data-dir", dataDir, "--pkcs11-module", other.ModulePath,
		"--token-label", label}, "SOFTHSM2_CONF="+other.ConfPath, "KMS_PIN="+pin)

	p.waitFor(t, "/healthz", http.StatusOK, 30*time.Second)
	status, body := p.get("/readyz")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no token: status %d, expected 503", status)
	}
	if !strings.Contains(body, "token unavailable") {
		t.Errorf("/readyz body %s, expected the reason token unavailable", body)
	}
	if strings.Contains(body, other.ModulePath) {
		t.Errorf("/readyz body %s names the module path", body)
	}
	res := postSigned(t, p, "list-keys", []byte(`{}`), "AK", "SK", strings.Repeat("0", 32))
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("list-keys with no token: status %d, expected 503", res.StatusCode)
	}
	if res.Header.Get("X-Request-Id") == "" {
		t.Error("list-keys with no token: no X-Request-Id header")
	}

	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label,
		"--so-pin", "late-so-pin-1234", "--pin", pin)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+other.ConfPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}

	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	kmsctl(t, p, dataDir, "create-key", "--alias", "after-init")

	if n := strings.Count(p.logs.String(), "token disconnected"); n != 1 {
		t.Errorf("the log has %d lines about the missing token, expected 1; logs:\n%s", n, p.logs)
	}
	p.stop(t)
}

func TestKmsdFindsTokenAfterSlotsChange(t *testing.T) {
	base := t.TempDir()
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	args, env := externalToken(t, base, "zz-kms", dataDir)

	p := launchKmsd(t, args, env...)
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "slots"))
	created := decodeJSON(t, kmsctl(t, p, dataDir, "create-datakey", keyID, "--bits", "256"))
	p.stop(t)

	// SoftHSM2 numbers slots by token directory on each C_Initialize, so another token
	// changes which slot holds zz-kms.
	if _, err := softhsmtest.CreateToken(base, "aa-other"); err != nil {
		t.Fatal(err)
	}

	p = launchKmsd(t, args, env...)
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	dec := decodeJSON(t, kmsctl(t, p, dataDir, "decrypt-datakey", keyID,
		"--cipher", created["cipher_text"].(string), "--length", "32"))
	if dec["data_key"] != created["plain_text"] {
		t.Errorf("data_key after the restart differs from create-datakey's plain_text")
	}
	p.stop(t)
}

func TestKmsdRejectsBadToken(t *testing.T) {
	base := t.TempDir()
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	args, env := externalToken(t, base, "kms", dataDir)
	module := args[3]
	notPKCS11 := "/lib/x86_64-linux-gnu/libz.so.1"
	if _, err := os.Stat(notPKCS11); err != nil {
		t.Skipf("no shared library to stand for a non-PKCS#11 module: %v", err)
	}
	wrongPIN := filepath.Join(t.TempDir(), "wrong-pin")
	if err := os.WriteFile(wrongPIN, []byte("not-the-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	directory := t.TempDir()

	tests := []struct {
		name     string
		module   string
		pinFile  string
		wantText string
	}{
		{"wrong PIN", module, wrongPIN, "PIN"},
		{"missing module", "/nonexistent/libpkcs11.so", "", "/nonexistent/libpkcs11.so"},
		{"directory", directory, "", directory},
		{"not a PKCS#11 library", notPKCS11, "", notPKCS11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runArgs := append([]string{}, args...)
			runArgs[3] = tt.module
			if tt.pinFile != "" {
				runArgs[7] = tt.pinFile
			}

			p := launchKmsd(t, runArgs, env...)
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("kmsd still runs after 30 s; logs:\n%s", p.logs)
			}

			if err == nil {
				t.Fatalf("kmsd exited with status 0; logs:\n%s", p.logs)
			}
			logs := p.logs.String()
			if !strings.Contains(logs, tt.wantText) {
				t.Errorf("logs do not name %q:\n%s", tt.wantText, logs)
			}
			if strings.Contains(logs, "panic") || strings.Contains(logs, "goroutine ") {
				t.Errorf("kmsd panicked:\n%s", logs)
			}
			if strings.Contains(logs, "not-the-pin") {
				t.Error("the log contains the PIN")
			}
		})
	}
}

// TestKmsdSIGTERMDuringRequests holds 100 data-key requests in flight (their bodies half
// sent), sends SIGTERM, then completes the bodies: each must get 200 or 503, and kmsd
// must exit with status 0.
func TestKmsdSIGTERMDuringRequests(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := launchKmsd(t, []string{"--data-dir", dataDir, "--shutdown-timeout", "60s"})
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "sigterm"))
	ak, sk, projectID := readAdmin(t, dataDir)
	keyPath := filepath.Join(t.TempDir(), "audit-key.pem")
	kmsctl(t, p, dataDir, "audit", "public-key", "--out", keyPath)

	const inFlight = 100
	body := []byte(fmt.Sprintf(`{"key_id":%q,"datakey_length":"256"}`, keyID))
	release := make(chan struct{})
	statuses := make(chan int, inFlight)
	var wg sync.WaitGroup
	for range inFlight {
		req := signedRequest(t, p, "create-datakey", body, ak, sk, projectID)
		req.Body = io.NopCloser(&gatedBody{first: body[:len(body)/2],
			rest: body[len(body)/2:], release: release})
		req.ContentLength = int64(len(body))
		wg.Go(func() {
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("in-flight request: %v", err)
				statuses <- 0
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		})
	}

	deadline := time.Now().Add(30 * time.Second)
	for p.metric(t, "kms_http_requests_in_flight") < inFlight {
		if time.Now().After(deadline) {
			t.Fatalf("kms_http_requests_in_flight did not reach %d; logs:\n%s", inFlight, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	close(statuses)

	answered := 0
	for status := range statuses {
		switch status {
		case http.StatusOK:
			answered++
		case http.StatusServiceUnavailable:
		default:
			t.Errorf("in-flight request: status %d, expected 200 or 503", status)
		}
	}
	t.Logf("%d of %d in-flight requests answered 200", answered, inFlight)

	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("kmsd exit: %v; logs:\n%s", err, p.logs)
	}
	verifyAuditTrail(t, p, dataDir, keyPath)
}

// verifyAuditTrail runs `kmsctl audit verify --require-signed-tail` on the SQLite file
// of dataDir, with the audit public key in keyPath, and fails t unless it exits 0. The
// kmsd p must have stopped cleanly, because only then is every record signed.
func verifyAuditTrail(t *testing.T, p *kmsdProcess, dataDir, keyPath string) {
	t.Helper()

	database := filepath.Join(dataDir, "kms.db")
	r := runKmsctl(t, p, dataDir, nil, "audit", "verify", "--database", database,
		"--public-key", keyPath, "--require-signed-tail")
	if r.exitCode != 0 {
		t.Fatalf("kmsctl audit verify --database %s: exit status %d\n%s%s", database,
			r.exitCode, r.stdout, r.stderr)
	}
	if !bytes.Contains(r.stdout, []byte("verified")) {
		t.Errorf("kmsctl audit verify printed no report: %s", r.stdout)
	}
}

// TestServeRepeatedInOneProcess runs serve twice in this process, each time until its
// context is cancelled, so the token library is finalised and initialised again.
func TestServeRepeatedInOneProcess(t *testing.T) {
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	dataDir := filepath.Join(t.TempDir(), "kms-data")

	for round := range 2 {
		addr := freeAddr(t)
		cfg, err := loadConfig([]string{"--data-dir", dataDir, "--listen", addr},
			envFrom(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		log := newLogger(cfg, logs)

		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- serve(ctx, cfg, os.Getenv, log) }()

		p := &kmsdProcess{addr: addr}
		deadline := time.Now().Add(30 * time.Second)
		for status, _ := p.get("/readyz"); status != http.StatusOK; status, _ = p.get("/readyz") {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("round %d: not ready within 30 s; logs:\n%s", round, logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		ak, sk, projectID := readAdmin(t, dataDir)
		if res := postSigned(t, p, "list-keys", []byte(`{}`), ak, sk, projectID); res.StatusCode != 200 {
			t.Errorf("round %d: list-keys status %d", round, res.StatusCode)
		}

		cancel()
		if err := <-served; err != nil {
			t.Fatalf("round %d: serve returned %v; logs:\n%s", round, err, logs)
		}
		for _, line := range []string{"HTTP server stopped", "token closed"} {
			if !strings.Contains(logs.String(), line) {
				t.Errorf("round %d: no %q in the log:\n%s", round, line, logs)
			}
		}
	}
}

// syncBuffer is a log sink that the test reads while serve writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func keyIDOf(t *testing.T, out []byte) string {
	t.Helper()
	info, _ := decodeJSON(t, out)["key_info"].(map[string]any)
	id, _ := info["key_id"].(string)
	if id == "" {
		t.Fatalf("create-key printed no key id: %s", out)
	}
	return id
}

// readAdmin returns the access key, secret key and project id of the admin credential
// that kmsd wrote to dataDir.
func readAdmin(t *testing.T, dataDir string) (ak, sk, projectID string) {
	t.Helper()
	m := decodeJSON(t, mustRead(t, filepath.Join(dataDir, auth.AdminCredentialsFile)))
	return m["access_key"].(string), m["secret_key"].(string), m["project_id"].(string)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedRequest returns a POST of body to the KMS operation op, signed with ak and sk.
func signedRequest(t *testing.T, p *kmsdProcess, op string, body []byte, ak, sk, projectID string) *http.Request {
	t.Helper()
	url := "http://" + p.addr + "/v1.0/" + projectID + "/kms/" + op
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	auth.Sign(req, body, ak, sk, time.Now())
	return req
}

func postSigned(t *testing.T, p *kmsdProcess, op string, body []byte, ak, sk, projectID string) *http.Response {
	t.Helper()
	res, err := http.DefaultClient.Do(signedRequest(t, p, op, body, ak, sk, projectID))
	if err != nil {
		t.Fatalf("POST %s: %v", op, err)
	}
	res.Body.Close()
	return res
}

// TestKmsdThroughP11KitProxy runs kmsd on a SoftHSM2 token reached through p11-kit's
// proxy module, whose C_GetFunctionList returns a list with a state of its own at every
// call. The token layer must notice that such a list does not reach its sessions and
// keep every GCM operation on miekg/pkcs11.
func TestKmsdThroughP11KitProxy(t *testing.T) {
	proxy := "/usr/lib/x86_64-linux-gnu/libp11-kit.so.0"
	if _, err := os.Stat(proxy); err != nil {
		t.Skipf("p11-kit's proxy module is not installed: %v", err)
	}
	module, err := softhsmsetup.FindModule()
	if err != nil {
		t.Skip(err)
	}

	base := t.TempDir()
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	args, env := externalToken(t, base, "proxied", dataDir)
	args[3] = proxy // the value of --pkcs11-module

	// p11-kit loads the modules listed in the user's configuration directory.
	home := t.TempDir()
	modules := filepath.Join(home, ".config", "pkcs11", "modules")
	if err := os.MkdirAll(modules, 0o700); err != nil {
		t.Fatal(err)
	}
	config := []byte("module: " + module + "\n")
	if err := os.WriteFile(filepath.Join(modules, "softhsm.module"), config, 0o600); err != nil {
		t.Fatal(err)
	}

	p := launchKmsd(t, args, append(env, "HOME="+home)...)
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)

	keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "proxied"))
	dek := strings.Repeat("cd", 32)
	enc := decodeJSON(t, kmsctl(t, p, dataDir, "encrypt-datakey", keyID, "--plain-hex", dek))
	dec := decodeJSON(t, kmsctl(t, p, dataDir, "decrypt-datakey", keyID,
		"--cipher", enc["cipher_text"].(string), "--length", "32"))
	if !strings.EqualFold(dec["data_key"].(string), dek) {
		t.Errorf("data_key = %v, expected %s", dec["data_key"], dek)
	}
	if !strings.Contains(p.logs.String(), "one_call_gcm=false") {
		t.Errorf("kmsd did not log that GCM goes through miekg/pkcs11:\n%s", p.logs.String())
	}
	p.stop(t)
}

// dataKeyKmsd is a running kmsd on a new data directory with one key, and what a test
// needs to call create-datakey on it and to verify its audit trail.
type dataKeyKmsd struct {
	*kmsdProcess
	dataDir           string
	keyPath           string // the audit public key, PEM
	ak, sk, projectID string // the admin credential
	body              []byte // a create-datakey request for the key
}

// startDataKeyKmsd starts kmsd on a new data directory, waits until it is ready, creates
// a key with alias and writes the audit public key to a file.
func startDataKeyKmsd(t *testing.T, alias string) dataKeyKmsd {
	t.Helper()
	k := dataKeyKmsd{dataDir: filepath.Join(t.TempDir(), "kms-data"),
		keyPath: filepath.Join(t.TempDir(), "audit-key.pem")}
	k.kmsdProcess = launchKmsd(t, []string{"--data-dir", k.dataDir})
	k.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	keyID := keyIDOf(t, kmsctl(t, k.kmsdProcess, k.dataDir, "create-key", "--alias", alias))
	k.ak, k.sk, k.projectID = readAdmin(t, k.dataDir)
	kmsctl(t, k.kmsdProcess, k.dataDir, "audit", "public-key", "--out", k.keyPath)
	k.body = []byte(fmt.Sprintf(`{"key_id":%q,"datakey_length":"256"}`, keyID))
	return k
}

// TestKmsdSIGKILLLosesNoRecord kills kmsd with SIGKILL while clients call it. The audit
// record of every call that returned 200 must be in the chain file, which the writer had
// mapped and grown ahead of its lines, and the trail must verify.
func TestKmsdSIGKILLLosesNoRecord(t *testing.T) {
	k := startDataKeyKmsd(t, "sigkill")
	p, dataDir, keyPath, body := k.kmsdProcess, k.dataDir, k.keyPath, k.body
	ak, sk, projectID := k.ak, k.sk, k.projectID
	var (
		mu        sync.Mutex
		succeeded []string // request ids of the calls that returned 200
		wg        sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req := signedRequest(t, p, "create-datakey", body, ak, sk, projectID)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the process is gone
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					mu.Lock()
					succeeded = append(succeeded, res.Header.Get("X-Request-Id"))
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(succeeded) == 0 {
		t.Fatalf("no call succeeded before the kill; logs:\n%s", p.logs)
	}

	database := filepath.Join(dataDir, "kms.db")
	files, err := filepath.Glob(filepath.Join(database+"-audit", "*.jsonl"))
	if err != nil || len(files) != 1 {
		t.Fatalf("chain files = %v, %v; want one", files, err)
	}
	if data := mustRead(t, files[0]); len(data) == 0 || data[len(data)-1] != 0 {
		t.Errorf("the killed writer's chain file does not end in zero bytes: the test " +
			"did not cover a file grown ahead of its lines")
	}

	r := runKmsctl(t, p, dataDir, nil, "audit", "verify", "--database", database,
		"--public-key", keyPath)
	if r.exitCode != 0 {
		t.Fatalf("kmsctl audit verify after SIGKILL: exit status %d\n%s%s", r.exitCode,
			r.stdout, r.stderr)
	}

	st, err := store.Open(t.Context(), database+"?mode=ro", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chains, err := st.ListAuditChains(t.Context())
	if err != nil || len(chains) != 1 {
		t.Fatalf("ListAuditChains = %v, %v; want the chain of the killed kmsd", chains, err)
	}
	recorded := map[string]bool{}
	for after := uint64(0); ; {
		records, err := st.ListAuditRecords(t.Context(), chains[0].ID, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(records) == 0 {
			break
		}
		for _, rec := range records {
			recorded[rec.RequestID] = true
		}
		after = records[len(records)-1].Seq
	}
	missing := 0
	for _, id := range succeeded {
		if !recorded[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d successful calls have no audit record", missing, len(succeeded))
	}
	t.Logf("%d calls succeeded before SIGKILL, %d records in the chain", len(succeeded),
		len(recorded))
}

// gatedBody is a request body that returns first at once, then blocks until release is
// closed and returns rest together with io.EOF. With the end of the body in the same read
// as its last bytes, the client finishes writing the request before the server can
// respond. With a pipe closed after its last write, the client's transport once reported
// a write to the connection that it had closed on the response, instead of the response.
type gatedBody struct {
	first, rest []byte
	release     <-chan struct{}
}

// Read implements io.Reader.
func (b *gatedBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}

	<-b.release
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	if len(b.rest) == 0 {
		return n, io.EOF
	}
	return n, nil
}
