package hsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

// tokenDirectory returns the SoftHSM2 directory of the token of setup: the one whose
// token.object holds the label padded with spaces to 32 bytes, as CKA_LABEL is stored.
func tokenDirectory(t *testing.T, setup softhsmsetup.Setup) string {
	t.Helper()

	tokens := filepath.Join(filepath.Dir(setup.ConfPath), "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}

	label := []byte(fmt.Sprintf("%-32s", setup.TokenLabel))
	for _, e := range entries {
		dir := filepath.Join(tokens, e.Name())
		content, err := os.ReadFile(filepath.Join(dir, "token.object"))
		if err == nil && bytes.Contains(content, label) {
			return dir
		}
	}

	t.Fatalf("no directory in %s holds the token %q", tokens, setup.TokenLabel)
	return ""
}

// sealOpenLoad seals and opens under a few keys from several goroutines, keeping every
// ciphertext that Seal returned and counting the outcomes of all calls.
type sealOpenLoad struct {
	m    *Module
	refs []KeyRef

	mu          sync.Mutex
	sealed      []sealedValue
	succeeded   int
	unavailable int
	notFound    []error
	other       []error
}

// sealedValue is one acknowledged Seal and what it sealed.
type sealedValue struct {
	ref       KeyRef
	plaintext []byte
	sealed    Sealed
}

func (l *sealOpenLoad) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	switch {
	case err == nil:
		l.succeeded++
	case errors.Is(err, ErrKeyNotFound):
		l.notFound = append(l.notFound, err)
	case errors.Is(err, ErrUnavailable):
		l.unavailable++
	default:
		l.other = append(l.other, err)
	}
}

// counts returns the number of successful and of unavailable calls so far.
func (l *sealOpenLoad) counts() (succeeded, unavailable int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.succeeded, l.unavailable
}

// run seals and opens until stop is closed, at most maxCalls times.
func (l *sealOpenLoad) run(worker int, stop <-chan struct{}, maxCalls int) {
	ctx := context.Background()
	for i := range maxCalls {
		select {
		case <-stop:
			return
		default:
		}

		ref := l.refs[i%len(l.refs)]
		plaintext := fmt.Appendf(nil, "worker %d call %d", worker, i)
		sealed, err := l.m.Seal(ctx, ref, plaintext, nil)
		l.record(err)
		if err != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.sealed = append(l.sealed, sealedValue{ref: ref, plaintext: plaintext, sealed: sealed})
		l.mu.Unlock()

		got, err := l.m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil)
		l.record(err)
		if err == nil && !bytes.Equal(got, plaintext) {
			l.record(fmt.Errorf("Open returned %q, expected %q", got, plaintext))
		}
	}
}

// pollUntil calls cond every 10 ms until it returns true, for at most 30 s.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTokenDirectoryMovedUnderLoad(t *testing.T) {
	cfg, setup := testConfig(t)
	cfg.ReconnectInterval = 50 * time.Millisecond
	logs := &syncBuffer{}
	m, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })

	ctx := context.Background()
	refs := []KeyRef{{KeyID: "moved-a", Version: 1}, {KeyID: "moved-b", Version: 1},
		{KeyID: "moved-c", Version: 2}}
	for _, ref := range refs {
		generateTestKey(t, m, ref)
	}

	load := &sealOpenLoad{m: m, refs: refs}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for worker := range 4 {
		wg.Go(func() { load.run(worker, stop, 1_000_000) })
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	t.Cleanup(stopLoad)

	pollUntil(t, "200 successful calls", func() bool {
		succeeded, _ := load.counts()
		return succeeded >= 200
	})

	dir := tokenDirectory(t, setup)
	// Outside the token directory, where SoftHSM2 would find it again.
	away := filepath.Join(t.TempDir(), "token-away")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "ErrUnavailable from Ping with the token directory away", func() bool {
		return errors.Is(m.Ping(ctx), ErrUnavailable)
	})
	pollUntil(t, "20 unavailable calls with the token directory away", func() bool {
		_, unavailable := load.counts()
		return unavailable >= 20
	})
	if m.Stats().Connected {
		t.Error("Stats reports a connection with the token directory away")
	}
	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}

	pollUntil(t, "successful Ping after the token directory is back", func() bool {
		return m.Ping(ctx) == nil
	})
	back, _ := load.counts()
	pollUntil(t, "200 successful calls after the token directory is back", func() bool {
		succeeded, _ := load.counts()
		return succeeded >= back+200
	})
	stopLoad()

	succeeded, unavailable := load.counts()
	t.Logf("%d calls succeeded, %d returned ErrUnavailable", succeeded, unavailable)
	for _, err := range load.notFound {
		t.Errorf("a call on a key in the token returned ErrKeyNotFound: %v", err)
	}
	for _, err := range load.other {
		t.Errorf("a call returned an unexpected error: %v", err)
	}
	for _, v := range load.sealed {
		got, err := m.Open(ctx, v.ref, v.sealed.IV, v.sealed.Ciphertext, nil)
		if err != nil {
			t.Fatalf("Open of a ciphertext sealed before or during the move: %v", err)
		}
		if !bytes.Equal(got, v.plaintext) {
			t.Fatalf("Open returned %q, expected %q", got, v.plaintext)
		}
	}
	if got := m.Stats().Reconnects; got < 1 {
		t.Errorf("Stats().Reconnects = %d, expected at least 1", got)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("token disconnected")) {
		t.Error("the outage was not logged")
	}
}

