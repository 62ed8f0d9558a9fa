package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// AuditStore keeps the audit trail: chains of hashed records and the signed checkpoints
// over them. Rows are only inserted, never updated or deleted. The store neither computes
// nor checks hashes and signatures: package service/audit does.
type AuditStore interface {
	// CreateAuditChain registers a new chain: a chain row, or on a SQLite file a new
	// chain file. It returns ErrConflict when the id exists.
	CreateAuditChain(ctx context.Context, c AuditChain) error

	// AppendAudit appends records and checkpoints in one commit: one transaction, or
	// one write to a chain file. A transaction keeps all of them or none. A kill of the
	// process during a chain file write, or a power loss before the file is flushed,
	// can keep the first complete lines and lose the rest, and readers ignore a partial
	// last line. It returns ErrConflict when a (chain, seq) pair exists, which leaves the
	// store unchanged.
	AppendAudit(ctx context.Context, records []AuditRecord, checkpoints []AuditCheckpoint) error

	// LastAuditRecord returns the record with the highest seq of the chain, or
	// ErrNotFound when the chain has none.
	LastAuditRecord(ctx context.Context, chainID string) (AuditRecord, error)

	// ListAuditChains returns every chain, ordered by start time, then id, followed by
	// the ids that have records or checkpoints but no chain row.
	ListAuditChains(ctx context.Context) ([]AuditChain, error)

	// ListAuditRecords returns up to limit records of the chain with seq greater than
	// afterSeq, in seq order.
	ListAuditRecords(
		ctx context.Context,
		chainID string,
		afterSeq uint64,
		limit int,
	) ([]AuditRecord, error)

	// ListAuditCheckpoints returns up to limit checkpoints of the chain with seq greater
	// than afterSeq, in seq order.
	ListAuditCheckpoints(
		ctx context.Context,
		chainID string,
		afterSeq uint64,
		limit int,
	) ([]AuditCheckpoint, error)
}

// AuditChain is one hash chain of audit records, written by one process from its start
// to its stop. StartedAt and Host are informational and not protected by any hash.
type AuditChain struct {
	ID        string
	StartedAt time.Time
	Host      string
}

// AuditRecord is one stored audit record: the fields of audit.Record plus its place in
// its chain. Hash is the SHA-256 hash over every other field; PrevHash is the Hash of the
// record before it, empty for Seq 1.
type AuditRecord struct {
	ChainID    string
	Seq        uint64
	Time       time.Time // stored at millisecond precision
	RequestID  string
	AccessKey  string
	UserID     string
	ProjectID  string
	SourceIP   string
	Operation  string
	KeyID      string
	KeyVersion uint32
	GrantID    string
	Status     int
	ErrorCode  string
	Sequence   string
	PrevHash   []byte
	Hash       []byte
}

// AuditCheckpoint is a signature by the token's audit signing key over (ChainID, Seq,
// RecordHash), where RecordHash is the Hash of record Seq of the chain.
type AuditCheckpoint struct {
	ChainID    string
	Seq        uint64
	RecordHash []byte
	Signature  []byte
}

const auditRecordColumns = "chain_id, seq, time, request_id, access_key, user_id, " +
	"project_id, source_ip, operation, key_id, key_version, grant_id, status, error_code, " +
	"sequence, prev_hash, hash"

// auditRecordColumnCount is the number of columns in auditRecordColumns.
const auditRecordColumnCount = 17

// auditRowsPerInsert bounds the rows of one multi-row INSERT, so that a statement stays
// far below the bind-parameter limits (32,766 in SQLite 3.32 and later, 65,535 in
// PostgreSQL).
const auditRowsPerInsert = 100

func scanAuditRecord(row rowScanner) (AuditRecord, error) {
	var r AuditRecord
	err := row.Scan(&r.ChainID, &r.Seq, timeColumn{&r.Time}, &r.RequestID, &r.AccessKey,
		&r.UserID, &r.ProjectID, &r.SourceIP, &r.Operation, &r.KeyID, &r.KeyVersion,
		&r.GrantID, &r.Status, &r.ErrorCode, &r.Sequence, &r.PrevHash, &r.Hash)
	return r, err
}

