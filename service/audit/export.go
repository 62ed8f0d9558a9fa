package audit

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hsmkms/kms/service/store"
)

// Source reads a stored trail. *store.SQLStore implements it, and so does kmsctl's
// client of the admin audit routes.
type Source interface {
	ListAuditChains(ctx context.Context) ([]store.AuditChain, error)
	ListAuditRecords(
		ctx context.Context,
		chainID string,
		afterSeq uint64,
		limit int,
	) ([]store.AuditRecord, error)
	ListAuditCheckpoints(
		ctx context.Context,
		chainID string,
		afterSeq uint64,
		limit int,
	) ([]store.AuditCheckpoint, error)
}

// pageSize is the number of rows read from a Source per call.
const pageSize = 1000

// Line types of the export format.
const (
	LineChain      = "chain"
	LineCheckpoint = "checkpoint"
	LineRecord     = "record"
	// LineDamaged replaces, in an export, the unread lines of a chain whose chain file is
	// damaged at line Seq, with the reason in Reason. Verification fails on it, so an
	// export with a damaged chain never verifies.
	LineDamaged = "damaged"
)

// Line is one line of an export: a JSON object whose type is LineChain, LineCheckpoint,
// LineRecord or LineDamaged, with the fields of that type. Hashes and signatures are lower-case hex,
// times are RFC 3339 in UTC with milliseconds.
type Line struct {
	Type    string `json:"type"`
	ChainID string `json:"chain_id"`

	// Chain fields, informational only.
	StartedAt string `json:"started_at,omitempty"`
	Host      string `json:"host,omitempty"`

	// Record and checkpoint fields.
	Seq uint64 `json:"seq,omitempty"`

	// Record fields.
	Time       string `json:"time,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	AccessKey  string `json:"access_key,omitempty"`
	UserID     string `json:"user_id,omitempty"`
	ProjectID  string `json:"project_id,omitempty"`
	SourceIP   string `json:"source_ip,omitempty"`
	Operation  string `json:"operation,omitempty"`
	KeyID      string `json:"key_id,omitempty"`
	KeyVersion uint32 `json:"key_version,omitempty"`
	GrantID    string `json:"grant_id,omitempty"`
	Status     int    `json:"status,omitempty"`
	ErrorCode  string `json:"error_code,omitempty"`
	Sequence   string `json:"sequence,omitempty"`
	PrevHash   string `json:"prev_hash,omitempty"`
	Hash       string `json:"hash,omitempty"`

	// Checkpoint fields.
	RecordHash string `json:"record_hash,omitempty"`
	Signature  string `json:"signature,omitempty"`

	// Damaged chain field.
	Reason string `json:"reason,omitempty"`
}

// timeLayout is RFC 3339 with exactly three fractional digits, the precision of the
// stored time.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// ChainLine returns the export line of c.
func ChainLine(c store.AuditChain) Line {
	l := Line{Type: LineChain, ChainID: c.ID, Host: c.Host}
	if !c.StartedAt.IsZero() {
		l.StartedAt = c.StartedAt.UTC().Format(timeLayout)
	}
	return l
}

// RecordLine returns the export line of r.
func RecordLine(r store.AuditRecord) Line {
	return Line{
		Type: LineRecord, ChainID: r.ChainID, Seq: r.Seq,
		Time: r.Time.UTC().Format(timeLayout), RequestID: r.RequestID,
		AccessKey: r.AccessKey, UserID: r.UserID, ProjectID: r.ProjectID,
		SourceIP: r.SourceIP, Operation: r.Operation, KeyID: r.KeyID,
		KeyVersion: r.KeyVersion, GrantID: r.GrantID, Status: r.Status,
		ErrorCode: r.ErrorCode, Sequence: r.Sequence,
		PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash),
	}
}

// CheckpointLine returns the export line of c.
func CheckpointLine(c store.AuditCheckpoint) Line {
	return Line{
		Type: LineCheckpoint, ChainID: c.ChainID, Seq: c.Seq,
		RecordHash: hex.EncodeToString(c.RecordHash), Signature: hex.EncodeToString(c.Signature),
	}
}

// Chain returns the chain of a LineChain line.
func (l Line) Chain() (store.AuditChain, error) {
	c := store.AuditChain{ID: l.ChainID, Host: l.Host}
	if l.StartedAt == "" {
		return c, nil
	}
	t, err := time.Parse(time.RFC3339Nano, l.StartedAt)
	if err != nil {
		return store.AuditChain{}, fmt.Errorf("chain %s: invalid started_at %q", l.ChainID,
			l.StartedAt)
	}
	c.StartedAt = t.UTC()
	return c, nil
}

// Record returns the record of a LineRecord line.
func (l Line) Record() (store.AuditRecord, error) {
	at, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return store.AuditRecord{}, fmt.Errorf("record %s/%d: invalid time %q", l.ChainID,
			l.Seq, l.Time)
	}
	prev, err1 := hex.DecodeString(l.PrevHash)
	hash, err2 := hex.DecodeString(l.Hash)
	if err := errors.Join(err1, err2); err != nil {
		return store.AuditRecord{}, fmt.Errorf("record %s/%d: invalid hex in prev_hash or hash",
			l.ChainID, l.Seq)
	}
	return store.AuditRecord{
		ChainID: l.ChainID, Seq: l.Seq, Time: at.UTC(), RequestID: l.RequestID,
		AccessKey: l.AccessKey, UserID: l.UserID, ProjectID: l.ProjectID,
		SourceIP: l.SourceIP, Operation: l.Operation, KeyID: l.KeyID,
		KeyVersion: l.KeyVersion, GrantID: l.GrantID, Status: l.Status,
		ErrorCode: l.ErrorCode, Sequence: l.Sequence, PrevHash: prev, Hash: hash,
	}, nil
}

// Checkpoint returns the checkpoint of a LineCheckpoint line.
func (l Line) Checkpoint() (store.AuditCheckpoint, error) {
	recordHash, err1 := hex.DecodeString(l.RecordHash)
	signature, err2 := hex.DecodeString(l.Signature)
	if err := errors.Join(err1, err2); err != nil {
		return store.AuditCheckpoint{}, fmt.Errorf(
			"checkpoint %s/%d: invalid hex in record_hash or signature", l.ChainID, l.Seq)
	}
	return store.AuditCheckpoint{
		ChainID: l.ChainID, Seq: l.Seq, RecordHash: recordHash, Signature: signature,
	}, nil
}

// Walk reads every chain of src and calls fn with its lines: the chain line, then its
// checkpoints, then its records, each in seq order. Checkpoints are read before records
// because a checkpoint is committed with or after the record it covers, so every
// checkpoint read is matched by a record that the later reads find, even while the
// trail grows.
//
// A chain that cannot be read because it is damaged (a *store.ChainFileError) ends
// with a LineDamaged line after the lines read before the damage, and Walk goes on with
// the other chains. It then returns a *Failure for each damaged chain, joined. Any other
// error, from src or from fn, ends the walk at once.
func Walk(ctx context.Context, src Source, fn func(Line) error) error {
	chains, err := src.ListAuditChains(ctx)
	if err != nil {
		return err
	}

	var damaged []error
	for _, c := range chains {
		err := walkChain(ctx, src, c, fn)
		var failure *Failure
		if errors.As(err, &failure) && failure.What == whatDamagedLine {
			damaged = append(damaged, err)
			marker := Line{Type: LineDamaged, ChainID: failure.ChainID, Seq: failure.Seq,
				Reason: failure.Reason}
			if err := fn(marker); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return errors.Join(damaged...)
}

// walkChain calls fn with the lines of chain c, as Walk does. A damaged chain returns
// a *Failure whose What is whatDamagedLine.
func walkChain(ctx context.Context, src Source, c store.AuditChain, fn func(Line) error) error {
	if err := fn(ChainLine(c)); err != nil {
		return err
	}

	var after uint64
	for {
		page, err := src.ListAuditCheckpoints(ctx, c.ID, after, pageSize)
		if err != nil {
			return damagedFailure(err)
		}
		for _, cp := range page {
			if err := fn(CheckpointLine(cp)); err != nil {
				return err
			}
			after = cp.Seq
		}
		if len(page) < pageSize {
			break
		}
	}

	after = 0
	for {
		page, err := src.ListAuditRecords(ctx, c.ID, after, pageSize)
		if err != nil {
			return damagedFailure(err)
		}
		for _, r := range page {
			if err := fn(RecordLine(r)); err != nil {
				return err
			}
			after = r.Seq
		}
		if len(page) < pageSize {
			return nil
		}
	}
}

// whatDamagedLine is the Failure.What of a line of a chain file that is not a line of
// the format.
const whatDamagedLine = "chain file line"

// damagedFailure returns a *Failure for a damaged line of a chain file, and err itself
// for any other error.
func damagedFailure(err error) error {
	var damaged *store.ChainFileError
	if !errors.As(err, &damaged) {
		return err
	}
	return &Failure{ChainID: damaged.ChainID, What: whatDamagedLine, Seq: uint64(damaged.Line),
		Reason: damaged.Reason + " (the file was changed or damaged)"}
}

// Export writes every line of src to w as JSON lines, in the order of Walk.
func Export(ctx context.Context, src Source, w io.Writer) error {
	buffered := bufio.NewWriter(w)
	enc := json.NewEncoder(buffered)
	err := Walk(ctx, src, func(l Line) error { return enc.Encode(l) })

	// The lines of intact chains are written even when a damaged chain failed.
	if flushErr := buffered.Flush(); err == nil {
		err = flushErr
	}
	if err != nil {
		return fmt.Errorf("export audit trail: %w", err)
	}
	return nil
}

// ReadExport decodes the JSON lines of an export from r and calls fn with each.
func ReadExport(r io.Reader, fn func(Line) error) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	for n := 1; ; n++ {
		var l Line
		err := dec.Decode(&l)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("export line %d: %w", n, err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}

// MarshalPublicKey returns key as a PEM "PUBLIC KEY" block (PKIX, RFC 5280).
func MarshalPublicKey(key *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode audit public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey parses the first PEM "PUBLIC KEY" block of b, which must hold an
// ECDSA P-256 key.
func ParsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("parse audit public key: no PEM PUBLIC KEY block found")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse audit public key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("parse audit public key: %T is not an ECDSA P-256 key", key)
	}
	return ec, nil
}
