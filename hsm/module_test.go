package hsm

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsmkms/kms/softhsm-setup/softhsmtest"
	"github.com/miekg/pkcs11"
)

func TestOpenInvalidModulePath(t *testing.T) {
	cfg, _ := testConfig(t)
	dir := t.TempDir()
	textFile := filepath.Join(dir, "not-a-library.so")
	if err := os.WriteFile(textFile, []byte("not ELF"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
	}{
		{"missing file", filepath.Join(dir, "missing.so")},
		{"directory", dir},
		{"text file", textFile},
		{"shared library without PKCS#11", "/lib/x86_64-linux-gnu/libc.so.6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); tt.name != "missing file" && err != nil {
				t.Skipf("%s not present: %v", tt.path, err)
			}

			cfg := cfg
			cfg.ModulePath = tt.path
			m, err := Open(context.Background(), cfg, nil)
			if err == nil {
				_ = m.Close()
				t.Fatal("Open returned no error")
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the path %q", err, tt.path)
			}
		})
	}
}

func TestOpenInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no module path", Config{TokenLabel: "a"}},
		{"no token label", Config{ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},
		{"negative sessions", Config{ModulePath: "/x.so", TokenLabel: "a", MaxSessions: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Open(context.Background(), tt.cfg, nil); err == nil {
				t.Error("Open returned no error")
			}
		})
	}
}

func TestOpenWrongPIN(t *testing.T) {
	cfg, _ := testConfig(t)
	correct := cfg.PIN
	cfg.PIN = "wrong-pin-0123456789"
	logs := &syncBuffer{}

	m, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err == nil {
		_ = m.Close()
		t.Fatal("Open returned no error")
	}
	if !errors.Is(err, ErrPINIncorrect) {
		t.Errorf("Open returned %v, expected ErrPINIncorrect", err)
	}

	for _, pin := range []string{cfg.PIN, correct} {
		if strings.Contains(err.Error(), pin) {
			t.Error("error message contains a PIN")
		}
		if strings.Contains(logs.String(), pin) {
			t.Error("log contains a PIN")
		}
	}
}

func TestMissingTokenThenInitialised(t *testing.T) {
	_, setup := testConfig(t)
	label := "late-" + setup.TokenLabel
	pin := "late-user-pin-0123"
	logs := &syncBuffer{}

	cfg := Config{
		ModulePath:        setup.ModulePath,
		TokenLabel:        label,
		PIN:               pin,
		ReconnectInterval: time.Nanosecond,
	}
	m, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Open with a missing token: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })

	ctx := context.Background()
	if err := m.Ping(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping returned %v, expected ErrUnavailable", err)
	}
	if _, err := m.Random(ctx, 8); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Random returned %v, expected ErrUnavailable", err)
	}
	if m.Stats().Connected {
		t.Error("Stats reports a connection to a missing token")
	}
	if n := strings.Count(logs.String(), "token disconnected"); n != 1 {
		t.Errorf("logged %d disconnections for one outage, expected 1", n)
	}

	if err := softhsmtest.InitTokenWithPIN(setup, label, pin); err != nil {
		t.Fatal(err)
	}

	if err := m.Ping(ctx); err != nil {
		t.Fatalf("Ping after the token was initialised: %v", err)
	}
	ref := KeyRef{KeyID: "late", Version: 1}
	generateTestKey(t, m, ref)
	if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
		t.Errorf("Seal after the token was initialised: %v", err)
	}
	if !strings.Contains(logs.String(), "token connected") {
		t.Error("the reconnection was not logged")
	}
	if strings.Contains(logs.String(), pin) {
		t.Error("log contains the PIN")
	}
}

// tokenSlots loads module, initialises it unless the process already did, and calls fn
// with the context and its slots with a token. It finalises only what it initialised.
func tokenSlots(t *testing.T, module string, fn func(p11 *pkcs11.Ctx, slots []uint)) {
	t.Helper()

	p11 := pkcs11.New(module)
	if p11 == nil {
		t.Fatalf("load %s", module)
	}
	defer p11.Destroy()
	if err := p11.Initialize(); err == nil {
		defer func() { _ = p11.Finalize() }()
	} else if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatalf("C_Initialize: %v", err)
	}

	slots, err := p11.GetSlotList(true)
	if err != nil {
		t.Fatalf("C_GetSlotList: %v", err)
	}
	fn(p11, slots)
}

