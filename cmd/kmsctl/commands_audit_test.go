package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
)

// flakySource is an audit.Source whose chain c grows by one record per poll, and whose
// polls fail with failWith while failures is above zero. It replaces a kmsd whose
// store fails for a while, which a real kmsd cannot be made to do on cue.
type flakySource struct {
	mu       sync.Mutex
	records  []store.AuditRecord
	failures int
	failWith error
}

func (f *flakySource) ListAuditChains(context.Context) ([]store.AuditChain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.records = append(f.records, store.AuditRecord{ChainID: "c",
		Seq: uint64(len(f.records) + 1), Time: time.Now(), Operation: "gen-random"})
	if f.failures > 0 {
		f.failures--
		return nil, f.failWith
	}
	return []store.AuditChain{{ID: "c"}}, nil
}

func (f *flakySource) ListAuditRecords(_ context.Context, _ string, after uint64,
	limit int) ([]store.AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := min(len(f.records), int(after)+limit)
	return append([]store.AuditRecord(nil), f.records[after:end]...), nil
}

func (f *flakySource) ListAuditCheckpoints(context.Context, string, uint64,
	int) ([]store.AuditCheckpoint, error) {
	return nil, nil
}

func TestTailAuditFailures(t *testing.T) {
	cases := []struct {
		name      string
		failWith  error
		wantError bool
	}{
		{"kmsd answers 503", &apiError{Status: http.StatusServiceUnavailable,
			Code: "KMS.0102"}, false},
		{"store unavailable", store.ErrUnavailable, false},
		{"kmsd answers 403", &apiError{Status: http.StatusForbidden, Code: "KMS.0307"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The first poll, which skips the existing records, succeeds; the next two fail.
			src := &flakySource{failWith: tc.failWith}
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			first := true
			skip := func(store.AuditRecord) bool {
				if first {
					first = false
					src.mu.Lock()
					src.failures = 2
					src.mu.Unlock()
				}
				return false
			}

			err := tailAudit(ctx, src, &out, &errOut, 10*time.Millisecond, skip)
			if tc.wantError {
				if !errors.Is(err, tc.failWith) {
					t.Errorf("tailAudit = %v, want %v", err, tc.failWith)
				}
				return
			}
			if err != nil {
				t.Fatalf("tailAudit = %v, want it to retry", err)
			}
			if n := strings.Count(errOut.String(), "retrying every"); n != 1 {
				t.Errorf("stderr reports the outage %d times, want once:\n%s", n, errOut.String())
			}
			if !strings.Contains(errOut.String(), "can be read again") {
				t.Errorf("stderr does not report the recovery:\n%s", errOut.String())
			}
			// Records 2 and 3 were added by the failed polls: none may be missing.
			for _, seq := range []string{`"seq":2,`, `"seq":3,`, `"seq":4,`} {
				if !strings.Contains(out.String(), seq) {
					t.Errorf("output lacks the record with %s:\n%s", seq, out.String())
				}
			}
		})
	}
}

// damagedChainSource lists a damaged chain before the chain of an embedded flakySource.
type damagedChainSource struct{ *flakySource }

func (d damagedChainSource) ListAuditChains(ctx context.Context) ([]store.AuditChain, error) {
	chains, err := d.flakySource.ListAuditChains(ctx)
	return append([]store.AuditChain{{ID: "bad"}}, chains...), err
}

func (d damagedChainSource) ListAuditRecords(ctx context.Context, chainID string,
	after uint64, limit int) ([]store.AuditRecord, error) {
	if chainID == "bad" {
		return nil, &store.ChainFileError{ChainID: "bad", Line: 2, Reason: "garbage"}
	}
	return d.flakySource.ListAuditRecords(ctx, chainID, after, limit)
}

func TestTailAuditSkipsDamagedChain(t *testing.T) {
	src := damagedChainSource{&flakySource{}}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()

	err := tailAudit(ctx, src, &out, &errOut, 10*time.Millisecond,
		func(store.AuditRecord) bool { return false })
	if err != nil {
		t.Fatalf("tailAudit = %v, want it to go on without the damaged chain", err)
	}
	if n := strings.Count(errOut.String(), "skipping audit chain bad"); n != 1 {
		t.Errorf("stderr reports the damaged chain %d times, want once:\n%s", n,
			errOut.String())
	}
	if !strings.Contains(out.String(), `"seq":3,`) {
		t.Errorf("the records of the intact chain were not printed:\n%s", out.String())
	}
}

func TestChainReadErrorMapsDamage(t *testing.T) {
	damaged := chainReadError("c1", &apiError{Status: http.StatusInternalServerError,
		Code: "KMS.0101", Message: "audit chain c1 is damaged at line 4 of its chain file; run kmsctl audit verify"})
	var chainErr *store.ChainFileError
	if !errors.As(damaged, &chainErr) || chainErr.ChainID != "c1" {
		t.Fatalf("chainReadError of a 500 KMS.0101 = %v, want a *store.ChainFileError", damaged)
	}
	if chainErr.Line != 4 {
		t.Errorf("line = %d, want 4 from the message", chainErr.Line)
	}

	unavailable := &apiError{Status: http.StatusServiceUnavailable, Code: "KMS.0102"}
	if err := chainReadError("c1", unavailable); err != unavailable {
		t.Errorf("chainReadError of a 503 = %v, want it unchanged", err)
	}
}
