package audit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// failingSigner makes Sign of the real token fail while fail is set, as a token that is
// away would.
type failingSigner struct {
	audit.Signer
	fail atomic.Bool
}

func (s *failingSigner) Sign(ctx context.Context, ref hsm.KeyRef, digest []byte) ([]byte, error) {
	if s.fail.Load() {
		return nil, hsm.ErrUnavailable
	}
	return s.Signer.Sign(ctx, ref, digest)
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestTrailLogsSignFailureOnce checks that a token outage, during which every batch
// tries its due checkpoint again, is logged once and its end once, not once per record.
func TestTrailLogsSignFailureOnce(t *testing.T) {
	signer := &failingSigner{Signer: openToken(t)}
	logs := &lockedBuffer{}
	trail, err := audit.Open(t.Context(), openSQLite(t, filepath.Join(t.TempDir(), "kms.db")), signer,
		audit.Config{CheckpointRecords: 1, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()

	signer.fail.Store(true)
	for i := range 50 {
		if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	signer.fail.Store(false)
	if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); err != nil {
		t.Fatal(err)
	}

	if n := strings.Count(logs.String(), "audit checkpoint signature failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "audit checkpoint signed again") {
		t.Errorf("the end of the outage was not logged:\n%s", logs)
	}
}

// failingStore makes AppendAudit of the real store fail while fail is set, as a full disk
// or a lost database would.
type failingStore struct {
	*store.SQLStore
	fail atomic.Bool
}

var errStoreDown = errors.New("injected store failure")

func (s *failingStore) AppendAudit(
	ctx context.Context, records []store.AuditRecord, checkpoints []store.AuditCheckpoint,
) error {
	if s.fail.Load() {
		return errStoreDown
	}
	return s.SQLStore.AppendAudit(ctx, records, checkpoints)
}

// TestTrailLogsWriteFailureOnce checks that a store outage, during which every batch
// fails, is logged once and its end once, not once per batch.
func TestTrailLogsWriteFailureOnce(t *testing.T) {
	st := &failingStore{SQLStore: openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))}
	logs := &lockedBuffer{}
	trail, err := audit.Open(t.Context(), st, openToken(t),
		audit.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()

	st.fail.Store(true)
	for i := range 50 {
		if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); !errors.Is(err, errStoreDown) {
			t.Fatalf("record %d during the outage: %v, want the store's error", i, err)
		}
	}
	st.fail.Store(false)
	if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); err != nil {
		t.Fatalf("record after the outage: %v", err)
	}

	if n := strings.Count(logs.String(), "audit batch write failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs.String(), "audit chain resynchronised"); n != 1 {
		t.Errorf("the resynchronisation was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "audit batch written again") {
		t.Errorf("the end of the outage was not logged:\n%s", logs)
	}
	if report := verify(t, st, trail); report.Chains[0].Records != 1 {
		t.Errorf("chain holds %d records, want the 1 written after the outage", report.Chains[0].Records)
	}
}
