package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// TestSigningKeyReusedStates checks that a pooled HMAC state carries nothing from one
// verification into the next: each result must equal a fresh crypto/hmac computation.
func TestSigningKeyReusedStates(t *testing.T) {
	key := newSigningKey([]byte(testSK))
	for i := range 20 {
		date := fmt.Sprintf("202405%02dT070809Z", i%28+1)
		digest := sha256.Sum256([]byte(fmt.Sprintf("canonical request %d", i)))
		want := signDigest([]byte(testSK), date, digest)

		if !key.verify(date, &digest, want) {
			t.Fatalf("verification %d rejected the right signature", i)
		}
		wrong := append([]byte(nil), want...)
		wrong[i%len(wrong)] ^= 1
		if key.verify(date, &digest, wrong) {
			t.Fatalf("verification %d accepted a changed signature", i)
		}
		if key.verify(date, &digest, want[:len(want)-1]) {
			t.Fatalf("verification %d accepted a shortened signature", i)
		}
	}
}

// TestSigningKeyConcurrent checks that concurrent verifications with one key get the
// states of their own (run with -race).
func TestSigningKeyConcurrent(t *testing.T) {
	key := newSigningKey([]byte(testSK))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				digest := sha256.Sum256(fmt.Appendf(nil, "goroutine %d request %d", g, i))
				want := signDigest([]byte(testSK), "20240506T070809Z", digest)
				if !key.verify("20240506T070809Z", &digest, want) {
					t.Errorf("goroutine %d: verification %d rejected the right signature", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestSigningKeyDifferentSecrets checks that a signature made with another secret fails.
func TestSigningKeyDifferentSecrets(t *testing.T) {
	digest := sha256.Sum256([]byte("canonical request"))
	other := signDigest([]byte("another-secret-key"), "20240506T070809Z", digest)
	if newSigningKey([]byte(testSK)).verify("20240506T070809Z", &digest, other) {
		t.Fatal("a signature of another secret verified")
	}
}

// TestCredentialsSigningKeyFollowsEntry checks that the signing key lives as long as
// the cache entry: a credential disabled and enabled again gets a new key.
func TestCredentialsSigningKeyFollowsEntry(t *testing.T) {
	clock := newFakeClock(testNow)
	creds, _ := newTestCredentials(t, clock)
	importCredential(t, creds, testAK, testSK)
	ctx := context.Background()

	_, first, err := creds.lookupSigningKey(ctx, testAK)
	if err != nil {
		t.Fatalf("look up: %v", err)
	}
	_, again, err := creds.lookupSigningKey(ctx, testAK)
	if err != nil {
		t.Fatalf("look up again: %v", err)
	}
	if again != first {
		t.Error("a cached credential returned a new signing key")
	}
	if string(first.secret) != testSK {
		t.Error("the signing key does not hold the secret of the credential")
	}

	if err := creds.Disable(ctx, testAK); err != nil {
		t.Fatalf("disable: %v", err)
	}
	if err := creds.Enable(ctx, testAK); err != nil {
		t.Fatalf("enable: %v", err)
	}
	_, after, err := creds.lookupSigningKey(ctx, testAK)
	if err != nil {
		t.Fatalf("look up after enable: %v", err)
	}
	if after == first {
		t.Error("a new cache entry kept the signing key of the old one")
	}
}

func TestAppendCanonicalKey(t *testing.T) {
	names := []string{"x-sdk-date", "content-type", "x-project-id", "user-agent", "host",
		"a", "-x", "x--y", "x-1a", "test_underscore", "www-authenticate", "x-sdk-content-sha256",
		"x.y", "!#$%&'*+-.^_`|~"}
	for _, name := range names {
		key, ok := appendCanonicalKey(nil, name)
		if !ok {
			t.Errorf("appendCanonicalKey(%q) rejected a valid name", name)
			continue
		}
		if want := http.CanonicalHeaderKey(name); string(key) != want {
			t.Errorf("appendCanonicalKey(%q) = %q, expected %q", name, key, want)
		}
	}

	for _, name := range []string{"", "X-Sdk-Date", "bad name", "naïve"} {
		if _, ok := appendCanonicalKey(nil, name); ok {
			t.Errorf("appendCanonicalKey(%q) accepted a name that validHeaderName rejects", name)
		}
	}
}

func TestHeaderValuesAnyCase(t *testing.T) {
	header := http.Header{"X-Sdk-Date": {"20240506T070809Z"}, "TEST_UNDERSCORE": {"1"}}
	if got := headerValues(header, "x-sdk-date"); len(got) != 1 || got[0] != "20240506T070809Z" {
		t.Errorf("headerValues(x-sdk-date) = %q", got)
	}
	if got := headerValues(header, "test_underscore"); len(got) != 1 || got[0] != "1" {
		t.Errorf("headerValues(test_underscore) = %q", got)
	}
	if got := headerValues(header, "x-missing"); got != nil {
		t.Errorf("headerValues(x-missing) = %q, expected nil", got)
	}
}
