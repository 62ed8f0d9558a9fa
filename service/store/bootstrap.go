package store

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
)

// bootstrapLockClass is the first key of the PostgreSQL advisory lock of LockBootstrap
// ("kmsb"). The second key is a hash of the store's schema, so that stores in other
// schemas of one database do not wait for each other.
const bootstrapLockClass = 0x6b6d7362

// LockBootstrap takes the store-wide lock that makes the first-start steps of replicas
// run one replica at a time. These steps generate the keys that exist once per token, the
// credential sealing key and the audit signing key, and create the first admin
// credential. Without the lock, replicas started at one moment on a new store each generate
// their own key under one label and their own admin credential.
//
// On PostgreSQL it waits, until ctx is done, for a session advisory lock on one
// connection of the pool, which unlock releases. The lock also ends with the session, so
// a replica that dies holding it blocks no other. A SQLite file store has one writer
// process (its lock file), so LockBootstrap returns at once. unlock is safe to call once.
func (s *SQLStore) LockBootstrap(ctx context.Context) (unlock func(), err error) {
	const op = "lock the first-start steps"
	if s.d.name != "postgres" {
		return func() {}, nil
	}

	conn, err := s.write.Conn(ctx)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	_, err = conn.ExecContext(ctx, "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
		bootstrapLockClass)
	if err != nil {
		conn.Close()
		return nil, s.wrap(op, err)
	}

	return func() {
		_, err := conn.ExecContext(context.Background(),
			"SELECT pg_advisory_unlock($1, hashtext(current_schema()))", bootstrapLockClass)
		if err != nil {
			// A connection that still holds the lock must not go back to the pool:
			// ErrBadConn makes database/sql close it, which ends the session and the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			s.log.Warn("releasing the first-start lock failed; closing its connection "+
				"releases it", "error", err)
		}
		conn.Close()
	}, nil
}

// storeIDSetting is the settings row of StoreID.
const storeIDSetting = "store_id"

// StoreID returns the random id that distinguishes this store from others: 32 lower-case
// hex digits. The first call on the store records it in the settings table, and every
// replica reads the same id after. A copy of the database keeps it.
func (s *SQLStore) StoreID(ctx context.Context) (string, error) {
	const op = "get store id"
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}

	_, err := s.write.ExecContext(ctx, s.d.rebind(
		"INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"),
		storeIDSetting, hex.EncodeToString(b[:]))
	if err != nil {
		return "", s.wrap(op, err)
	}

	var id string
	err = s.write.QueryRowContext(ctx, s.d.rebind("SELECT value FROM settings WHERE name = ?"),
		storeIDSetting).Scan(&id)
	if err != nil {
		return "", s.wrap(op, err)
	}
	return id, nil
}
