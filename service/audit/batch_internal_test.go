package audit

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// unavailableSigner is a token that is down: the trail then writes records unsigned,
// which these batching tests do not look at.
type unavailableSigner struct{}

func (unavailableSigner) GenerateSigningKey(context.Context, hsm.KeyRef) error {
	return hsm.ErrUnavailable
}

func (unavailableSigner) Sign(context.Context, hsm.KeyRef, []byte) ([]byte, error) {
	return nil, hsm.ErrUnavailable
}

func (unavailableSigner) PublicKey(context.Context, hsm.KeyRef) (crypto.PublicKey, error) {
	return nil, hsm.ErrUnavailable
}

// gatedStore holds the first AppendAudit until release is closed, so that a test can make
// records queue behind a commit in progress.
type gatedStore struct {
	store.AuditStore
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) AppendAudit(
	ctx context.Context, records []store.AuditRecord, checkpoints []store.AuditCheckpoint,
) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.AuditStore.AppendAudit(ctx, records, checkpoints)
}

// SizeLog is a BatchObserver that collects the size of every committed batch, for the
// tests of this package and of package audit_test.
type SizeLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *SizeLog) ObserveBatch(records int, _ time.Duration) {
	l.mu.Lock()
	l.sizes = append(l.sizes, records)
	l.mu.Unlock()
}

func (l *SizeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.sizes)
}

func openBatchTrail(
	t *testing.T, st store.AuditStore, sizes *SizeLog, batchSize int, wait time.Duration,
	clients func() int,
) *Trail {
	t.Helper()
	trail, err := Open(t.Context(), st, unavailableSigner{}, Config{
		BatchSize: batchSize, BatchWait: wait, Observer: sizes, CheckpointInterval: time.Hour,
		Clients: clients,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trail.Close() })
	return trail
}

