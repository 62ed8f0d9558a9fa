package service_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
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
	e := newJobEnv(t, service.Config{MaxOnDemandVersion: 2000})
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

// TestRotateOverCreatingVersions checks that versions left in "creating" above the
// current one, as a kmsd stopped during a rotation leaves them, do not block the key's
// next rotation until reconciliation removes them.
func TestRotateOverCreatingVersions(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "left-creating")
	before := e.createDataKey(t, k.ID)

	for _, version := range []uint32{2, 3} {
		if err := e.store.BeginKeyVersion(ctx, k.ID, version); err != nil {
			t.Fatalf("BeginKeyVersion(%d): %v", version, err)
		}
	}

	rotated, err := e.svc.RotateOnDemand(ctx, admin, k.ID)
	if err != nil {
		t.Fatalf("RotateOnDemand with versions 2 and 3 left in creating: %v", err)
	}
	if rotated.CurrentVersion != 4 {
		t.Errorf("current version after the rotation = %d, want 4", rotated.CurrentVersion)
	}

	after := e.createDataKey(t, k.ID)
	e.checkDecrypts(t, k.ID, before, "the data key created before the rotation")
	e.checkDecrypts(t, k.ID, after, "the data key created after the rotation")
}

// createDataKey creates a data key under keyID, with its plaintext.
func (e *jobEnv) createDataKey(t *testing.T, keyID string) service.DataKeyOutput {
	t.Helper()
	dk, err := e.svc.CreateDataKey(context.Background(), admin,
		service.DataKeyInput{KeyRef: keyID}, true)
	if err != nil {
		t.Fatalf("CreateDataKey(%s): %v", keyID, err)
	}
	return dk
}

// checkDecrypts checks that the data key dk decrypts under keyID to its plaintext.
// description names dk in failure messages.
func (e *jobEnv) checkDecrypts(t *testing.T, keyID string, dk service.DataKeyOutput,
	description string) {
	t.Helper()
	out, err := e.svc.DecryptDataKey(context.Background(), admin, service.DecryptDataKeyInput{
		KeyRef: keyID, Ciphertext: dk.Ciphertext, DataKeyLen: len(dk.Plaintext),
	})
	if err != nil {
		t.Errorf("DecryptDataKey of %s: %v", description, err)
		return
	}
	if string(out.Plaintext) != string(dk.Plaintext) {
		t.Errorf("%s decrypts to another data key", description)
	}
}

// commitThenFailStore commits CreateKey and ActivateKeyVersion and then returns an
// error. A request cancelled while PostgreSQL commits its write gets the same result.
type commitThenFailStore struct {
	store.Store
}

func (s commitThenFailStore) ActivateKeyVersion(ctx context.Context, k store.Key, version uint32) error {
	if err := s.Store.ActivateKeyVersion(ctx, k, version); err != nil {
		return err
	}
	return context.Canceled
}

func (s commitThenFailStore) CreateKey(ctx context.Context, k store.Key, maxKeys int) error {
	if err := s.Store.CreateKey(ctx, k, maxKeys); err != nil {
		return err
	}
	return context.Canceled
}

// TestRotationKeepsCommittedVersion checks that a rotation whose activation committed
// although the store returned an error succeeds and keeps the new version's key object,
// which the key now uses.
func TestRotationKeepsCommittedVersion(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "committed-rotation")
	failing := service.New(e.token, commitThenFailStore{Store: e.store}, discardLogger(),
		service.Config{KeyCacheTTL: -1})

	rotated, err := failing.RotateOnDemand(ctx, admin, k.ID)
	if err != nil {
		t.Fatalf("RotateOnDemand whose activation committed: %v", err)
	}
	if rotated.CurrentVersion != 2 {
		t.Errorf("current version returned by the rotation = %d, want 2", rotated.CurrentVersion)
	}

	if got := e.tokenVersions(t, k.ID); len(got) != 2 || got[1] != 2 {
		t.Errorf("token objects of the key = versions %v, want [1 2]", got)
	}
	dk := e.createDataKey(t, k.ID)
	e.checkDecrypts(t, k.ID, dk, "a data key of the committed version")
}

