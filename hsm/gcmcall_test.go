package hsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// TestGCMCallsMatchMiekg checks that the one-call GCM functions and the miekg/pkcs11
// calls read each other's output, and fail the same way, on one SoftHSM2 session.
func TestGCMCallsMatchMiekg(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "one-call", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	c, release, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if c.gcm == nil {
		t.Fatal("the one-call GCM functions were not loaded for SoftHSM2")
	}
	s, err := c.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.put(s)
	key, err := c.sessionKey(s, ref)
	if err != nil {
		t.Fatal(err)
	}

	iv := bytes.Repeat([]byte{3}, GCMIVSize)
	aad := []byte("header and context")
	for _, plaintext := range [][]byte{{}, bytes.Repeat([]byte{7}, 64), bytes.Repeat([]byte{1}, 4096)} {
		viaCall, err := c.gcm.seal(s.handle, key, nil, iv, plaintext, aad)
		if err != nil {
			t.Fatalf("one-call encrypt of %d bytes: %v", len(plaintext), err)
		}
		viaMiekg, err := encryptGCM(c.p11, s.handle, key, iv, plaintext, aad)
		if err != nil {
			t.Fatalf("miekg encrypt of %d bytes: %v", len(plaintext), err)
		}
		if !bytes.Equal(viaCall, viaMiekg.Ciphertext) {
			t.Errorf("%d bytes: the two paths give different ciphertexts under one IV",
				len(plaintext))
		}

		opened, err := c.gcm.decrypt(s.handle, key, iv, viaMiekg.Ciphertext, aad)
		if err != nil || !bytes.Equal(opened, plaintext) {
			t.Errorf("one-call decrypt of %d bytes = %x, %v", len(plaintext), opened, err)
		}
		opened, err = decryptGCM(c.p11, s.handle, key, iv, viaCall, aad)
		if err != nil || !bytes.Equal(opened, plaintext) {
			t.Errorf("miekg decrypt of %d bytes = %x, %v", len(plaintext), opened, err)
		}
	}

	sealed, err := c.gcm.seal(s.handle, key, nil, iv, dataKey, aad)
	if err != nil {
		t.Fatal(err)
	}
	failures := []struct {
		name      string
		key       pkcs11.ObjectHandle
		aad       []byte
		wantErr   error // nil: any error
		wantClass failure
	}{
		{"other aad", key, []byte("other"), ErrDecrypt, failOther},
		{"invalid key handle", 0x7fffffff, aad, nil, failHandle},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.gcm.decrypt(s.handle, tc.key, iv, sealed, tc.aad)
			if err == nil {
				t.Fatal("decrypt succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("decrypt = %v, want %v", err, tc.wantErr)
			}
			if got := classify(err); got != tc.wantClass {
				t.Errorf("classify(%v) = %d, want %d", err, got, tc.wantClass)
			}
		})
	}

	// A failed decryption ends the operation, so the session takes the next one.
	opened, err := c.gcm.decrypt(s.handle, key, iv, sealed, aad)
	if err != nil || !bytes.Equal(opened, dataKey) {
		t.Errorf("decrypt after failures = %x, %v", opened, err)
	}
}

func TestLoadGCMCallsUnloadedLibrary(t *testing.T) {
	if _, err := loadGCMCalls("/nonexistent/libpkcs11.so", nil, 0); err == nil {
		t.Error("loadGCMCalls of a library that is not loaded succeeded")
	}
}

// TestMiekgPathRoundTrip checks Seal, SealRandom and Open on a connection without the
// one-call functions, as with a library whose function list cannot be read, against
// ciphertexts of the one-call path.
func TestMiekgPathRoundTrip(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "miekg-path", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()
	aad := []byte("header")

	fromCall, err := m.Seal(ctx, ref, dataKey, aad)
	if err != nil {
		t.Fatal(err)
	}
	c, release, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	c.gcm = nil
	release()

	opened, err := m.Open(ctx, ref, fromCall.IV, fromCall.Ciphertext, aad)
	if err != nil || !bytes.Equal(opened, dataKey) {
		t.Errorf("Open of a one-call ciphertext = %x, %v", opened, err)
	}
	sealed, err := m.Seal(ctx, ref, dataKey, aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Equal(sealed.IV, make([]byte, GCMIVSize)) {
		t.Error("Seal used an all-zero IV")
	}
	if opened, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, aad); err != nil ||
		!bytes.Equal(opened, dataKey) {
		t.Errorf("Open = %x, %v", opened, err)
	}
	plaintext, sealedRandom, err := m.SealRandom(ctx, ref, 32, aad)
	if err != nil {
		t.Fatalf("SealRandom: %v", err)
	}
	opened, err = m.Open(ctx, ref, sealedRandom.IV, sealedRandom.Ciphertext, aad)
	if err != nil || !bytes.Equal(opened, plaintext) {
		t.Errorf("Open of SealRandom = %x, %v; want %x", opened, err, plaintext)
	}
	if _, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, []byte("other")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open with other aad = %v, want ErrDecrypt", err)
	}
}

