package softhsmsetup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// Ensure calls in one process share the SoftHSM2 state read from SOFTHSM2_CONF at
// C_Initialize, so every test here uses one data directory per test binary run.

func TestEnsureFirstRun(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")

	setup, err := Ensure(dataDir, "kms")
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}

	checkMode(t, dataDir, 0o700)
	checkMode(t, filepath.Join(dataDir, "so-pin"), 0o600)
	checkMode(t, filepath.Join(dataDir, "user-pin"), 0o600)

	if got := os.Getenv("SOFTHSM2_CONF"); got != setup.ConfPath {
		t.Errorf("SOFTHSM2_CONF is %q, expected %q", got, setup.ConfPath)
	}
	conf, err := os.ReadFile(setup.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"directories.tokendir = " + filepath.Join(dataDir, "tokens"),
		"objectstore.backend = file",
		"log.level = ERROR",
	} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("softhsm2.conf lacks %q", line)
		}
	}

	pin, err := setup.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	if len(pin) < 16 {
		t.Errorf("user PIN has %d characters, expected at least 16", len(pin))
	}
	checkLogin(t, setup, pin)

	// The second call reuses the PINs and the token.
	again, err := Ensure(dataDir, "kms")
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if !reflect.DeepEqual(again, setup) {
		t.Errorf("second Ensure returned %+v, expected %+v", again, setup)
	}
	pinAgain, err := again.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	if pinAgain != pin {
		t.Error("second Ensure replaced the user PIN")
	}
	if n := countTokens(t, setup.ModulePath, "kms"); n != 1 {
		t.Errorf("%d tokens labelled kms after two calls, expected 1", n)
	}

	// A second token changes SoftHSM2's slot numbers, and the first is still found by
	// label.
	err = InitToken(setup.ConfPath, "second", "so-pin-0123456789", "user-pin-0123456789")
	if err != nil {
		t.Fatalf("InitToken: %v", err)
	}
	checkLogin(t, Setup{ModulePath: setup.ModulePath, TokenLabel: "second"}, "user-pin-0123456789")
	checkLogin(t, setup, pin)

	if err := InitToken(setup.ConfPath, "second", "so-pin-0123456789", "x-0123456789"); err == nil {
		t.Error("InitToken accepted a label that exists")
	}

	// A lost token directory is reported instead of filled with a new, empty token.
	if err := os.RemoveAll(filepath.Join(dataDir, "tokens")); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(dataDir, "kms"); !errors.Is(err, ErrTokenMissing) {
		t.Fatalf("Ensure after the token directory was deleted: %v, want ErrTokenMissing", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "tokens")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token directory after the refused Ensure: %v, want it not to exist, so "+
			"that a backup moved back takes its name", err)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if n := countTokens(t, setup.ModulePath, "kms"); n != 0 {
		t.Errorf("%d tokens labelled kms after the token directory was deleted, want 0", n)
	}

	// Files that SoftHSM2 cannot read as the token get a message about them instead.
	junk := filepath.Join(dataDir, "tokens", "unreadable")
	if err := os.WriteFile(junk, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Ensure(dataDir, "kms")
	if !errors.Is(err, ErrTokenMissing) || !strings.Contains(err.Error(), "which is not empty") {
		t.Errorf("Ensure with a token directory that holds no token: %v, want ErrTokenMissing "+
			"saying the directory is not empty", err)
	}
}