// TestSealLimitRetryWaits checks that after a rotation at the seal limit failed, the
// seals of the next 10 s do not start it again, and the first seal after them does.
func TestSealLimitRetryWaits(t *testing.T) {
	e := newJobEnv(t, service.Config{SealLimit: 2})
	ctx := context.Background()
	k := e.createKey(t, "seal-limit-retry")
	seal := func() { e.createDataKey(t, k.ID) }
	currentVersion := func() uint32 {
		t.Helper()
		got, err := e.svc.DescribeKey(ctx, admin, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.CurrentVersion
	}

	e.token.failGenerate.Store(true)
	seal()
	seal() // reaches the limit; the rotation fails
	e.token.failGenerate.Store(false)

	e.advance(9 * time.Second)
	seal()
	if v := currentVersion(); v != 1 {
		t.Errorf("current version 9 s after the failed rotation = %d, want 1", v)
	}

	e.advance(2 * time.Second)
	seal()
	if v := currentVersion(); v != 2 {
		t.Errorf("current version 11 s after the failed rotation = %d, want 2", v)
	}
}

// TestSealLimitCountsEveryReplica checks that a replica compares the seal limit with the
// seals that other replicas flushed since it loaded the count, and not only with its own.
func TestSealLimitCountsEveryReplica(t *testing.T) {
	e, k, other := sealLimitReplicas(t, "seal-limit-replicas")

	sealDataKeys(t, e.svc, k.ID, 1) // loads the stored count, 0
	sealDataKeys(t, other, k.ID, 6)
	flushSeals(t, other)
	flushSeals(t, e.svc) // the store now holds 7 seals of version 1
	sealDataKeys(t, e.svc, k.ID, 3)

	if v := currentVersionOf(t, e.svc, k.ID); v != 2 {
		t.Errorf("current version after 10 seals on two replicas = %d, want 2", v)
	}
}

// TestDecryptNewVersionWithStaleCache checks that a replica whose key cache predates a
// rotation on another replica decrypts a data key sealed under the new version, instead
// of reporting a version that does not exist.
func TestDecryptNewVersionWithStaleCache(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "stale-cache")
	cached := service.New(e.token, e.store, discardLogger(),
		service.Config{Clock: e.clock, KeyCacheTTL: time.Hour})

	first := e.createDataKey(t, k.ID)
	if _, err := cached.DecryptDataKey(ctx, admin, service.DecryptDataKeyInput{
		KeyRef: k.ID, Ciphertext: first.Ciphertext, DataKeyLen: len(first.Plaintext),
	}); err != nil {
		t.Fatalf("DecryptDataKey before the rotation: %v", err)
	}

	e.rotate(t, k.ID)
	second := e.createDataKey(t, k.ID)
	out, err := cached.DecryptDataKey(ctx, admin, service.DecryptDataKeyInput{
		KeyRef: k.ID, Ciphertext: second.Ciphertext, DataKeyLen: len(second.Plaintext),
	})
	if err != nil {
		t.Fatalf("DecryptDataKey of version 2 on the replica that cached version 1: %v", err)
	}
	if string(out.Plaintext) != string(second.Plaintext) {
		t.Error("the data key of version 2 decrypts to another data key")
	}
}

// TestCreateKeyKeepsCommittedKey checks that a create-key whose key row committed although
// the store returned an error succeeds, and that the key works.
func TestCreateKeyKeepsCommittedKey(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	failing := service.New(e.token, commitThenFailStore{Store: e.store}, discardLogger(),
		service.Config{KeyCacheTTL: -1})

	k, err := failing.CreateKey(context.Background(), admin, service.CreateKeyInput{Alias: "committed"})
	if err != nil {
		t.Fatalf("CreateKey whose key row committed: %v", err)
	}
	dk := e.createDataKey(t, k.ID)
	e.checkDecrypts(t, k.ID, dk, "a data key of the committed key")
}

// TestRotationSkipsLeftoverObject checks that a rotation whose version number already
// has a token object without a row, such as one whose destruction failed, keeps that
// object and takes the next number, and that data keys then use the new version.
func TestRotationSkipsLeftoverObject(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "leftover-object")
	leftover := hsm.KeyRef{KeyID: k.ID, Version: 2}
	if err := e.raw.GenerateKey(ctx, leftover); err != nil {
		t.Fatal(err)
	}

	rotated, err := e.svc.RotateOnDemand(ctx, admin, k.ID)
	if err != nil {
		t.Fatalf("RotateOnDemand over a leftover object: %v", err)
	}
	if rotated.CurrentVersion != 3 {
		t.Errorf("current version after the rotation = %d, want 3", rotated.CurrentVersion)
	}
	if got := e.tokenVersions(t, k.ID); len(got) != 3 {
		t.Errorf("token objects of the key = versions %v, want [1 2 3] with 2 kept", got)
	}
	versions, err := e.store.ListKeyVersions(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	var numbers []uint32
	for _, v := range versions {
		numbers = append(numbers, v.Version)
	}
	if len(numbers) != 2 || numbers[0] != 1 || numbers[1] != 3 {
		t.Errorf("version rows = %v, want [1 3]", numbers)
	}

	dk := e.createDataKey(t, k.ID)
	if dk.Version != 3 {
		t.Errorf("new data key sealed under version %d, want 3", dk.Version)
	}
	e.checkDecrypts(t, k.ID, dk, "a data key of the version after the leftover")
}