// initTokenUnchecked initialises SoftHSM2's free token with label even when another
// token carries it already, which softhsm-setup refuses to do, and returns its serial
// number.
func initTokenUnchecked(t *testing.T, module, label, soPIN string) string {
	t.Helper()

	serial := ""
	tokenSlots(t, module, func(p11 *pkcs11.Ctx, slots []uint) {
		for _, slot := range slots {
			info, err := p11.GetTokenInfo(slot)
			if err != nil || info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
				continue
			}
			if err := p11.InitToken(slot, soPIN, label); err != nil {
				t.Fatalf("C_InitToken: %v", err)
			}
			// SoftHSM2 gives the token its serial number at C_InitToken and keeps the
			// slot id until the next C_Initialize.
			info, err = p11.GetTokenInfo(slot)
			if err != nil {
				t.Fatalf("C_GetTokenInfo: %v", err)
			}
			serial = strings.TrimRight(info.SerialNumber, " ")
			return
		}
		t.Fatal("SoftHSM2 offers no free token")
	})

	return serial
}

// relabelToken initialises the token with serial number serial again under label.
func relabelToken(t *testing.T, module, serial, label, soPIN string) {
	t.Helper()

	tokenSlots(t, module, func(p11 *pkcs11.Ctx, slots []uint) {
		for _, slot := range slots {
			info, err := p11.GetTokenInfo(slot)
			if err != nil || strings.TrimRight(info.SerialNumber, " ") != serial {
				continue
			}
			if err := p11.InitToken(slot, soPIN, label); err != nil {
				t.Fatalf("C_InitToken: %v", err)
			}
			return
		}
		t.Fatalf("no token with serial number %s", serial)
	})
}

func TestTwoTokensWithOneLabel(t *testing.T) {
	cfg, setup := testConfig(t)
	cfg.ReconnectInterval = time.Nanosecond
	const soPIN = "stray-so-pin-0123"
	stray := initTokenUnchecked(t, setup.ModulePath, setup.TokenLabel, soPIN)
	logs := &syncBuffer{}

	m, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("Open with two tokens of one label: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })

	ctx := context.Background()
	err = m.Ping(ctx)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrTokenAmbiguous) {
		t.Fatalf("Ping returned %v, expected ErrUnavailable and ErrTokenAmbiguous", err)
	}
	for _, want := range []string{"2 tokens are labelled", strconv.Quote(stray)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if m.Stats().Connected {
		t.Error("Stats reports a connection while the label names two tokens")
	}
	if !strings.Contains(logs.String(), "2 tokens are labelled") {
		t.Errorf("the reason was not logged:\n%s", logs)
	}

	relabelToken(t, setup.ModulePath, stray, "stray-"+setup.TokenLabel, soPIN)
	if err := m.Ping(ctx); err != nil {
		t.Fatalf("Ping after the other token was relabelled: %v", err)
	}
	ref := KeyRef{KeyID: "unique", Version: 1}
	generateTestKey(t, m, ref)
	if _, err := m.Seal(ctx, ref, []byte("data"), nil); err != nil {
		t.Errorf("Seal after the other token was relabelled: %v", err)
	}
	if strings.Contains(logs.String(), cfg.PIN) {
		t.Error("log contains the PIN")
	}
}

func TestReconnectIntervalDefersAttempts(t *testing.T) {
	_, setup := testConfig(t)
	label := "deferred-" + setup.TokenLabel
	pin := "deferred-pin-0123"

	cfg := Config{
		ModulePath:        setup.ModulePath,
		TokenLabel:        label,
		PIN:               pin,
		ReconnectInterval: time.Hour,
	}
	m, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })

	if err := softhsmtest.InitTokenWithPIN(setup, label, pin); err != nil {
		t.Fatal(err)
	}

	// The token exists now, but the next attempt is an hour away.
	if err := m.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping returned %v, expected ErrUnavailable until the interval passes", err)
	}
}

func TestCallsAfterClose(t *testing.T) {
	m := openTestModule(t, nil)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := m.Random(context.Background(), 8); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Random after Close returned %v, expected ErrUnavailable", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close returned %v", err)
	}
}