func TestKnownTokens(t *testing.T) {
	dataDir := t.TempDir()

	labels, err := knownTokens(dataDir)
	if err != nil || len(labels) != 0 {
		t.Fatalf("knownTokens of a new directory = %v, %v, want none", labels, err)
	}

	for _, label := range []string{"kms", "other", "kms"} {
		if err := recordKnownToken(dataDir, label); err != nil {
			t.Fatalf("recordKnownToken(%q): %v", label, err)
		}
	}
	labels, err = knownTokens(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"kms", "other"}; !slices.Equal(labels, want) {
		t.Errorf("knownTokens = %q, want %q", labels, want)
	}
	checkMode(t, filepath.Join(dataDir, knownTokensFile), 0o600)

	if err := os.WriteFile(filepath.Join(dataDir, knownTokensFile), []byte("kms"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := knownTokens(dataDir); err == nil {
		t.Error("knownTokens accepted a file that is not a JSON array")
	}
}

func TestFindModuleMissing(t *testing.T) {
	saved := ModulePaths
	t.Cleanup(func() { ModulePaths = saved })
	ModulePaths = []string{filepath.Join(t.TempDir(), "libsofthsm2.so")}

	_, err := FindModule()
	if err == nil {
		t.Fatal("FindModule returned no error")
	}
	if !strings.Contains(err.Error(), "apt-get install softhsm2") {
		t.Errorf("error %q does not tell how to install SoftHSM2", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s has mode %o, expected %o", path, got, want)
	}
}

// checkLogin logs in to the token of setup with pin through a fresh library state.
func checkLogin(t *testing.T, setup Setup, pin string) {
	t.Helper()

	_, err := withLibrary(setup.ModulePath, func(p11 *pkcs11.Ctx) (bool, error) {
		slot, ok, err := findToken(p11, setup.TokenLabel)
		if err != nil || !ok {
			t.Fatalf("token %q not found: %v", setup.TokenLabel, err)
		}

		s, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			return false, err
		}
		defer p11.CloseSession(s)

		return true, p11.Login(s, pkcs11.CKU_USER, pin)
	})
	if err != nil {
		t.Errorf("log in to %q: %v", setup.TokenLabel, err)
	}
}

func countTokens(t *testing.T, module, label string) int {
	t.Helper()

	n := 0
	_, err := withLibrary(module, func(p11 *pkcs11.Ctx) (bool, error) {
		slots, err := p11.GetSlotList(true)
		for _, slot := range slots {
			info, err := p11.GetTokenInfo(slot)
			if err == nil && strings.TrimRight(info.Label, " ") == label {
				n++
			}
		}
		return true, err
	})
	if err != nil {
		t.Fatal(err)
	}

	return n
}

// TestWriteFileAtomicKeepsSameContent writes a file twice with the same content and once
// with other content. The second write must leave the file in place, because on a full
// volume no temporary file can be created. The third write must replace it.
func TestWriteFileAtomicKeepsSameContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "softhsm2.conf")
	inode := func() uint64 {
		t.Helper()
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}

	if err := writeFileAtomic(path, []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	first := inode()
	if err := writeFileAtomic(path, []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if got := inode(); got != first {
		t.Errorf("the same content replaced the file (inode %d, then %d)", first, got)
	}
	if err := writeFileAtomic(path, []byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if got := inode(); got == first {
		t.Error("other content left the file in place")
	}
	if b, _ := os.ReadFile(path); string(b) != "b\n" {
		t.Errorf("file holds %q, want %q", b, "b\n")
	}
}

// interruptedInitDir names the data directory of the child process that
// TestEnsureFinishesInterruptedInit starts, which has SoftHSM2 state of its own.
const interruptedInitDir = "SOFTHSM_SETUP_TEST_INTERRUPTED_DIR"

func TestEnsureFinishesInterruptedInit(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	dataDir := os.Getenv(interruptedInitDir)
	if dataDir == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureFinishesInterruptedInit$", "-test.v")
		cmd.Env = append(os.Environ(), interruptedInitDir+"="+filepath.Join(t.TempDir(), "data"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child test: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "--- PASS: TestEnsureFinishesInterruptedInit") {
			t.Fatalf("child test did not pass:\n%s", out)
		}
		return
	}

	// The state of a first start killed between C_InitToken and C_InitPIN: the PIN files
	// and a token without a user PIN.
	conf, _, err := writeConf(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	soPIN, err := ensurePIN(filepath.Join(dataDir, "so-pin"))
	if err != nil {
		t.Fatal(err)
	}
	userPIN, err := ensurePIN(filepath.Join(dataDir, "user-pin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	module, err := FindModule()
	if err != nil {
		t.Fatal(err)
	}
	_, err = withLibrary(module, func(p11 *pkcs11.Ctx) (bool, error) {
		slot, err := freeSlot(p11)
		if err != nil {
			return false, err
		}
		return true, p11.InitToken(slot, soPIN, "kms")
	})
	if err != nil {
		t.Fatalf("C_InitToken: %v", err)
	}

	setup, err := Ensure(dataDir, "kms")
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	checkLogin(t, setup, userPIN)

	known, err := knownTokens(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(known, "kms") {
		t.Errorf("known tokens = %q, expected kms", known)
	}
}

// killedStartDir names the data directory of the child process that
// TestEnsureAfterKilledFirstStart starts and kills.
const killedStartDir = "SOFTHSM_SETUP_TEST_KILLED_DIR"

// TestEnsureAfterKilledFirstStart kills first starts, which log in after Ensure, at 300
// moments spread over the time that one first start takes, within which SoftHSM2 writes
// and rewrites the token file. The next start must find or make a token that logs in,
// and leave no staging directory.
func TestEnsureAfterKilledFirstStart(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	if dataDir := os.Getenv(killedStartDir); dataDir != "" {
		setup, err := Ensure(dataDir, "kms")
		if err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		pin, err := setup.UserPIN()
		if err != nil {
			t.Fatal(err)
		}
		checkLogin(t, setup, pin)
		return
	}

	child := func(dataDir string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureAfterKilledFirstStart$", "-test.v")
		cmd.Env = append(os.Environ(), killedStartDir+"="+dataDir)
		return cmd
	}

	// How long a whole first start takes in a child process on this machine.
	started := time.Now()
	if out, err := child(filepath.Join(t.TempDir(), "data")).CombinedOutput(); err != nil {
		t.Fatalf("first start: %v\n%s", err, out)
	}
	span := time.Since(started)

	const kills = 300
	for i := range kills {
		delay := span * time.Duration(i) / kills
		dataDir := filepath.Join(t.TempDir(), "data")

		killed := child(dataDir)
		if err := killed.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = killed.Process.Kill()
		_ = killed.Wait()

		setup, err := Ensure(dataDir, "kms")
		if err != nil {
			t.Fatalf("start after a first start killed at %v of %v failed: %v", delay, span, err)
		}
		pin, err := setup.UserPIN()
		if err != nil {
			t.Fatal(err)
		}
		checkLogin(t, setup, pin)
		for _, leftover := range []string{stagingTokensDir, stagingConfFile} {
			if _, err := os.Stat(filepath.Join(dataDir, leftover)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after a first start killed at %v, %s is left: %v", delay, leftover, err)
			}
		}
	}
}

// concurrentStartDir names the data directory of the child processes that
// TestEnsureConcurrentFirstStarts starts.
const concurrentStartDir = "SOFTHSM_SETUP_TEST_CONCURRENT_DIR"

// TestEnsureConcurrentFirstStarts runs two first starts, each Ensure in a process of its
// own, on one fresh data directory at one moment, as two replicas that share it do. Both
// must succeed with a token that logs in with the PIN in the data directory, and leave
// one token, no staging directory and a set-up lock file with mode 0600.
func TestEnsureConcurrentFirstStarts(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	if dataDir := os.Getenv(concurrentStartDir); dataDir != "" {
		// The parent writes a line to both children once both run, or none at all.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		setup, err := Ensure(dataDir, "kms")
		if err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		pin, err := setup.UserPIN()
		if err != nil {
			t.Fatal(err)
		}
		checkLogin(t, setup, pin)
		if n := countTokens(t, setup.ModulePath, "kms"); n != 1 {
			t.Errorf("%d tokens labelled kms, want 1", n)
		}
		return
	}

	const rounds = 5
	for round := range rounds {
		dataDir := filepath.Join(t.TempDir(), "data")
		outputs := make([]syncedOutput, 2)
		var starts []io.WriteCloser
		var children []*exec.Cmd
		for i := range outputs {
			cmd := concurrentStartChild(dataDir, &outputs[i])
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			starts, children = append(starts, stdin), append(children, cmd)
		}
		for _, start := range starts {
			_, _ = start.Write([]byte("start\n"))
			start.Close()
		}
		for i, cmd := range children {
			if err := cmd.Wait(); err != nil {
				t.Errorf("round %d: first start %d failed: %v\n%s", round, i+1, err,
					outputs[i].String())
			}
		}

		// A later start, alone, must find the same one token.
		var later syncedOutput
		if err := concurrentStartChild(dataDir, &later).Run(); err != nil {
			t.Errorf("round %d: the start after both first starts failed: %v\n%s", round,
				err, later.String())
		}
		checkOneSoundToken(t, dataDir)
		if t.Failed() {
			return
		}
	}
}

// concurrentStartChild returns the command of a child process of
// TestEnsureConcurrentFirstStarts on dataDir, which writes its output to out.
func concurrentStartChild(dataDir string, out io.Writer) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureConcurrentFirstStarts$", "-test.v")
	cmd.Env = append(os.Environ(), concurrentStartDir+"="+dataDir)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd
}

// checkOneSoundToken checks that dataDir holds one token folder with a token file, no
// staging directory, and the set-up lock file with mode 0600.
func checkOneSoundToken(t *testing.T, dataDir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "tokens", "*", "token.object"))
	if err != nil || len(files) != 1 {
		t.Errorf("token files = %v, %v; want one", files, err)
	}
	for _, leftover := range []string{stagingTokensDir, stagingConfFile} {
		if _, err := os.Stat(filepath.Join(dataDir, leftover)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", leftover, err)
		}
	}
	checkMode(t, filepath.Join(dataDir, setupLockFile), 0o600)
}

// syncedOutput collects the output of a child process, which it writes from two pipes.
type syncedOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *syncedOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *syncedOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func TestEnsureReportsRemovedStaging(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	first, err := Ensure(dataDir, "kms")
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if first.RemovedStaging != "" {
		t.Errorf("first Ensure reports a removed staging directory %q", first.RemovedStaging)
	}

	staging := filepath.Join(dataDir, stagingTokensDir)
	if err := os.MkdirAll(filepath.Join(staging, "unfinished"), 0o700); err != nil {
		t.Fatal(err)
	}
	again, err := Ensure(dataDir, "kms")
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if again.RemovedStaging != staging {
		t.Errorf("RemovedStaging = %q, expected %q", again.RemovedStaging, staging)
	}
	if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is left: %v", staging, err)
	}
}

// lowSpaceDir names the data directory of the child process of TestEnsureNamesFreeSpace.
const lowSpaceDir = "SOFTHSM_SETUP_TEST_LOW_SPACE_DIR"

// TestEnsureNamesFreeSpace starts Ensure in child processes on a small tmpfs filled to
// leave 0 to 8 pages free. SoftHSM2 reports the token file that it cannot write as
// CKR_DEVICE_ERROR, and each such error must name the free space.
func TestEnsureNamesFreeSpace(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	if dataDir := os.Getenv(lowSpaceDir); dataDir != "" {
		_, err := Ensure(dataDir, "kms")
		fmt.Printf("ensure error: %v\n", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}

	const size = 256 << 10
	pageSize := os.Getpagesize()
	deviceErrors := 0
	for free := 0; free <= 8; free++ {
		dir := t.TempDir()
		out, err := exec.Command("mount", "-t", "tmpfs", "-o",
			fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
		if err != nil {
			t.Skipf("mounting a tmpfs failed: %v: %s", err, out)
		}
		fill := make([]byte, size-free*pageSize)
		writeErr := os.WriteFile(filepath.Join(dir, "fill"), fill, 0o600)

		cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureNamesFreeSpace$", "-test.v")
		cmd.Env = append(os.Environ(), lowSpaceDir+"="+filepath.Join(dir, "data"))
		child, runErr := cmd.CombinedOutput()
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Fatalf("umount %s: %v: %s", dir, err, out)
		}
		if writeErr != nil {
			t.Fatalf("filling the tmpfs: %v", writeErr)
		}
		if runErr != nil {
			t.Fatalf("child with %d pages free: %v\n%s", free, runErr, child)
		}

		if !strings.Contains(string(child), "CKR_DEVICE_ERROR") {
			continue
		}
		deviceErrors++
		if !strings.Contains(string(child), "KiB free") {
			t.Errorf("with %d pages free, the error does not name the free space:\n%s",
				free, child)
		}
	}
	if deviceErrors == 0 {
		t.Error("no amount of free space made SoftHSM2 fail with CKR_DEVICE_ERROR")
	}
}

// TestEnsureWaitsForTokenRewrite empties the token file as SoftHSM2 does in the middle of
// another process's login, and writes it back 200 ms into Ensure. Ensure must wait for it
// instead of restoring the file from its copy or reporting the token missing.
func TestEnsureWaitsForTokenRewrite(t *testing.T) {
	if _, err := FindModule(); err != nil {
		t.Skip(err)
	}
	tests := []struct {
		name     string
		keepCopy bool
		cutTo    func(size int64) int64 // the size of the token file during the rewrite
	}{
		{"empty, copy kept", true, func(int64) int64 { return 0 }},
		{"empty, no copy", false, func(int64) int64 { return 0 }},
		{"cut short, copy kept", true, func(size int64) int64 { return size / 2 }},
		{"cut short, no copy", false, func(size int64) int64 { return size / 2 }},
	}
	for _, tt := range tests {
		keepCopy := tt.keepCopy
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			if _, err := Ensure(dataDir, "kms"); err != nil {
				t.Fatalf("first Ensure: %v", err)
			}
			if !keepCopy {
				if err := os.RemoveAll(filepath.Join(dataDir, tokenCopiesDir)); err != nil {
					t.Fatal(err)
				}
			}
			files, err := filepath.Glob(filepath.Join(dataDir, "tokens", "*", "token.object"))
			if err != nil || len(files) != 1 {
				t.Fatalf("token files = %v, %v; want one", files, err)
			}
			tokenFile := files[0]
			content, err := os.ReadFile(tokenFile)
			if err != nil {
				t.Fatal(err)
			}

			if err := os.Truncate(tokenFile, tt.cutTo(int64(len(content)))); err != nil {
				t.Fatal(err)
			}
			rewritten := make(chan error, 1)
			go func() {
				time.Sleep(200 * time.Millisecond)
				rewritten <- os.WriteFile(tokenFile, content, 0o600)
			}()
			setup, err := Ensure(dataDir, "kms")
			if werr := <-rewritten; werr != nil {
				t.Fatal(werr)
			}
			if err != nil {
				t.Fatalf("Ensure during the rewrite: %v", err)
			}
			if len(setup.RestoredFiles) != 0 {
				t.Errorf("Ensure restored %v while the file was being rewritten",
					setup.RestoredFiles)
			}
			if after, err := os.ReadFile(tokenFile); err != nil || !bytes.Equal(after, content) {
				t.Errorf("token file after Ensure differs from the rewritten one (%v)", err)
			}
		})
	}
}