// CreateAuditChain inserts c. A zero StartedAt is set to now.
func (s *SQLStore) CreateAuditChain(ctx context.Context, c AuditChain) error {
	op := "create audit chain " + c.ID
	if c.ID == "" {
		return fmt.Errorf("%s: chain id is required", op)
	}

	c.StartedAt = storedTime(c.StartedAt)
	if c.StartedAt.IsZero() {
		c.StartedAt = currentTime()
	}

	if s.files != nil {
		return s.createAuditChainFile(ctx, op, c)
	}

	_, err := s.write.ExecContext(ctx, s.d.rebind(
		"INSERT INTO audit_chains (chain_id, started_at, host) VALUES (?, ?, ?)"),
		c.ID, s.d.timeValue(c.StartedAt), c.Host)
	if err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// createAuditChainFile creates the chain file of c, unless the audit_chains table of an
// older version of the store has a chain of that id.
func (s *SQLStore) createAuditChainFile(ctx context.Context, op string, c AuditChain) error {
	var n int
	err := s.read.QueryRowContext(ctx, "SELECT count(*) FROM audit_chains WHERE chain_id = ?",
		c.ID).Scan(&n)
	if err != nil {
		return s.wrap(op, err)
	}
	if n > 0 {
		return fmt.Errorf("%s: the chain is in the audit_chains table: %w", op, ErrConflict)
	}

	if err := s.files.create(c); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// LocalAuditAppender is implemented by audit stores that can tell whether an append to a
// chain is local work: a copy into a file's page cache, with no network round trip and
// no flush to disk. audit.Trail then lets each caller append its own record instead of
// handing it to a batching goroutine.
type LocalAuditAppender interface {
	// AuditAppendIsLocal reports whether AppendAudit to chainID is local work.
	AuditAppendIsLocal(chainID string) bool
}

var _ LocalAuditAppender = (*SQLStore)(nil)

// AuditAppendIsLocal reports whether chainID is a chain file that this process has open
// for writing and batches are not flushed one by one (SetAuditFsync(false)).
func (s *SQLStore) AuditAppendIsLocal(chainID string) bool {
	return s.files != nil && s.files.openWriter(chainID) != nil && !s.auditFsync.Load()
}

// AppendAudit appends records and checkpoints in one commit. Record times are
// truncated to milliseconds, the precision the hash covers; a zero time is rejected
// because the column cannot hold it.
//
// Checkpoints without records of a chain file that cannot be written
// (ErrChainFileNotWritable) go to the audit_checkpoints table instead, where every read
// of the chain finds them, so that the end of the chain can still be signed. Records
// never do: the error is returned, and the records are not stored.
func (s *SQLStore) AppendAudit(
	ctx context.Context,
	records []AuditRecord,
	checkpoints []AuditCheckpoint,
) error {
	if len(records) == 0 && len(checkpoints) == 0 {
		return nil
	}
	for _, r := range records {
		if r.ChainID == "" || r.Seq == 0 || r.Time.IsZero() {
			return fmt.Errorf("append audit: record %s/%d: chain id, seq and time are required",
				r.ChainID, r.Seq)
		}
	}

	if s.files != nil {
		w, err := s.auditChainWriter(records, checkpoints)
		if err == nil && w != nil {
			err = w.append(records, checkpoints, s.auditFsync.Load())
		}
		if errors.Is(err, ErrChainFileNotWritable) && len(records) == 0 {
			return s.appendCheckpointsBesideFile(ctx, w, checkpoints, err)
		}
		if err != nil {
			return fmt.Errorf("append %d audit records and %d checkpoints: %w", len(records),
				len(checkpoints), err)
		}
		if w != nil {
			return nil
		}
	}
	return s.appendAuditTables(ctx, records, checkpoints)
}

// appendCheckpointsBesideFile inserts checkpoints of the chain file of w, which failed
// with fileErr, into the audit_checkpoints table, and keeps w from writing a checkpoint
// of the same seqs to the file later.
func (s *SQLStore) appendCheckpointsBesideFile(
	ctx context.Context,
	w *chainWriter,
	checkpoints []AuditCheckpoint,
	fileErr error,
) error {
	if err := s.appendAuditTables(ctx, nil, checkpoints); err != nil {
		return fmt.Errorf("append %d audit checkpoints: %w; inserting them into the "+
			"audit_checkpoints table instead failed: %w", len(checkpoints), fileErr, err)
	}
	last := checkpoints[len(checkpoints)-1]
	w.skipCheckpoints(last.Seq)
	s.log.Warn("audit chain file cannot be written; its checkpoint is stored in the "+
		"audit_checkpoints table of the database instead", "chain_id", last.ChainID,
		"seq", last.Seq, "error", fileErr)
	return nil
}

// appendAuditTables appends records and checkpoints to the audit_records and
// audit_checkpoints tables in one transaction.
func (s *SQLStore) appendAuditTables(
	ctx context.Context,
	records []AuditRecord,
	checkpoints []AuditCheckpoint,
) error {
	op := fmt.Sprintf("append %d audit records and %d checkpoints", len(records),
		len(checkpoints))
	if s.d.name == "sqlite" && !s.auditFsync.Load() {
		return s.appendAuditSQLite(ctx, op, records, checkpoints)
	}
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) error {
		for start := 0; start < len(records); start += auditRowsPerInsert {
			end := min(start+auditRowsPerInsert, len(records))
			if err := s.insertAuditRecords(ctx, tx, records[start:end]); err != nil {
				return err
			}
		}

		for _, c := range checkpoints {
			_, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO audit_checkpoints "+
				"(chain_id, seq, record_hash, signature) VALUES (?, ?, ?, ?)"),
				c.ChainID, c.Seq, c.RecordHash, c.Signature)
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// auditChainWriter returns the writer of the chain file that records and checkpoints
// belong to, or nil when their chain has no file and they go to the audit_records table.
// Records of several chains in one call are rejected when one of them has a file,
// because one write cannot cover two files.
func (s *SQLStore) auditChainWriter(
	records []AuditRecord,
	checkpoints []AuditCheckpoint,
) (*chainWriter, error) {
	var chainID string
	switch {
	case len(records) > 0:
		chainID = records[0].ChainID
	case len(checkpoints) > 0:
		chainID = checkpoints[0].ChainID
	}
	// The chain this process writes has its writer open already: one map lookup.
	w := s.files.openWriter(chainID)
	inFile := w != nil
	if !inFile {
		var err error
		if inFile, err = s.files.has(chainID); err != nil {
			return nil, err
		}
	}

	for _, r := range records {
		if r.ChainID != chainID && inFile {
			return nil, fmt.Errorf("records of chains %s and %s in one call: append them "+
				"one chain at a time", chainID, r.ChainID)
		}
	}
	for _, c := range checkpoints {
		if c.ChainID != chainID && inFile {
			return nil, fmt.Errorf("checkpoints of chains %s and %s in one call: append "+
				"them one chain at a time", chainID, c.ChainID)
		}
	}
	switch {
	case w != nil:
		return w, nil
	case !inFile:
		return nil, nil
	}
	return s.files.writer(chainID)
}

// insertAuditRecords inserts records with one multi-row INSERT.
func (s *SQLStore) insertAuditRecords(ctx context.Context, tx *sql.Tx, records []AuditRecord) error {
	row := "(" + strings.Repeat("?, ", auditRecordColumnCount-1) + "?)"
	rows := make([]string, len(records))
	args := make([]any, 0, len(records)*auditRecordColumnCount)
	for i, r := range records {
		rows[i] = row
		args = append(args, r.ChainID, r.Seq, s.d.timeValue(storedTime(r.Time)), r.RequestID,
			r.AccessKey, r.UserID, r.ProjectID, r.SourceIP, r.Operation, r.KeyID,
			r.KeyVersion, r.GrantID, r.Status, r.ErrorCode, r.Sequence,
			nonNilBytes(r.PrevHash), nonNilBytes(r.Hash))
	}

	_, err := tx.ExecContext(ctx, s.d.rebind("INSERT INTO audit_records ("+
		auditRecordColumns+") VALUES "+strings.Join(rows, ", ")), args...)
	return err
}

// nonNilBytes returns b, or an empty slice for nil, because both drivers store a nil
// []byte as NULL and the hash columns are NOT NULL.
func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// LastAuditRecord returns the record with the highest seq of the chain, or ErrNotFound.
func (s *SQLStore) LastAuditRecord(ctx context.Context, chainID string) (AuditRecord, error) {
	op := "read last audit record of chain " + chainID
	if inFile, err := s.chainInFile(chainID); inFile || err != nil {
		if err == nil {
			var r AuditRecord
			if r, err = s.files.lastRecord(chainID); err == nil {
				return r, nil
			}
		}
		return AuditRecord{}, fmt.Errorf("%s: %w", op, err)
	}

	row := s.read.QueryRowContext(ctx, s.d.rebind("SELECT "+auditRecordColumns+
		" FROM audit_records WHERE chain_id = ? ORDER BY seq DESC LIMIT 1"), chainID)
	r, err := scanAuditRecord(row)
	if errors.Is(err, sql.ErrNoRows) {
		return AuditRecord{}, fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if err != nil {
		return AuditRecord{}, s.wrap(op, err)
	}
	return r, nil
}

// ListAuditChains returns every chain, ordered by start time, then id, followed by the
// chains that have a first record or a checkpoint but no chain row (with a zero
// StartedAt), ordered by id. Those can only come from a deleted chain row, and listing
// them keeps their records in exports and verification.
func (s *SQLStore) ListAuditChains(ctx context.Context) ([]AuditChain, error) {
	chains, orphans, err := s.listTableAuditChains(ctx)
	if err != nil || s.files == nil {
		return append(chains, orphans...), err
	}

	fileChains, err := s.files.chains()
	if err != nil {
		return nil, fmt.Errorf("list audit chains: %w", err)
	}
	// A chain file whose checkpoints are in the audit_checkpoints table
	// (appendCheckpointsBesideFile) is listed once, as a chain file.
	orphans = slices.DeleteFunc(orphans, func(orphan AuditChain) bool {
		return slices.ContainsFunc(fileChains, func(c AuditChain) bool {
			return c.ID == orphan.ID
		})
	})
	for _, c := range fileChains {
		// A chain file whose first line is missing or incomplete has no start time.
		if c.StartedAt.IsZero() {
			orphans = append(orphans, c)
		} else {
			chains = append(chains, c)
		}
	}
	sortChains(chains)
	sort.Slice(orphans, func(i, j int) bool { return orphans[i].ID < orphans[j].ID })
	return append(chains, orphans...), nil
}

// chainInFile reports whether chainID is kept in a chain file.
func (s *SQLStore) chainInFile(chainID string) (bool, error) {
	if s.files == nil {
		return false, nil
	}
	return s.files.has(chainID)
}

// listTableAuditChains returns the chains of the audit_chains table, ordered by start
// time, then id, and the ids with records or checkpoints but no chain row, ordered by id.
func (s *SQLStore) listTableAuditChains(ctx context.Context) (chains, orphans []AuditChain,
	err error) {
	err = s.inReadTx(ctx, "list audit chains", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx,
			"SELECT chain_id, started_at, host FROM audit_chains ORDER BY started_at, chain_id")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c AuditChain
			if err := rows.Scan(&c.ID, timeColumn{&c.StartedAt}, &c.Host); err != nil {
				return err
			}
			chains = append(chains, c)
		}
		if err := rows.Err(); err != nil {
			return err
		}

		orphanRows, err := tx.QueryContext(ctx, "SELECT chain_id FROM audit_records "+
			"WHERE seq = 1 UNION SELECT chain_id FROM audit_checkpoints "+
			"EXCEPT SELECT chain_id FROM audit_chains ORDER BY chain_id")
		if err != nil {
			return err
		}
		defer orphanRows.Close()
		for orphanRows.Next() {
			var c AuditChain
			if err := orphanRows.Scan(&c.ID); err != nil {
				return err
			}
			orphans = append(orphans, c)
		}
		return orphanRows.Err()
	})
	if err != nil {
		return nil, nil, err
	}
	return chains, orphans, nil
}

