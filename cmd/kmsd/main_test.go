package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

// binaries builds kmsd and kmsctl once per test process.
var builtDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kmsd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builtDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(t *testing.T, pkg, name string) string {
	t.Helper()
	out := filepath.Join(builtDir, name)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// freeAddr returns a 127.0.0.1 address with a port that is free now, which the kernel
// picks. When KMS_TEST_PORTS is set to FIRST-LAST, for machines where tests must listen on
// given ports only, it returns the next free port of that range instead. Calls take the
// ports of the range in turn, so that two processes started one after the other get
// different ports.
func freeAddr(t *testing.T) string {
	t.Helper()
	ports := os.Getenv("KMS_TEST_PORTS")
	if ports == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}

	var first, last int
	if _, err := fmt.Sscanf(ports, "%d-%d", &first, &last); err != nil || first > last {
		t.Fatalf("KMS_TEST_PORTS=%q: want FIRST-LAST, for example 23100-23199", ports)
	}
	for range last - first + 1 {
		port := first + int(nextTestPort.Add(1)-1)%(last-first+1)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return ln.Addr().String()
		}
	}
	t.Fatalf("no free port in KMS_TEST_PORTS=%s", ports)
	return ""
}

// nextTestPort counts the ports that freeAddr took from KMS_TEST_PORTS.
var nextTestPort atomic.Int64

// kmsdProcess is a running kmsd.
type kmsdProcess struct {
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer // written by the process output goroutines while tests read it
}

func startKmsd(t *testing.T, dataDir string, extraEnv ...string) *kmsdProcess {
	t.Helper()
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	return startKmsdBinary(t, bin, dataDir, extraEnv...)
}

// startKmsdBinary starts the kmsd binary at path bin and waits until it is ready.
func startKmsdBinary(t *testing.T, bin, dataDir string, extraEnv ...string) *kmsdProcess {
	t.Helper()
	return startKmsdAs(t, bin, bin, dataDir, extraEnv...)
}

// startKmsdAs is startKmsdBinary with argv0 as the process's first argument.
func startKmsdAs(t *testing.T, bin, argv0, dataDir string, extraEnv ...string) *kmsdProcess {
	t.Helper()
	addr := freeAddr(t)

	p := &kmsdProcess{addr: addr, logs: &syncBuffer{}}
	p.cmd = exec.Command(bin, "--data-dir", dataDir, "--listen", addr)
	p.cmd.Args[0] = argv0
	p.cmd.Env = append(os.Environ(), extraEnv...)
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

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kmsd did not become ready within 30 s; logs:\n%s", p.logs)
	return nil
}

// stop sends SIGTERM and checks that kmsd exits with status 0.
func (p *kmsdProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("kmsd exit: %v; logs:\n%s", err, p.logs)
	}
}