// TestSealFreshIVs checks that every Seal and SealRandom takes a new random IV, on both
// paths: a zero or repeated IV under one key would break GCM.
func TestSealFreshIVs(t *testing.T) {
	for _, path := range []string{"one call", "miekg"} {
		t.Run(path, func(t *testing.T) {
			m := openTestModule(t, nil)
			ref := KeyRef{KeyID: "fresh-iv", Version: 1}
			generateTestKey(t, m, ref)
			ctx := context.Background()
			if path == "miekg" {
				c, release, err := m.acquire()
				if err != nil {
					t.Fatal(err)
				}
				c.gcm = nil
				release()
			}

			seen := map[string]bool{}
			for i := range 20 {
				var iv []byte
				if i%2 == 0 {
					sealed, err := m.Seal(ctx, ref, dataKey, nil)
					if err != nil {
						t.Fatal(err)
					}
					iv = sealed.IV
				} else {
					_, sealed, err := m.SealRandom(ctx, ref, 64, nil)
					if err != nil {
						t.Fatal(err)
					}
					iv = sealed.IV
				}
				if bytes.Equal(iv, make([]byte, GCMIVSize)) {
					t.Fatalf("seal %d used an all-zero IV", i)
				}
				if seen[string(iv)] {
					t.Fatalf("seal %d repeated IV %x", i, iv)
				}
				seen[string(iv)] = true
			}
		})
	}
}

// TestMaxConcurrentCalls checks that a call waits while the bound of calls in progress
// is reached, and goes on once a slot is free.
func TestMaxConcurrentCalls(t *testing.T) {
	for _, bound := range []int{1, 2} {
		t.Run(fmt.Sprintf("bound %d", bound), func(t *testing.T) {
			m := openTestModule(t, func(cfg *Config) {
				cfg.MaxSessions = 4
				cfg.MaxConcurrentCalls = bound
			})
			ref := KeyRef{KeyID: "bounded", Version: 1}
			generateTestKey(t, m, ref)
			ctx := context.Background()

			for range bound {
				if err := m.startCall(ctx); err != nil {
					t.Fatal(err)
				}
			}
			done := sealInBackground(ctx, m, ref)
			select {
			case err := <-done:
				t.Fatalf("Seal returned %v while %d calls held every slot", err, bound)
			case <-time.After(50 * time.Millisecond):
			}

			m.endCall()
			if err := <-done; err != nil {
				t.Errorf("Seal after a slot was freed: %v", err)
			}
			for range bound - 1 {
				m.endCall()
			}

			if bound > 1 {
				for range bound {
					if err := m.startCall(ctx); err != nil {
						t.Fatal(err)
					}
				}
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				if _, err := m.Seal(short, ref, dataKey, nil); !errors.Is(err, ErrUnavailable) {
					t.Errorf("Seal with every slot held until its deadline = %v, want "+
						"ErrUnavailable", err)
				}
				for range bound {
					m.endCall()
				}
			}
		})
	}
}

// sealInBackground seals dataKey under ref in a goroutine and returns the channel that
// receives the error of Seal.
func sealInBackground(ctx context.Context, m *Module, ref KeyRef) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := m.Seal(ctx, ref, dataKey, nil)
		done <- err
	}()
	return done
}

// TestOneCallHeldTooLongFailsFast checks that with a bound of 1, a call that finds the
// slot held for longer than SessionWaitTimeout, as by a call hung in the token, returns
// ErrUnavailable instead of queueing behind it.
func TestOneCallHeldTooLongFailsFast(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) {
		cfg.MaxConcurrentCalls = 1
		cfg.SessionWaitTimeout = 50 * time.Millisecond
	})
	ref := KeyRef{KeyID: "held", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	if err := m.startCall(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the held call outlasts SessionWaitTimeout

	done := sealInBackground(ctx, m, ref)
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Seal behind a call held too long = %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Seal queued behind a call held longer than SessionWaitTimeout")
	}

	m.endCall()
	if _, err := m.Seal(ctx, ref, dataKey, nil); err != nil {
		t.Errorf("Seal after the held call ended: %v", err)
	}
}

func TestMaxConcurrentCallsConfig(t *testing.T) {
	cases := []struct {
		sessions, calls, want int
		ok                    bool
	}{
		{4, 0, 4, true},
		{4, 1, 1, true},
		{4, 9, 4, true},
		{4, -1, 0, false},
	}
	for _, tc := range cases {
		cfg, err := Config{ModulePath: "m", TokenLabel: "t", MaxSessions: tc.sessions,
			MaxConcurrentCalls: tc.calls}.withDefaults()
		if (err == nil) != tc.ok {
			t.Errorf("MaxConcurrentCalls %d: error %v, want ok=%v", tc.calls, err, tc.ok)
			continue
		}
		if tc.ok && cfg.MaxConcurrentCalls != tc.want {
			t.Errorf("MaxConcurrentCalls %d with %d sessions became %d, want %d", tc.calls,
				tc.sessions, cfg.MaxConcurrentCalls, tc.want)
		}
	}
}
