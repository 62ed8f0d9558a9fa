package hsm

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

func TestSealAfterCopiesDestroyedUnderModule(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxSessions = 1 })
	ref := KeyRef{KeyID: "stale-copy", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	sealed, err := m.Seal(ctx, ref, []byte("data"), nil)
	if err != nil {
		t.Fatal(err)
	}

	// Destroy the copy behind the pool's back, leaving its handle in the session map.
	c, release, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.p11.DestroyObject(s.handle, s.copies[ref]); err != nil {
		t.Fatalf("C_DestroyObject of the copy: %v", err)
	}
	c.put(s)
	release()

	if _, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil); err != nil {
		t.Errorf("Open after the copy was destroyed: %v", err)
	}
	if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
		t.Errorf("Seal after the copy was destroyed: %v", err)
	}
}

func TestSealAfterCloseAllSessions(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxSessions = 3 })
	ref := KeyRef{KeyID: "closed-sessions", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	sealed, err := m.Seal(ctx, ref, []byte("data"), nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := m.CloseAllSessions(); err != nil {
		t.Fatalf("CloseAllSessions: %v", err)
	}

	got, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil)
	if err != nil {
		t.Fatalf("Open after CloseAllSessions: %v", err)
	}
	if string(got) != "data" {
		t.Errorf("Open returned %q, expected %q", got, "data")
	}
	if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
		t.Errorf("Seal after CloseAllSessions: %v", err)
	}

	// crypto11's sessions died too, so key management must work again as well.
	if err := m.GenerateKey(ctx, KeyRef{KeyID: "closed-sessions", Version: 2}); err != nil {
		t.Errorf("GenerateKey after CloseAllSessions: %v", err)
	}

	stats := m.Stats()
	if !stats.Connected {
		t.Error("Stats reports the module disconnected")
	}
	if stats.Reconnects != 1 {
		t.Errorf("Stats.Reconnects is %d, expected 1", stats.Reconnects)
	}
}

func TestKeyCopiesBounded(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) {
		cfg.MaxSessions = 1
		cfg.MaxKeyCopies = 2
	})
	ctx := context.Background()

	for version := uint32(1); version <= 4; version++ {
		ref := KeyRef{KeyID: "bounded", Version: version}
		generateTestKey(t, m, ref)
		if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
			t.Fatal(err)
		}
	}

	stats := m.Stats()
	if stats.KeyCopies != 2 {
		t.Errorf("Stats.KeyCopies is %d, expected 2", stats.KeyCopies)
	}
	if stats.SessionsOpen != 1 || stats.SessionsIdle != 1 {
		t.Errorf("Stats reports %d open and %d idle sessions, expected 1 and 1",
			stats.SessionsOpen, stats.SessionsIdle)
	}

	// An evicted copy is made again on demand.
	if _, err := m.Seal(ctx, KeyRef{KeyID: "bounded", Version: 1}, []byte("data"), nil); err != nil {
		t.Errorf("Seal with an evicted key: %v", err)
	}
}

func TestKeyCopiesDisabled(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxKeyCopies = -1 })
	ref := KeyRef{KeyID: "no-copies", Version: 1}
	generateTestKey(t, m, ref)

	if _, err := m.Seal(context.Background(), ref, []byte("data"), nil); err != nil {
		t.Fatal(err)
	}
	if got := m.Stats().KeyCopies; got != 0 {
		t.Errorf("Stats.KeyCopies is %d, expected 0", got)
	}
}

func TestSessionWaitHonoursContext(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxSessions = 1 })
	ctx := context.Background()

	c, release, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	held, err := c.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = m.Random(cancelled, 8)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Random with a busy pool returned %v, expected ErrUnavailable and context.Canceled", err)
	}

	c.put(held)
	if _, err := m.Random(ctx, 8); err != nil {
		t.Errorf("Random after the session came back: %v", err)
	}
}

func TestConcurrentSealOpen(t *testing.T) {
	m := openTestModule(t, nil)
	refs := []KeyRef{{KeyID: "concurrent", Version: 1}, {KeyID: "concurrent", Version: 2}}
	for _, ref := range refs {
		generateTestKey(t, m, ref)
	}
	ctx := context.Background()

	const goroutines, rounds = 64, 20
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ref := refs[g%len(refs)]
			for i := range rounds {
				plaintext := []byte(fmt.Sprintf("goroutine %d round %d", g, i))
				sealed, err := m.Seal(ctx, ref, plaintext, []byte("aad"))
				if err != nil {
					errs <- err
					return
				}
				got, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, []byte("aad"))
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, plaintext) {
					errs <- fmt.Errorf("goroutine %d: Open returned %q, expected %q", g, got, plaintext)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Error(err)
	}
	if open := m.Stats().SessionsOpen; open > DefaultMaxSessions {
		t.Errorf("Stats.SessionsOpen is %d, expected at most %d", open, DefaultMaxSessions)
	}
}

// Environment of the child process of TestSecondProcessSeesKey.
const (
	childModuleEnv = "HSM_TEST_CHILD_MODULE"
	childLabelEnv  = "HSM_TEST_CHILD_LABEL"
	childPINEnv    = "HSM_TEST_CHILD_PIN"
)

func TestSecondProcessSeesKey(t *testing.T) {
	cfg, setup := testConfig(t)
	m, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })

	// The parent has its sessions open before the child creates the key.
	if err := m.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcessSeal$")
	cmd.Env = append(os.Environ(),
		"SOFTHSM2_CONF="+setup.ConfPath,
		childModuleEnv+"="+cfg.ModulePath,
		childLabelEnv+"="+cfg.TokenLabel,
		childPINEnv+"="+cfg.PIN,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}

	var ivHex, ctHex string
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, "sealed "); ok {
			fields := strings.Fields(rest)
			ivHex, ctHex = fields[0], fields[1]
		}
	}
	iv, _ := hex.DecodeString(ivHex)
	ciphertext, _ := hex.DecodeString(ctHex)

	got, err := m.Open(context.Background(), KeyRef{KeyID: "shared", Version: 1}, iv, ciphertext, nil)
	if err != nil {
		t.Fatalf("Open of the child's ciphertext: %v", err)
	}
	if string(got) != "from the child" {
		t.Errorf("Open returned %q, expected %q", got, "from the child")
	}
}

// TestChildProcessSeal is the child of TestSecondProcessSeesKey: it generates a key in the
// shared token and prints one sealed message.
func TestChildProcessSeal(t *testing.T) {
	module := os.Getenv(childModuleEnv)
	if module == "" {
		t.Skip("runs only as the child of TestSecondProcessSeesKey")
	}

	cfg := Config{
		ModulePath: module,
		TokenLabel: os.Getenv(childLabelEnv),
		PIN:        os.Getenv(childPINEnv),
	}
	m, err := Open(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	ref := KeyRef{KeyID: "shared", Version: 1}
	generateTestKey(t, m, ref)
	sealed, err := m.Seal(context.Background(), ref, []byte("from the child"), nil)
	if err != nil {
		t.Fatal(err)
	}

	fmt.Printf("sealed %x %x\n", sealed.IV, sealed.Ciphertext)
}