func kmsctl(t *testing.T, p *kmsdProcess, dataDir string, args ...string) []byte {
	t.Helper()
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsctl", "kmsctl")
	cmd := exec.Command(bin, append([]string{"--endpoint", "http://" + p.addr}, args...)...)
	cmd.Env = append(os.Environ(), "KMS_DATA_DIR="+dataDir, "KMS_ACCESS_KEY=", "KMS_SECRET_KEY=")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kmsctl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

// TestEmbeddedDefaultEndToEnd runs kmsd on a fresh data directory, uses it through
// kmsctl, restarts it and checks that every key and ciphertext made before still works.
func TestEmbeddedDefaultEndToEnd(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := startKmsd(t, dataDir)

	for _, name := range []string{"admin-credentials.json", "user-pin", "so-pin"} {
		info, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 600", name, info.Mode().Perm())
		}
	}
	secret := readSecret(t, dataDir)
	if strings.Contains(p.logs.String(), secret) {
		t.Fatal("the log contains the admin secret key")
	}

	created := decodeJSON(t, kmsctl(t, p, dataDir, "create-key", "--alias", "e2e"))
	keyID := created["key_info"].(map[string]any)["key_id"].(string)

	dk := decodeJSON(t, kmsctl(t, p, dataDir, "create-datakey", keyID, "--bits", "512",
		"--context", "app=e2e"))
	cipher, plain := dk["cipher_text"].(string), dk["plain_text"].(string)

	input := make([]byte, 3<<20+17)
	rand.Read(input)
	work := t.TempDir()
	inPath, encPath, outPath := filepath.Join(work, "in"), filepath.Join(work, "enc"), filepath.Join(work, "out")
	if err := os.WriteFile(inPath, input, 0o600); err != nil {
		t.Fatal(err)
	}
	kmsctl(t, p, dataDir, "encrypt-file", keyID, inPath, encPath, "--context", "file=in")

	p.stop(t)
	p = startKmsd(t, dataDir)

	desc := decodeJSON(t, kmsctl(t, p, dataDir, "describe-key", keyID))
	if got := desc["key_info"].(map[string]any)["key_state"]; got != "2" {
		t.Errorf("key_state after restart = %v, want 2", got)
	}
	dec := decodeJSON(t, kmsctl(t, p, dataDir, "decrypt-datakey", keyID, "--cipher", cipher,
		"--length", "64", "--context", "app=e2e"))
	if dec["data_key"] != plain {
		t.Errorf("data_key after restart differs")
	}

	kmsctl(t, p, dataDir, "decrypt-file", encPath, outPath)
	got, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, input) {
		t.Fatal("decrypt-file output differs from the input")
	}

	if strings.Contains(p.logs.String(), plain) {
		t.Fatal("the log contains a data key")
	}
	p.stop(t)
}

func readSecret(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "admin-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		SecretKey string `json:"secret_key"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.SecretKey == "" {
		t.Fatalf("admin-credentials.json: %v", err)
	}
	return f.SecretKey
}

// TestKmsdRefusesLostToken deletes the embedded token directory of a data directory that
// kmsd used, and checks that kmsd then stops with a message instead of starting on a new
// token that holds none of the stored keys.
func TestKmsdRefusesLostToken(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	if err := os.RemoveAll(filepath.Join(dataDir, "tokens")); err != nil {
		t.Fatal(err)
	}
	out := runKmsdExpectingExit(t, dataDir)
	if !strings.Contains(out, "Restore that directory from a backup") {
		t.Errorf("kmsd output does not say to restore the token directory:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "tokens")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dataDir, "tokens"))
		if len(entries) != 0 {
			t.Errorf("kmsd created %d entries in the deleted token directory", len(entries))
		}
	}
}

func TestHelpFlagPrintsUsage(t *testing.T) {
	for _, helpFlag := range []string{"-h", "-help", "--help"} {
		t.Run(helpFlag, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{helpFlag}, envFrom(nil), &stdout, &stderr, nil)
			if code != 0 {
				t.Errorf("kmsd %s exited with %d, want 0; stderr:\n%s", helpFlag, code, stderr.String())
			}
			for _, want := range []string{"Usage: kmsd [flags]", "-listen", "KMS_LISTEN", "-token-label"} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("kmsd %s printed no %q to stdout:\n%s", helpFlag, want, stdout.String())
				}
			}
			if stderr.Len() != 0 {
				t.Errorf("kmsd %s wrote to stderr:\n%s", helpFlag, stderr.String())
			}
		})
	}
}

func TestInvalidFlagExitsWithUsageError(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"--no-such-flag"}, envFrom(nil), &stdout, &stderr, nil)
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "flag provided but not defined: -no-such-flag") {
		t.Errorf("stderr does not name the flag:\n%s", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout is not empty:\n%s", stdout.String())
	}
}

// TestKmsdRejectsWeakAdminSecret starts kmsd on a new data directory with an admin
// secret key from the environment that is too weak. kmsd must exit with a message that
// names the variable, instead of waiting for a credential that can never be stored.
func TestKmsdRejectsWeakAdminSecret(t *testing.T) {
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	// A kmsd that kept retrying serves until the context ends it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--data-dir", t.TempDir(), "--listen", freeAddr(t))
	cmd.Env = append(os.Environ(), "KMS_ADMIN_ACCESS_KEY=WEAKADMIN", "KMS_ADMIN_SECRET_KEY=a")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("kmsd did not exit on a weak admin secret key; output:\n%s", out)
	}
	if !strings.Contains(string(out), "KMS_ADMIN_SECRET_KEY") {
		t.Errorf("kmsd output does not name KMS_ADMIN_SECRET_KEY:\n%s", out)
	}
}