// ListAuditRecords returns up to limit records of the chain after afterSeq, in seq order.
// limit must be at least 1.
func (s *SQLStore) ListAuditRecords(
	ctx context.Context,
	chainID string,
	afterSeq uint64,
	limit int,
) ([]AuditRecord, error) {
	op := fmt.Sprintf("list audit records of chain %s after %d", chainID, afterSeq)
	if limit < 1 {
		return nil, fmt.Errorf("%s: limit %d must be at least 1", op, limit)
	}
	if inFile, err := s.chainInFile(chainID); inFile || err != nil {
		var records []AuditRecord
		if err == nil {
			records, err = s.files.records(chainID, afterSeq, limit)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		return records, nil
	}

	rows, err := s.read.QueryContext(ctx, s.d.rebind("SELECT "+auditRecordColumns+
		" FROM audit_records WHERE chain_id = ? AND seq > ? ORDER BY seq LIMIT ?"),
		chainID, afterSeq, limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()

	var records []AuditRecord
	for rows.Next() {
		r, err := scanAuditRecord(rows)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		records = append(records, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return records, nil
}

// ListAuditCheckpoints returns up to limit checkpoints of the chain after afterSeq, in
// seq order. limit must be at least 1.
func (s *SQLStore) ListAuditCheckpoints(
	ctx context.Context,
	chainID string,
	afterSeq uint64,
	limit int,
) ([]AuditCheckpoint, error) {
	op := fmt.Sprintf("list audit checkpoints of chain %s after %d", chainID, afterSeq)
	if limit < 1 {
		return nil, fmt.Errorf("%s: limit %d must be at least 1", op, limit)
	}
	inFile, err := s.chainInFile(chainID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if !inFile {
		return s.listTableAuditCheckpoints(ctx, op, chainID, afterSeq, limit)
	}

	checkpoints, err := s.files.checkpoints(chainID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	// Checkpoints that could not be written to the file are in the table
	// (appendCheckpointsBesideFile).
	inTable, err := s.listTableAuditCheckpoints(ctx, op, chainID, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	return mergeCheckpoints(checkpoints, inTable, limit), nil
}

// mergeCheckpoints merges a and b, each sorted by seq, and returns the first limit
// checkpoints in seq order. A seq in both is returned twice, so that verification
// reports it.
func mergeCheckpoints(a, b []AuditCheckpoint, limit int) []AuditCheckpoint {
	if len(b) == 0 {
		return a
	}
	merged := make([]AuditCheckpoint, 0, min(limit, len(a)+len(b)))
	for len(merged) < limit && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && a[0].Seq <= b[0].Seq {
			merged, a = append(merged, a[0]), a[1:]
		} else {
			merged, b = append(merged, b[0]), b[1:]
		}
	}
	return merged
}

// listTableAuditCheckpoints returns up to limit checkpoints of the chain after afterSeq
// from the audit_checkpoints table, in seq order. Errors are wrapped with op.
func (s *SQLStore) listTableAuditCheckpoints(
	ctx context.Context,
	op string,
	chainID string,
	afterSeq uint64,
	limit int,
) ([]AuditCheckpoint, error) {
	rows, err := s.read.QueryContext(ctx, s.d.rebind("SELECT chain_id, seq, record_hash, "+
		"signature FROM audit_checkpoints WHERE chain_id = ? AND seq > ? ORDER BY seq LIMIT ?"),
		chainID, afterSeq, limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()

	var checkpoints []AuditCheckpoint
	for rows.Next() {
		var c AuditCheckpoint
		if err := rows.Scan(&c.ChainID, &c.Seq, &c.RecordHash, &c.Signature); err != nil {
			return nil, s.wrap(op, err)
		}
		checkpoints = append(checkpoints, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return checkpoints, nil
}
