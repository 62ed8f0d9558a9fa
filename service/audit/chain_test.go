package audit_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// exampleRecord is the worked example of docs/audit.md.
var exampleRecord = store.AuditRecord{
	ChainID:    "7d0c3c52-8f1b-4f43-9a55-2f1f3e0b6a10",
	Seq:        1,
	Time:       time.Date(2025, 3, 1, 12, 0, 0, 123e6, time.UTC),
	RequestID:  "5f2b8c1e9a7d4e3f8b6a1c0d2e4f6a8b",
	AccessKey:  "HSTAEXAMPLE000000001",
	UserID:     "user-1",
	ProjectID:  "0123456789abcdef0123456789abcdef",
	SourceIP:   "127.0.0.1",
	Operation:  "decrypt-datakey",
	KeyID:      "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
	KeyVersion: 1,
	Status:     200,
	Sequence:   "919c82d4-8046-4722-9094-35c3c6524cff",
}

func TestRecordHashWorkedExample(t *testing.T) {
	const want = "88424ef4dbc90301f9fef3147ca12b799cafcc766932eca168383660e030127d"
	if got := hex.EncodeToString(audit.RecordHash(exampleRecord)); got != want {
		t.Errorf("RecordHash = %s, want %s", got, want)
	}
}

func TestRecordHashCoversEveryField(t *testing.T) {
	edits := map[string]func(r *store.AuditRecord){
		"chain id":    func(r *store.AuditRecord) { r.ChainID += "x" },
		"seq":         func(r *store.AuditRecord) { r.Seq++ },
		"prev hash":   func(r *store.AuditRecord) { r.PrevHash = []byte{0} },
		"time":        func(r *store.AuditRecord) { r.Time = r.Time.Add(time.Millisecond) },
		"request id":  func(r *store.AuditRecord) { r.RequestID += "x" },
		"access key":  func(r *store.AuditRecord) { r.AccessKey += "x" },
		"user id":     func(r *store.AuditRecord) { r.UserID += "x" },
		"project id":  func(r *store.AuditRecord) { r.ProjectID += "x" },
		"source ip":   func(r *store.AuditRecord) { r.SourceIP += "x" },
		"operation":   func(r *store.AuditRecord) { r.Operation += "x" },
		"key id":      func(r *store.AuditRecord) { r.KeyID += "x" },
		"key version": func(r *store.AuditRecord) { r.KeyVersion++ },
		"grant id":    func(r *store.AuditRecord) { r.GrantID += "x" },
		"status":      func(r *store.AuditRecord) { r.Status++ },
		"error code":  func(r *store.AuditRecord) { r.ErrorCode += "x" },
		"sequence":    func(r *store.AuditRecord) { r.Sequence += "x" },
		// Length prefixes keep a byte moved from one field to the next from colliding.
		"field boundary": func(r *store.AuditRecord) {
			r.UserID, r.ProjectID = r.UserID+r.ProjectID[:1], r.ProjectID[1:]
		},
	}
	base := hex.EncodeToString(audit.RecordHash(exampleRecord))
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			r := exampleRecord
			edit(&r)
			if hex.EncodeToString(audit.RecordHash(r)) == base {
				t.Errorf("editing the %s leaves the hash unchanged", name)
			}
		})
	}
}