func openBatchStore(t *testing.T) *store.SQLStore {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "kms.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestLoneCallerCommitsAlone checks that sequential calls never share a batch: with an
// hour-long BatchWait, any wait for company would hang the test.
func TestLoneCallerCommitsAlone(t *testing.T) {
	sizes := &SizeLog{}
	trail := openBatchTrail(t, openBatchStore(t), sizes, 0, time.Hour, nil)
	trail.gap = time.Hour // set before the first record reaches the writer

	for i := range 5 {
		if err := trail.Record(t.Context(), Record{RequestID: fmt.Sprint(i), Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	if got := sizes.String(); got != "[1 1 1 1 1]" {
		t.Errorf("batch sizes = %s, want [1 1 1 1 1]", got)
	}
}

// TestQueuedCallersShareOneCommit checks that records queued behind a commit in progress
// go into the next commit together. With BatchWait on and at least lingerMinRecords of
// them, that batch also stays open for a record that arrives after the queue was
// drained. The gap and the wait are an hour, so a batch that waits closes only when
// BatchSize is reached: the queued records plus the late one.
func TestQueuedCallersShareOneCommit(t *testing.T) {
	tests := []struct {
		name    string
		wait    time.Duration
		queued  int
		clients int // 0 leaves Config.Clients nil
		want    string
	}{
		{"a late record joins the queued ones", time.Hour, 10, 0, "[1 11]"},
		{"without BatchWait the queue commits alone", -1, 10, 0, "[1 10 1]"},
		{"a few queued records do not wait", time.Hour, lingerMinRecords - 1, 0, "[1 3 1]"},
		{"enough queued records wait", time.Hour, lingerMinRecords, 0, "[1 5]"},
		{"few clients do not wait", time.Hour, 10, lingerMinClients - 1, "[1 10 1]"},
		{"many clients wait", time.Hour, 10, lingerMinClients, "[1 11]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gate := &gatedStore{AuditStore: openBatchStore(t), entered: make(chan struct{}),
				release: make(chan struct{})}
			sizes := &SizeLog{}
			var clients func() int
			if tc.clients > 0 {
				clients = func() int { return tc.clients }
			}
			trail := openBatchTrail(t, gate, sizes, tc.queued+1, tc.wait, clients)
			trail.gap = time.Hour // set before the first record reaches the writer

			var wg sync.WaitGroup
			call := func(id string) {
				wg.Go(func() {
					if err := trail.Record(context.Background(), Record{RequestID: id}); err != nil {
						t.Errorf("Record(%s): %v", id, err)
					}
				})
			}

			call("first")
			<-gate.entered
			for i := range tc.queued {
				call(fmt.Sprint("queued-", i))
			}
			waitWaiting(t, trail, tc.queued)
			close(gate.release)

			// The writer drains the queued records after the first commit; the late
			// record comes after that.
			waitQueued(t, trail, 0)
			call("late")
			wg.Wait()

			if got := sizes.String(); got != tc.want {
				t.Errorf("batch sizes = %s, want %s", got, tc.want)
			}
		})
	}
}

// waitWaiting waits until exactly n records wait behind the commit in progress: in the
// trail's queue, or taken off it by the writer goroutine, which then waits for that commit.
func waitWaiting(t *testing.T, trail *Trail, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		waiting := len(trail.queue)
		if trail.writerHolds.Load() {
			waiting++
		}
		if waiting == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records wait after 10 s, want %d", waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitQueued waits until exactly n records sit in the trail's queue.
func waitQueued(t *testing.T, trail *Trail, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(trail.queue) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d records queued after 10 s, want %d", len(trail.queue), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTrailCommitsInlineOnLocalAppends checks when Record calls commit their own records
// (inline) instead of going through the writer goroutine: only on a store whose appends
// are local, and only when MaxDelay does not ask every batch to wait.
func TestTrailCommitsInlineOnLocalAppends(t *testing.T) {
	tests := []struct {
		name     string
		fsync    bool
		maxDelay time.Duration
		hide     bool // wrap the store so that it does not implement LocalAuditAppender
		want     bool
	}{
		{"chain file", false, 0, false, true},
		{"chain file flushed per batch", true, 0, false, false},
		{"every batch waits", false, time.Millisecond, false, false},
		{"store without local appends", false, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := openBatchStore(t)
			st.SetAuditFsync(tc.fsync)
			var audits store.AuditStore = st
			if tc.hide {
				audits = struct{ store.AuditStore }{st}
			}
			trail, err := Open(t.Context(), audits, unavailableSigner{},
				Config{MaxDelay: tc.maxDelay})
			if err != nil {
				t.Fatal(err)
			}
			defer trail.Close()

			if trail.inline != tc.want {
				t.Errorf("inline = %v, want %v", trail.inline, tc.want)
			}
			if err := trail.Record(t.Context(), Record{RequestID: "r"}); err != nil {
				t.Errorf("Record: %v", err)
			}
		})
	}
}

// TestRecordWaitWithoutDeadlineIsBounded checks that a caller whose context has no
// deadline, as the API's records of finished calls have, stops waiting for a commit that
// does not end after twice WriteTimeout.
func TestRecordWaitWithoutDeadlineIsBounded(t *testing.T) {
	gated := &gatedStore{AuditStore: openBatchStore(t), entered: make(chan struct{}),
		release: make(chan struct{})}
	trail, err := Open(t.Context(), gated, unavailableSigner{}, Config{
		WriteTimeout: 100 * time.Millisecond, CheckpointInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- trail.Record(context.Background(), Record{RequestID: "held"}) }()
	<-gated.entered

	queued := make(chan error, 1)
	go func() { queued <- trail.Record(context.Background(), Record{RequestID: "queued"}) }()
	select {
	case err := <-queued:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Record behind a held commit returned %v, want context.DeadlineExceeded",
				err)
		}
	case <-time.After(time.Minute): // without the bound it never returns
		t.Error("Record behind a held commit did not return within a minute")
	}

	close(gated.release)
	<-first
	_ = trail.Close()
}
