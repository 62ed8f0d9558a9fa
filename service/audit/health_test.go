package audit_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hsmkms/kms/service/audit"
)

// TestTrailHealthyReportsFailedWrite checks that Healthy reports a failed write until a
// write succeeds again.
func TestTrailHealthyReportsFailedWrite(t *testing.T) {
	st := &failingStore{SQLStore: openSQLite(t, filepath.Join(t.TempDir(), "kms.db"))}
	trail, err := audit.Open(t.Context(), st, openToken(t),
		audit.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()

	if err := trail.Healthy(); err != nil {
		t.Errorf("Healthy of a new trail: %v", err)
	}

	st.fail.Store(true)
	if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); err == nil {
		t.Fatal("Record succeeded while the store fails")
	}
	if err := trail.Healthy(); err == nil {
		t.Error("Healthy returned nil after a failed write")
	}

	st.fail.Store(false)
	if err := trail.Record(t.Context(), audit.Record{Operation: "describe-key"}); err != nil {
		t.Fatalf("Record after the store is back: %v", err)
	}
	if err := trail.Healthy(); err != nil {
		t.Errorf("Healthy after a successful write: %v", err)
	}
}