func TestKmsdStopDuringStartExitsZero(t *testing.T) {
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")

	// Signals at 1 to 40 ms after the start reach kmsd in different start-up steps:
	// before its handler exists (the signal ends the process), while it sets up or opens
	// the token, and once it serves. A first start does the most steps.
	for delay := time.Millisecond; delay <= 40*time.Millisecond; delay += time.Millisecond {
		cmd := exec.Command(bin, "--data-dir", t.TempDir(), "--listen", freeAddr(t))
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}

		err := cmd.Wait()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) && exitErr.ExitCode() != -1 {
			t.Errorf("SIGTERM %s after start: kmsd exited with %d, want 0 or the signal; "+
				"output:\n%s", delay, exitErr.ExitCode(), out.String())
		} else if err != nil && !errors.As(err, &exitErr) {
			t.Fatal(err)
		}
	}
}

func TestKmsdNamesEmptyTokenFile(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	// What a kill while SoftHSM2 rewrites the token file leaves, in a data directory
	// without the copy that kmsd restores the file from.
	tokenFile := tokenFileOf(t, dataDir)
	if err := os.Truncate(tokenFile, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dataDir, "token-copies")); err != nil {
		t.Fatal(err)
	}

	out := runKmsdExpectingExit(t, dataDir)
	for _, want := range []string{tokenFile, "killed while writing it", "first start"} {
		if !strings.Contains(out, want) {
			t.Errorf("kmsd output does not contain %q:\n%s", want, out)
		}
	}
}

