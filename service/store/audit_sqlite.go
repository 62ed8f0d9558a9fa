package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/mattn/go-sqlite3"
)

// sqliteAuditStmts are the statements of the relaxed SQLite audit commit, prepared once on
// the writer's driver connection. They run through the driver without a context, because
// go-sqlite3 starts a goroutine per statement to watch a cancellable context, and
// database/sql another per transaction. At one batch per few requests, those goroutines
// and their wake-ups cost more CPU than the inserts. So a batch cannot be cancelled once
// it starts, and only busy_timeout bounds its wait for the database lock.
type sqliteAuditStmts struct {
	conn       *sqlite3.SQLiteConn // the driver connection the statements belong to
	relax      driver.Stmt         // PRAGMA synchronous=NORMAL
	restore    driver.Stmt         // PRAGMA synchronous=FULL
	begin      driver.Stmt         // BEGIN IMMEDIATE
	commit     driver.Stmt
	rollback   driver.Stmt
	record     driver.Stmt // single-row INSERT INTO audit_records
	checkpoint driver.Stmt // single-row INSERT INTO audit_checkpoints
}

// prepareSQLiteAuditStmts prepares every statement of sqliteAuditStmts on c.
func prepareSQLiteAuditStmts(c *sqlite3.SQLiteConn) (*sqliteAuditStmts, error) {
	st := &sqliteAuditStmts{conn: c}
	row := "(" + strings.Repeat("?, ", auditRecordColumnCount-1) + "?)"
	for _, p := range []struct {
		dst   *driver.Stmt
		query string
	}{
		{&st.relax, "PRAGMA synchronous=NORMAL"},
		{&st.restore, "PRAGMA synchronous=FULL"},
		{&st.begin, "BEGIN IMMEDIATE"},
		{&st.commit, "COMMIT"},
		{&st.rollback, "ROLLBACK"},
		{&st.record, "INSERT INTO audit_records (" + auditRecordColumns + ") VALUES " + row},
		{&st.checkpoint, "INSERT INTO audit_checkpoints (chain_id, seq, record_hash, signature) " +
			"VALUES (?, ?, ?, ?)"},
	} {
		stmt, err := c.Prepare(p.query)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.dst = stmt
	}
	return st, nil
}

// close finalizes the prepared statements.
func (st *sqliteAuditStmts) close() {
	for _, stmt := range []driver.Stmt{st.relax, st.restore, st.begin, st.commit, st.rollback,
		st.record, st.checkpoint} {
		if stmt != nil {
			_ = stmt.Close()
		}
	}
}

// appendAuditSQLite is AppendAudit on SQLite without --audit-fsync: one transaction on the
// pinned writer connection, committed with synchronous=NORMAL and set back to FULL after,
// so that metadata writes on the same connection keep fsyncing.
func (s *SQLStore) appendAuditSQLite(
	ctx context.Context,
	op string,
	records []AuditRecord,
	checkpoints []AuditCheckpoint,
) error {
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return s.wrap(op+": get writer connection", err)
	}
	defer conn.Close()

	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("writer connection is a %T, not a go-sqlite3 connection", dc)
		}

		st, err := s.sqliteAuditStmtsFor(c)
		if err != nil {
			return err
		}

		if _, err := st.relax.Exec(nil); err != nil {
			return fmt.Errorf("relax synchronous: %w", err)
		}
		txErr := st.inTx(records, checkpoints)
		if _, err := st.restore.Exec(nil); err != nil {
			// The connection must not serve metadata writes without fsync: drop it.
			s.log.Error("restoring synchronous=FULL failed; closing the writer connection",
				"err", err)
			s.dropSQLiteAuditStmts(c)
			return errors.Join(txErr, driver.ErrBadConn)
		}
		return txErr
	})
	if err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// inTx inserts records and checkpoints between BEGIN IMMEDIATE and COMMIT, and rolls back
// on any failure.
func (st *sqliteAuditStmts) inTx(records []AuditRecord, checkpoints []AuditCheckpoint) error {
	if _, err := st.begin.Exec(nil); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}

	err := st.insert(records, checkpoints)
	if err == nil {
		if _, err = st.commit.Exec(nil); err != nil {
			err = fmt.Errorf("commit: %w", err)
		}
	}
	if err != nil {
		// SQLite may have rolled back already; a second rollback then fails harmlessly.
		_, _ = st.rollback.Exec(nil)
		return err
	}
	return nil
}

func (st *sqliteAuditStmts) insert(records []AuditRecord, checkpoints []AuditCheckpoint) error {
	args := make([]driver.Value, auditRecordColumnCount)
	for _, r := range records {
		args[0], args[1], args[2] = r.ChainID, int64(r.Seq), storedTime(r.Time).UnixMilli()
		args[3], args[4], args[5], args[6] = r.RequestID, r.AccessKey, r.UserID, r.ProjectID
		args[7], args[8], args[9] = r.SourceIP, r.Operation, r.KeyID
		args[10], args[11], args[12] = int64(r.KeyVersion), r.GrantID, int64(r.Status)
		args[13], args[14] = r.ErrorCode, r.Sequence
		args[15], args[16] = nonNilBytes(r.PrevHash), nonNilBytes(r.Hash)
		if _, err := st.record.Exec(args); err != nil {
			return fmt.Errorf("insert audit record %s/%d: %w", r.ChainID, r.Seq, err)
		}
	}

	for _, c := range checkpoints {
		_, err := st.checkpoint.Exec([]driver.Value{c.ChainID, int64(c.Seq),
			nonNilBytes(c.RecordHash), nonNilBytes(c.Signature)})
		if err != nil {
			return fmt.Errorf("insert audit checkpoint %s/%d: %w", c.ChainID, c.Seq, err)
		}
	}
	return nil
}

// sqliteAuditStmtsFor returns the statements prepared on c, preparing them when the writer
// connection is new. Only the holder of the single writer connection calls it.
func (s *SQLStore) sqliteAuditStmtsFor(c *sqlite3.SQLiteConn) (*sqliteAuditStmts, error) {
	s.auditStmtsMu.Lock()
	defer s.auditStmtsMu.Unlock()

	if s.auditStmts != nil && s.auditStmts.conn == c {
		return s.auditStmts, nil
	}
	if s.auditStmts != nil {
		// The pool replaced the connection; the old one's statements are of no use.
		s.auditStmts.close()
		s.auditStmts = nil
	}

	st, err := prepareSQLiteAuditStmts(c)
	if err != nil {
		return nil, err
	}
	s.auditStmts = st
	return st, nil
}

// dropSQLiteAuditStmts closes and clears the statements of c before the pool closes it.
func (s *SQLStore) dropSQLiteAuditStmts(c *sqlite3.SQLiteConn) {
	s.auditStmtsMu.Lock()
	defer s.auditStmtsMu.Unlock()

	if s.auditStmts != nil && s.auditStmts.conn == c {
		s.auditStmts.close()
		s.auditStmts = nil
	}
}
