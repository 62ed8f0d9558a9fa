package hsm

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "round-trip", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty plaintext", []byte{}, []byte("header")},
		{"data key without aad", bytes.Repeat([]byte{7}, 64), nil},
		{"data key with aad", bytes.Repeat([]byte{9}, 64), []byte("header+context")},
		{"four kibibytes", bytes.Repeat([]byte{1}, 4096), []byte("a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed, err := m.Seal(ctx, ref, tt.plaintext, tt.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(sealed.IV) != GCMIVSize {
				t.Errorf("IV is %d bytes, expected %d", len(sealed.IV), GCMIVSize)
			}
			if len(sealed.Ciphertext) != len(tt.plaintext)+GCMTagSize {
				want := len(tt.plaintext) + GCMTagSize
				t.Errorf("ciphertext is %d bytes, expected %d", len(sealed.Ciphertext), want)
			}

			got, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, tt.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open returned %x, expected %x", got, tt.plaintext)
			}
		})
	}
}

func TestOpenTamperedInput(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "tamper", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	aad := []byte("header")
	sealed, err := m.Seal(ctx, ref, bytes.Repeat([]byte{5}, 64), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}

	flip := func(b []byte, i int) []byte {
		out := bytes.Clone(b)
		out[i] ^= 0x01
		return out
	}
	last := len(sealed.Ciphertext) - 1

	tests := []struct {
		name       string
		iv, ct, ad []byte
	}{
		{"aad mismatch", sealed.IV, sealed.Ciphertext, []byte("headeR")},
		{"aad missing", sealed.IV, sealed.Ciphertext, nil},
		{"flipped IV byte", flip(sealed.IV, 0), sealed.Ciphertext, aad},
		{"flipped ciphertext byte", sealed.IV, flip(sealed.Ciphertext, 3), aad},
		{"flipped tag byte", sealed.IV, flip(sealed.Ciphertext, last), aad},
		{"truncated tag", sealed.IV, sealed.Ciphertext[:last], aad},
		{"shorter than tag", sealed.IV, sealed.Ciphertext[:GCMTagSize-1], aad},
		{"short IV", sealed.IV[:8], sealed.Ciphertext, aad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Open(ctx, ref, tt.iv, tt.ct, tt.ad)
			if !errors.Is(err, ErrDecrypt) {
				t.Errorf("Open returned %v, expected ErrDecrypt", err)
			}
		})
	}

	// A failed C_Decrypt ends the operation, so the session stays usable.
	if _, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, aad); err != nil {
		t.Errorf("Open after failures: %v", err)
	}
}

func TestSealSamePlaintextDiffers(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "fresh-iv", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()
	plaintext := bytes.Repeat([]byte{3}, 64)

	first, err := m.Seal(ctx, ref, plaintext, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := m.Seal(ctx, ref, plaintext, nil)
	if err != nil {
		t.Fatal(err)
	}

	if bytes.Equal(first.IV, second.IV) {
		t.Error("two seals used the same IV")
	}
	if bytes.Equal(first.Ciphertext, second.Ciphertext) {
		t.Error("two seals returned the same ciphertext")
	}
}

func TestSealTokenGeneratesIVOnSoftHSM(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.TokenGeneratesIV = true })
	ref := KeyRef{KeyID: "token-iv", Version: 1}
	generateTestKey(t, m, ref)

	if err := m.Ping(context.Background()); err != nil {
		t.Fatalf("Ping before any seal: %v", err)
	}

	// SoftHSM2 2.6.1 uses the IV it is given, so the zeroed buffer comes back unchanged.
	_, err := m.Seal(context.Background(), ref, []byte("data"), nil)
	if !errors.Is(err, errNoTokenIV) {
		t.Errorf("Seal returned %v, expected errNoTokenIV", err)
	}
	// /readyz calls Ping: a replica whose every seal fails must not stay ready.
	if err := m.Ping(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping after a seal without a token IV = %v, want ErrUnavailable", err)
	}
}

func TestSealMissingKey(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "never-generated", Version: 1}
	ctx := context.Background()

	if _, err := m.Seal(ctx, ref, []byte("data"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Seal returned %v, expected ErrKeyNotFound", err)
	}
	iv := make([]byte, GCMIVSize)
	if _, err := m.Open(ctx, ref, iv, make([]byte, 32), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Open returned %v, expected ErrKeyNotFound", err)
	}
}

func TestRandom(t *testing.T) {
	m := openTestModule(t, nil)
	ctx := context.Background()

	tests := []struct {
		name    string
		n       int
		wantErr bool
	}{
		{"zero bytes", 0, false},
		{"thirty-two bytes", 32, false},
		{"negative length", -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Random(ctx, tt.n)
			if tt.wantErr {
				if err == nil {
					t.Error("Random returned no error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Random: %v", err)
			}
			if len(got) != tt.n {
				t.Errorf("Random returned %d bytes, expected %d", len(got), tt.n)
			}
		})
	}
}

func TestSealRandomRoundTrip(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "seal-random", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()
	aad := []byte("header and encryption context")

	tests := []struct {
		name    string
		n       int
		wantErr bool
	}{
		{"one byte", 1, false},
		{"64-byte data key", 64, false},
		{"zero bytes", 0, true},
		{"negative length", -1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plaintext, sealed, err := m.SealRandom(ctx, ref, tc.n, aad)
			if tc.wantErr {
				if err == nil {
					t.Error("SealRandom returned no error")
				}
				return
			}
			if err != nil {
				t.Fatalf("SealRandom: %v", err)
			}
			if len(plaintext) != tc.n {
				t.Errorf("plaintext is %d bytes, expected %d", len(plaintext), tc.n)
			}
			if len(sealed.IV) != GCMIVSize {
				t.Errorf("IV is %d bytes, expected %d", len(sealed.IV), GCMIVSize)
			}
			if len(sealed.Ciphertext) != tc.n+GCMTagSize {
				t.Errorf("ciphertext is %d bytes, expected %d", len(sealed.Ciphertext), tc.n+GCMTagSize)
			}

			opened, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(opened, plaintext) {
				t.Error("Open returned a different plaintext than SealRandom")
			}
		})
	}

	// The IV comes from the same C_GenerateRandom call as the plaintext, so check that
	// neither repeats across calls.
	a, sa, _ := m.SealRandom(ctx, ref, 32, aad)
	b, sb, _ := m.SealRandom(ctx, ref, 32, aad)
	if bytes.Equal(a, b) {
		t.Error("two calls returned the same plaintext")
	}
	if bytes.Equal(sa.IV, sb.IV) {
		t.Error("two calls used the same IV")
	}
}

func TestSealRandomTokenGeneratesIVOnSoftHSM(t *testing.T) {
	m := openTestModule(t, func(cfg *Config) { cfg.TokenGeneratesIV = true })
	ref := KeyRef{KeyID: "seal-random-token-iv", Version: 1}
	generateTestKey(t, m, ref)

	// SoftHSM2 2.6.1 uses the IV it is given, so the zeroed buffer comes back unchanged.
	plaintext, _, err := m.SealRandom(context.Background(), ref, 32, nil)
	if !errors.Is(err, errNoTokenIV) {
		t.Errorf("SealRandom returned %v, expected errNoTokenIV", err)
	}
	if plaintext != nil {
		t.Error("SealRandom returned a plaintext with its error")
	}
}

func TestSealRandomMissingKey(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "never-generated", Version: 1}

	_, _, err := m.SealRandom(context.Background(), ref, 32, nil)
	if !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("SealRandom returned %v, expected ErrKeyNotFound", err)
	}
}