func TestKmsdRestoresCutShortTokenFile(t *testing.T) {
	for _, keep := range []struct {
		name  string
		bytes func(size int64) int64
	}{
		{"empty", func(int64) int64 { return 0 }},
		{"half", func(size int64) int64 { return size / 2 }},
		{"one byte short", func(size int64) int64 { return size - 1 }},
	} {
		t.Run(keep.name, func(t *testing.T) {
			dataDir := t.TempDir()
			p := startKmsd(t, dataDir)
			keyID := keyIDOf(t, kmsctl(t, p, dataDir, "create-key", "--alias", "torn"))
			created := decodeJSON(t, kmsctl(t, p, dataDir, "create-datakey", keyID,
				"--bits", "256"))
			p.stop(t)

			// What a kill between SoftHSM2's truncation and rewrite of the file at
			// C_Login leaves.
			tokenFile := tokenFileOf(t, dataDir)
			info, err := os.Stat(tokenFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(tokenFile, keep.bytes(info.Size())); err != nil {
				t.Fatal(err)
			}

			p = startKmsd(t, dataDir)
			dec := decodeJSON(t, kmsctl(t, p, dataDir, "decrypt-datakey", keyID,
				"--cipher", created["cipher_text"].(string), "--length", "32"))
			if dec["data_key"] != created["plain_text"] {
				t.Errorf("data_key after the restore differs from create-datakey's plain_text")
			}
			p.stop(t)
			if logs := p.logs.String(); !strings.Contains(logs, "restored from its copy") ||
				!strings.Contains(logs, tokenFile) {
				t.Errorf("kmsd did not log the restored file %s:\n%s", tokenFile, logs)
			}
		})
	}
}

func TestKmsdWritesMissingTokenCopy(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	// A data directory made before kmsd kept copies of its token file.
	copies := filepath.Join(dataDir, "token-copies")
	if err := os.RemoveAll(copies); err != nil {
		t.Fatal(err)
	}

	p = startKmsd(t, dataDir)
	p.stop(t)
	tokenFile := tokenFileOf(t, dataDir)
	want, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	copyFile, err := os.ReadFile(filepath.Join(copies, filepath.Base(filepath.Dir(tokenFile))))
	if err != nil {
		t.Fatalf("no copy of the token file after a start: %v", err)
	}
	if want := tokenFileCopy(want); !bytes.Equal(copyFile, want) {
		t.Errorf("copy file has %d bytes that differ from the expected %d", len(copyFile),
			len(want))
	}
}

// tokenFileCopy returns the copy file that kmsd keeps in token-copies/ of a token file:
// a header line with the file's SHA-256, then the file.
func tokenFileCopy(tokenFile []byte) []byte {
	sum := sha256.Sum256(tokenFile)
	header := "kmsd token file copy sha256=" + hex.EncodeToString(sum[:]) + "\n"
	return append([]byte(header), tokenFile...)
}

func TestKmsdReportsRestoreBeforeFailure(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	tokenFile := tokenFileOf(t, dataDir)
	if err := os.Truncate(tokenFile, 10); err != nil {
		t.Fatal(err)
	}
	// A copy whose digest matches but which holds no token: after the restore, SoftHSM2
	// finds no token, and the error must still name the replaced file.
	copyPath := filepath.Join(dataDir, "token-copies", filepath.Base(filepath.Dir(tokenFile)))
	garbage := bytes.Repeat([]byte{0x5a}, 400)
	if err := os.WriteFile(copyPath, tokenFileCopy(garbage), 0o600); err != nil {
		t.Fatal(err)
	}

	out := runKmsdExpectingExit(t, dataDir)
	for _, want := range []string{"first restored " + tokenFile, "token-copies"} {
		if !strings.Contains(out, want) {
			t.Errorf("kmsd output does not contain %q:\n%s", want, out)
		}
	}
}

func TestKmsdNamesCopyOfDamagedTokenFile(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	// Damage that keeps the file's length, which kmsd does not restore by itself.
	tokenFile := tokenFileOf(t, dataDir)
	good, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, bytes.Repeat([]byte{0x5a}, len(good)), 0o600); err != nil {
		t.Fatal(err)
	}

	out := runKmsdExpectingExit(t, dataDir)
	copyPath := filepath.Join(dataDir, "token-copies", filepath.Base(filepath.Dir(tokenFile)))
	want := "tail -n +2 " + copyPath + " > " + tokenFile
	if !strings.Contains(out, want) {
		t.Fatalf("kmsd output does not contain %q:\n%s", want, out)
	}

	// The advice works: the file it writes is the token file before the damage.
	copyFile, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, tail, _ := bytes.Cut(copyFile, []byte("\n")); !bytes.Equal(tail, good) {
		t.Errorf("the copy after its first line has %d bytes that differ from the token "+
			"file's %d", len(tail), len(good))
	}
}

// tokenFileOf returns the path of the one SoftHSM2 token file in dataDir.
func tokenFileOf(t *testing.T, dataDir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "tokens", "*", "token.object"))
	if err != nil || len(files) != 1 {
		t.Fatalf("token files = %v, %v; want one", files, err)
	}
	return files[0]
}

// runKmsdExpectingExit runs kmsd on dataDir, expects it to exit with an error within
// 30 s, and returns its output.
func runKmsdExpectingExit(t *testing.T, dataDir string) string {
	t.Helper()
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	// A kmsd that started anyway serves until the context ends it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--data-dir", dataDir, "--listen", freeAddr(t))
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("kmsd started, want an exit with an error; output:\n%s", out)
	}
	return string(out)
}

func TestKmsdLogsRemovedStagingDirectory(t *testing.T) {
	dataDir := t.TempDir()
	p := startKmsd(t, dataDir)
	p.stop(t)

	// What a first start killed between C_InitToken and the move of the token leaves.
	staging := filepath.Join(dataDir, "tokens.init")
	if err := os.MkdirAll(filepath.Join(staging, "unfinished"), 0o700); err != nil {
		t.Fatal(err)
	}

	p = startKmsd(t, dataDir)
	p.stop(t)
	if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is left: %v", staging, err)
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "removed the staging token directory") ||
		!strings.Contains(logs, staging) {
		t.Errorf("kmsd did not log the removed directory %s:\n%s", staging, logs)
	}
}