func TestKeyDestroyedElsewhereReconnectsOnce(t *testing.T) {
	cfg, _ := testConfig(t)
	// Without copies the Module uses the token object, so it notices the destruction.
	cfg.MaxKeyCopies = -1
	cfg.ReconnectInterval = time.Hour
	ctx := context.Background()

	m, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	other, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })

	first := KeyRef{KeyID: "destroyed-elsewhere", Version: 1}
	second := KeyRef{KeyID: "destroyed-elsewhere", Version: 2}
	for _, ref := range []KeyRef{first, second} {
		generateTestKey(t, m, ref)
		if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
			t.Fatal(err)
		}
		if err := other.DestroyKey(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}

	// The first miss costs one reconnect, after which the miss is final.
	if _, err := m.Seal(ctx, first, []byte("data"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Seal with a key destroyed elsewhere returned %v, expected ErrKeyNotFound", err)
	}
	if got := m.Stats().Reconnects; got != 1 {
		t.Errorf("Stats().Reconnects = %d after the first miss, expected 1", got)
	}
	if _, err := m.Seal(ctx, first, []byte("data"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("second Seal with the destroyed key returned %v, expected ErrKeyNotFound", err)
	}

	// The Seal of the first key already ran on a connection made after second was
	// destroyed, but never looked for it, so its miss is a fault that must wait for the
	// next reconnect an hour from now.
	if _, err := m.Seal(ctx, second, []byte("data"), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Seal with another destroyed key returned %v, expected ErrUnavailable", err)
	}
	if got := m.Stats().Reconnects; got != 1 {
		t.Errorf("Stats().Reconnects = %d after two misses, expected 1", got)
	}
	if err := m.Ping(ctx); err != nil {
		t.Errorf("Ping after keys were destroyed elsewhere: %v", err)
	}
}

func TestKeyDestroyedHereNoReconnect(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.MaxKeyCopies = -1 })
	ref := KeyRef{KeyID: "destroyed-here", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
		t.Fatal(err)
	}
	if err := m.DestroyKey(ctx, ref); err != nil {
		t.Fatal(err)
	}

	if _, err := m.Seal(ctx, ref, []byte("data"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Seal after DestroyKey returned %v, expected ErrKeyNotFound", err)
	}
	if exists, err := m.KeyExists(ctx, ref); err != nil || exists {
		t.Errorf("KeyExists after DestroyKey = %v, %v, expected false, nil", exists, err)
	}
	if got := m.Stats().Reconnects; got != 0 {
		t.Errorf("Stats().Reconnects = %d, expected 0", got)
	}
}

func TestFoundKeysMiss(t *testing.T) {
	known := KeyRef{KeyID: "known", Version: 1}
	unknown := KeyRef{KeyID: "unknown", Version: 1}
	var f foundKeys
	f.add(known)

	steps := []struct {
		name       string
		ref        KeyRef
		generation uint64
		want       bool
	}{
		{"unknown key", unknown, 1, false},
		{"first miss of a known key", known, 1, true},
		{"miss on the same connection", known, 1, true},
		{"miss on a newer connection", known, 2, false},
		{"miss after it was forgotten", known, 3, false},
	}
	for _, step := range steps {
		if got := f.miss(step.ref, step.generation); got != step.want {
			t.Errorf("%s: miss = %v, expected %v", step.name, got, step.want)
		}
	}

	f.add(known)
	if !f.miss(known, 3) {
		t.Error("a key found again is not a fault on its next miss")
	}
}
