package store

// AuditStore keeps the audit trail.
type AuditStore interface{}
