// Package audit defines the audit record of one API call and the Recorder that makes
// records durable.
package audit

import (
	"context"
	"time"
)

// Record is one API call, allowed or denied. It never carries a plaintext, a data key, a
// secret key or a ciphertext.
type Record struct {
	Time       time.Time
	RequestID  string
	AccessKey  string
	UserID     string
	ProjectID  string
	SourceIP   string
	Operation  string
	KeyID      string
	KeyVersion uint32
	// GrantID is the id of the grant that allowed the call when the caller's role did
	// not, or empty. A re-encrypt allowed by grants on both keys has both ids,
	// comma-separated, the source key's first.
	GrantID string
	// Status is the HTTP status of the answer.
	Status int
	// ErrorCode is the KMS or gateway error code; empty on success.
	ErrorCode string
	// Sequence is the request's sequence field, when it had one.
	Sequence string
}

// Recorder makes records durable. Record returns only once r is durable, or with an
// error when it cannot be written; the caller then answers 503 and releases nothing.
type Recorder interface {
	Record(ctx context.Context, r Record) error
}

// Discard is a Recorder that keeps nothing, for tools and tests that run without a
// trail.
type Discard struct{}

// Record drops r.
func (Discard) Record(context.Context, Record) error { return nil }
