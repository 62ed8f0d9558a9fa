package store

// AliasStore keeps the aliases of the alias API (create, delete, list, associate),
// which are separate from a key's key_alias.
type AliasStore interface{}