// TestSealLimitRereadsAfterIdle checks that a replica whose last read of a version's
// seal count is old reads it again at its first seal after a flush, so that the seals
// another replica flushed meanwhile count towards the limit.
func TestSealLimitRereadsAfterIdle(t *testing.T) {
	e, k, other := sealLimitReplicas(t, "seal-limit-idle")

	sealDataKeys(t, e.svc, k.ID, 1)
	flushSeals(t, e.svc) // the store holds 1 seal, and so does this replica's count
	sealDataKeys(t, other, k.ID, 6)
	flushSeals(t, other) // the store holds 7 seals
	e.advance(2 * time.Second)
	sealDataKeys(t, e.svc, k.ID, 3)

	if v := currentVersionOf(t, e.svc, k.ID); v != 2 {
		t.Errorf("current version after 10 seals on two replicas = %d, want 2", v)
	}
}

// sealLimitReplicas returns a job environment with a seal limit of 10, a key created in
// it, and a second Service on the same store and token, as another replica.
func sealLimitReplicas(t *testing.T, alias string) (*jobEnv, store.Key, *service.Service) {
	t.Helper()
	cfg := service.Config{SealLimit: 10}
	e := newJobEnv(t, cfg)
	k := e.createKey(t, alias)
	cfg.Clock, cfg.KeyCacheTTL = e.clock, -1
	return e, k, service.New(e.token, e.store, discardLogger(), cfg)
}

// sealDataKeys creates n data keys under keyID through svc.
func sealDataKeys(t *testing.T, svc *service.Service, keyID string, n int) {
	t.Helper()
	for range n {
		_, err := svc.CreateDataKey(context.Background(), admin,
			service.DataKeyInput{KeyRef: keyID}, true)
		if err != nil {
			t.Fatalf("CreateDataKey: %v", err)
		}
	}
}

// currentVersionOf returns the current version of keyID as svc describes it.
func currentVersionOf(t *testing.T, svc *service.Service, keyID string) uint32 {
	t.Helper()
	k, err := svc.DescribeKey(context.Background(), admin, keyID)
	if err != nil {
		t.Fatal(err)
	}
	return k.CurrentVersion
}

// flushSeals flushes the seal counts of svc.
func flushSeals(t *testing.T, svc *service.Service) {
	t.Helper()
	if err := svc.FlushSealCounts(context.Background()); err != nil {
		t.Fatalf("FlushSealCounts: %v", err)
	}
}

// TestConcurrentRotationsAllSucceed checks that rotate-on-demand calls racing on one key
// in one process wait for each other: every call succeeds and adds the next version, so
// no version number is skipped.
func TestConcurrentRotationsAllSucceed(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	k := e.createKey(t, "concurrent-rotations")

	const rotations = 10
	errs := make(chan error, rotations)
	for range rotations {
		go func() {
			_, err := e.svc.RotateOnDemand(ctx, admin, k.ID)
			errs <- err
		}()
	}
	for range rotations {
		if err := <-errs; err != nil {
			t.Errorf("RotateOnDemand racing on one key: %v", err)
		}
	}

	if v := currentVersionOf(t, e.svc, k.ID); v != rotations+1 {
		t.Errorf("current version = %d, want %d", v, rotations+1)
	}
	versions := e.tokenVersions(t, k.ID)
	for i, v := range versions {
		if v != uint32(i+1) {
			t.Fatalf("token objects of the key = versions %v, want 1 to %d", versions,
				rotations+1)
		}
	}
	if len(versions) != rotations+1 {
		t.Errorf("token objects of the key = %d versions, want %d", len(versions), rotations+1)
	}
	dk := e.createDataKey(t, k.ID)
	e.checkDecrypts(t, k.ID, dk, "a data key of the last version")
}

// replicaChangeStore changes the key's description through another replica (a second
// Service on the same store and token) before each of its first `changes`
// ActivateKeyVersion calls, so that their revision checks fail as in a real race.
type replicaChangeStore struct {
	store.Store
	replica *service.Service
	changes int // calls still to precede with a change
}

func (s *replicaChangeStore) ActivateKeyVersion(ctx context.Context, k store.Key, version uint32) error {
	if s.changes > 0 {
		s.changes--
		if _, err := s.replica.UpdateKeyDescription(ctx, admin, k.ID, "changed by a replica"); err != nil {
			return err
		}
	}
	return s.Store.ActivateKeyVersion(ctx, k, version)
}

