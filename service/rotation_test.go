package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/hsmkms/kms/service"
)

// TestThousandRotationsDecryptWork rotates one key 1,000 times on the real token and
// checks that the first data key still opens with the same work as before: one token
// Open and one key-row read, and no read of the version list. Work, not time, is
// asserted, so the test does not measure the token's own lookup cost, which the token
// layer keeps flat by finding objects by CKA_ID and caching their handles.
//
// SoftHSM2 2.6.1 slows down as a token fills: generating the 1,000 objects took about
// 26 s on a 2-core machine, so -short skips this test.
func TestThousandRotationsDecryptWork(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 key generations on SoftHSM2 take tens of seconds")
	}
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "thousand-rotations")

	c1, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: k.ID}, true)
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func() (opens, keyReads, versionLists int64) {
		t.Helper()
		opens0 := e.token.openCalls.Load()
		reads0 := e.store.getKeyCalls.Load()
		lists0 := e.store.listVersionsCalls.Load()

		out, err := e.svc.DecryptDataKey(ctx, admin, service.DecryptDataKeyInput{
			KeyRef: k.ID, Ciphertext: c1.Ciphertext, DataKeyLen: len(c1.Plaintext),
		})
		if err != nil {
			t.Fatalf("DecryptDataKey of C1: %v", err)
		}
		if string(out.Plaintext) != string(c1.Plaintext) {
			t.Fatal("C1 decrypts to a different data key")
		}
		return e.token.openCalls.Load() - opens0, e.store.getKeyCalls.Load() - reads0,
			e.store.listVersionsCalls.Load() - lists0
	}

	opensBefore, readsBefore, listsBefore := decrypt()

	const rotations = 1000
	for range rotations {
		if _, err := e.svc.RotateOnDemand(ctx, admin, k.ID); err != nil {
			t.Fatalf("RotateOnDemand: %v", err)
		}
		e.advance(time.Millisecond)
	}

	opensAfter, readsAfter, listsAfter := decrypt()
	if opensAfter != opensBefore || opensAfter != 1 {
		t.Errorf("token Open calls per decrypt: %d before, %d after %d rotations; want 1 both times",
			opensBefore, opensAfter, rotations)
	}
	if readsAfter != readsBefore {
		t.Errorf("key-row reads per decrypt: %d before, %d after %d rotations", readsBefore,
			readsAfter, rotations)
	}
	if listsBefore != 0 || listsAfter != 0 {
		t.Errorf("version-list reads per decrypt: %d before, %d after; want 0", listsBefore, listsAfter)
	}

	c1001, err := e.svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: k.ID}, false)
	if err != nil {
		t.Fatal(err)
	}
	if c1001.Version != rotations+1 {
		t.Errorf("a new data key uses version %d, want %d", c1001.Version, rotations+1)
	}
}
