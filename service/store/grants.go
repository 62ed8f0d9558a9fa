package store

// GrantStore keeps grants: permissions on one key given to another principal.
type GrantStore interface{}
