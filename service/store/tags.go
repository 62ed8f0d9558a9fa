package store

// TagStore keeps the tags of keys.
type TagStore interface{}