// TestRotationRetriesReplicaChange checks that rotate-on-demand retries a rotation that
// lost its revision check to another replica's change of the key, and gives up with a
// retryable KMS.0102 after three losses.
func TestRotationRetriesReplicaChange(t *testing.T) {
	tests := []struct {
		name        string
		changes     int
		wantCode    string
		wantVersion uint32
	}{
		{name: "one lost check", changes: 1, wantVersion: 2},
		{name: "two lost checks", changes: 2, wantVersion: 2},
		{name: "three lost checks", changes: 3, wantCode: service.CodeUnavailable, wantVersion: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newJobEnv(t, service.Config{})
			ctx := context.Background()
			k := e.createKey(t, "replica-change")
			replica := service.New(e.token, e.store, discardLogger(),
				service.Config{KeyCacheTTL: -1})
			racing := service.New(e.token,
				&replicaChangeStore{Store: e.store, replica: replica, changes: tt.changes},
				discardLogger(), service.Config{KeyCacheTTL: -1})

			_, err := racing.RotateOnDemand(ctx, admin, k.ID)
			if got := codeOf(err); got != tt.wantCode {
				t.Errorf("RotateOnDemand error code = %q (%v), want %q", got, err, tt.wantCode)
			}

			if v := currentVersionOf(t, e.svc, k.ID); v != tt.wantVersion {
				t.Errorf("current version = %d, want %d", v, tt.wantVersion)
			}
			if versions := e.tokenVersions(t, k.ID); uint32(len(versions)) != tt.wantVersion {
				t.Errorf("token objects of the key = versions %v, want 1 to %d", versions,
					tt.wantVersion)
			}
		})
	}
}

// TestReplicaRotationsAllSucceed races rotate-on-demand calls on two replicas: two
// Services with their own connection pools to one PostgreSQL database, sharing the token.
// The key's job lock in the database must make every call wait its turn, so every call
// succeeds and the versions are numbered without gaps.
func TestReplicaRotationsAllSucceed(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	dbURL := storetest.PostgresURL(t)
	replicas := make([]*service.Service, 2)
	for i := range replicas {
		replicas[i], _ = openReplica(t, e, dbURL, service.Config{})
	}
	k, err := replicas[0].CreateKey(ctx, admin, service.CreateKeyInput{Alias: "replica-race"})
	if err != nil {
		t.Fatal(err)
	}

	const perReplica = 6
	errs := make(chan error, 2*perReplica)
	for range perReplica {
		for _, r := range replicas {
			go func() {
				_, err := r.RotateOnDemand(ctx, admin, k.ID)
				errs <- err
			}()
		}
	}
	for range 2 * perReplica {
		if err := <-errs; err != nil {
			t.Errorf("RotateOnDemand racing on two replicas: %v", err)
		}
	}

	want := uint32(2*perReplica + 1)
	if v := currentVersionOf(t, replicas[1], k.ID); v != want {
		t.Errorf("current version = %d, want %d", v, want)
	}
	status, err := replicas[1].KeyRotationStatus(ctx, admin, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range status.Versions {
		if v.Version != uint32(i+1) {
			t.Errorf("version %d is numbered %d: the numbers have a gap", i+1, v.Version)
			break
		}
	}
}

// openReplica returns a Service on e's token and a store of its own on the PostgreSQL
// database at dbURL, as another replica has, and that store.
func openReplica(t *testing.T, e *jobEnv, dbURL string, cfg service.Config) (*service.Service, *store.SQLStore) {
	t.Helper()
	st, err := store.Open(context.Background(), dbURL, nil)
	if err != nil {
		t.Fatalf("open the store of a replica: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.KeyCacheTTL = -1
	return service.New(e.token, st, discardLogger(), cfg), st
}

// holdKeyLock holds the job lock of keyID from st, as a replica that hangs during a
// rotation does, until the returned function is called.
func holdKeyLock(t *testing.T, st *store.SQLStore, keyID string) (release func()) {
	t.Helper()
	locked, done := make(chan struct{}), make(chan struct{})
	go func() {
		err := st.WaitKeyLock(context.Background(), keyID, func(context.Context) error {
			close(locked)
			<-done
			return nil
		})
		if err != nil {
			t.Errorf("hold the lock of key %s: %v", keyID, err)
			close(locked)
		}
	}()
	<-locked
	return func() { close(done) }
}

// TestRotationBehindHeldLock holds a key's lock from another replica. A rotate-on-demand
// call waiting for it must get a retryable KMS.0102 after store.KeyLockWait. A seal that
// reaches the seal limit must not wait for the lock at all, so its data key is returned.
// The hang check gives up after a minute, far above KeyLockWait.
func TestRotationBehindHeldLock(t *testing.T) {
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	dbURL := storetest.PostgresURL(t)
	svc, _ := openReplica(t, e, dbURL, service.Config{SealLimit: 1})
	_, other := openReplica(t, e, dbURL, service.Config{})
	k, err := svc.CreateKey(ctx, admin, service.CreateKeyInput{Alias: "held-lock"})
	if err != nil {
		t.Fatal(err)
	}
	release := holdKeyLock(t, other, k.ID)
	defer release()

	done := make(chan error, 2)
	go func() {
		_, err := svc.RotateOnDemand(ctx, admin, k.ID)
		done <- err
	}()
	go func() {
		_, err := svc.CreateDataKey(ctx, admin, service.DataKeyInput{KeyRef: k.ID}, true)
		done <- err
	}()
	var codes []string
	for range 2 {
		select {
		case err := <-done:
			codes = append(codes, codeOf(err))
		case <-time.After(time.Minute):
			t.Fatal("a call waited a minute for a key lock that another replica holds")
		}
	}
	slices.Sort(codes)
	if want := []string{"", service.CodeUnavailable}; !slices.Equal(codes, want) {
		t.Errorf("error codes of create-datakey and rotate-on-demand = %q, want %q", codes, want)
	}
}

// TestQueuedRotationsGiveUp queues rotate-on-demand calls of one key on one replica
// behind a key lock that another replica holds. The call at the head of the queue waits
// for that lock and gets store.ErrKeyLocked. Those behind it must give up on this
// process's own lock after rotationLockWait instead of waiting their turn for the
// database lock, one after the other, past the HTTP write timeout.
func TestQueuedRotationsGiveUp(t *testing.T) {
	t.Cleanup(service.SetRotationLockWait(200 * time.Millisecond))
	e := newJobEnv(t, service.Config{})
	ctx := context.Background()
	dbURL := storetest.PostgresURL(t)
	svc, _ := openReplica(t, e, dbURL, service.Config{})
	_, other := openReplica(t, e, dbURL, service.Config{})
	k, err := svc.CreateKey(ctx, admin, service.CreateKeyInput{Alias: "queued"})
	if err != nil {
		t.Fatal(err)
	}
	release := holdKeyLock(t, other, k.ID)
	defer release()

	const calls = 4
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := svc.RotateOnDemand(ctx, admin, k.ID)
			errs <- err
		}()
	}
	var lockedInStore, lockedHere int
	for range calls {
		err := <-errs
		switch {
		case codeOf(err) != service.CodeUnavailable:
			t.Errorf("queued RotateOnDemand: %v, want %s", err, service.CodeUnavailable)
		case errors.Is(err, store.ErrKeyLocked):
			lockedInStore++
		case errors.Is(err, context.DeadlineExceeded):
			lockedHere++
		default:
			t.Errorf("queued RotateOnDemand failed for another reason: %v", err)
		}
	}
	if lockedInStore != 1 || lockedHere != calls-1 {
		t.Errorf("%d calls gave up on the database lock and %d on this process's lock, "+
			"want 1 and %d", lockedInStore, lockedHere, calls-1)
	}
}

func TestRotateOnDemandStopsAtMaxVersion(t *testing.T) {
	e := newJobEnv(t, service.Config{MaxOnDemandVersion: 3})
	ctx := context.Background()
	k := e.createKey(t, "max-version")
	e.rotate(t, k.ID)
	e.rotate(t, k.ID)

	_, err := e.svc.RotateOnDemand(ctx, admin, k.ID)
	if got := codeOf(err); got != service.CodeKeyQuota {
		t.Fatalf("rotation past version 3: code %q (%v), want %s", got, err,
			service.CodeKeyQuota)
	}
	if got := e.tokenVersions(t, k.ID); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Errorf("token versions after the rejected rotation = %v, want [1 2 3]", got)
	}

	// Scheduled rotation is not bound by the limit.
	if _, err := e.svc.EnableKeyRotation(ctx, admin, k.ID); err != nil {
		t.Fatal(err)
	}
	e.advance(366 * 24 * time.Hour)
	n, err := e.svc.RunRotation(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RunRotation = %d, %v; want 1, nil", n, err)
	}
	if got := e.tokenVersions(t, k.ID); !slices.Equal(got, []uint32{1, 2, 3, 4}) {
		t.Errorf("token versions after the scheduled rotation = %v, want [1 2 3 4]", got)
	}
}
