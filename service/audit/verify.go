package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"

	"github.com/hsmkms/kms/service/store"
)

// ErrVerification is wrapped by every *Failure.
var ErrVerification = errors.New("audit trail verification failed")

// Failure names the first record or checkpoint that does not hold.
type Failure struct {
	ChainID string
	Seq     uint64
	// What is "record", "checkpoint", "chain", or "chain file line" for a line of a
	// SQLite chain file that is not a line of the format (Seq is then the line number).
	What   string
	Reason string
}

func (f *Failure) Error() string {
	return fmt.Sprintf("chain %s %s %d: %s", f.ChainID, f.What, f.Seq, f.Reason)
}

func (f *Failure) Unwrap() error { return ErrVerification }

// ChainReport is what verification established about one chain.
type ChainReport struct {
	ChainID     string
	Records     uint64
	Checkpoints int
	// LastSigned is the seq of the last checkpoint, 0 when the chain has none.
	LastSigned uint64
	// UnsignedTail is the number of records after the last checkpoint. Removing or
	// appending records there cannot be detected.
	UnsignedTail uint64
}

// Report lists the chains in the order they were verified.
type Report struct {
	Chains []ChainReport
}

// UnsignedRecords returns the number of records, over every chain, that no checkpoint
// covers.
func (r Report) UnsignedRecords() uint64 {
	var n uint64
	for _, c := range r.Chains {
		n += c.UnsignedTail
	}
	return n
}

// Verifier checks a trail line by line. A chain line comes first, then its checkpoints
// and records: each checkpoint before the record it signs (the order of Walk and of
// exports) or right after it (the order of chain files). A checkpoint anywhere else is a
// failure, because its record's hash is no longer at hand to compare. It is not safe for
// concurrent use.
type Verifier struct {
	key    *ecdsa.PublicKey
	report Report
	seen   map[string]bool

	chain       *ChainReport
	checkpoints map[uint64][]byte // seq -> record hash, of the current chain
	lastHash    []byte
}

// NewVerifier returns a Verifier that checks checkpoint signatures with key.
func NewVerifier(key *ecdsa.PublicKey) *Verifier {
	return &Verifier{key: key, seen: map[string]bool{}}
}

// Add checks one line. It returns a *Failure for the first line that does not hold, or
// an error for a line that is not of the export format.
func (v *Verifier) Add(l Line) error {
	switch l.Type {
	case LineChain:
		return v.startChain(l.ChainID)
	case LineCheckpoint:
		cp, err := l.Checkpoint()
		if err != nil {
			return err
		}
		return v.addCheckpoint(cp)
	case LineRecord:
		r, err := l.Record()
		if err != nil {
			return err
		}
		return v.addRecord(r)
	case LineDamaged:
		return &Failure{ChainID: l.ChainID, What: whatDamagedLine, Seq: l.Seq,
			Reason: l.Reason}
	default:
		return fmt.Errorf("unknown line type %q", l.Type)
	}
}

func (v *Verifier) startChain(id string) error {
	if err := v.endChain(); err != nil {
		return err
	}
	if v.seen[id] {
		return &Failure{ChainID: id, What: "chain", Reason: "the chain appears twice"}
	}
	v.seen[id] = true

	v.chain = &ChainReport{ChainID: id}
	v.checkpoints = map[uint64][]byte{}
	v.lastHash = nil
	return nil
}

func (v *Verifier) inChain(chainID, what string, seq uint64) error {
	if v.chain == nil || v.chain.ChainID != chainID {
		return &Failure{ChainID: chainID, What: what, Seq: seq,
			Reason: "it does not follow the line of its chain"}
	}
	return nil
}

func (v *Verifier) addCheckpoint(cp store.AuditCheckpoint) error {
	if err := v.inChain(cp.ChainID, "checkpoint", cp.Seq); err != nil {
		return err
	}
	fail := func(reason string) error {
		return &Failure{ChainID: cp.ChainID, What: "checkpoint", Seq: cp.Seq, Reason: reason}
	}

	if cp.Seq <= v.chain.LastSigned {
		return fail("checkpoints are out of order")
	}
	digest := CheckpointDigest(cp.ChainID, cp.Seq, cp.RecordHash)
	if !ecdsa.VerifyASN1(v.key, digest, cp.Signature) {
		return fail("the signature does not verify with the public key " +
			"(the checkpoint was changed, or another key signed it)")
	}

	switch {
	case cp.Seq < v.chain.Records:
		return fail(fmt.Sprintf("it comes after record %d: a checkpoint must come before "+
			"the record it signs or right after it", v.chain.Records))
	case cp.Seq == v.chain.Records && !bytes.Equal(cp.RecordHash, v.lastHash):
		return &Failure{ChainID: cp.ChainID, What: "record", Seq: cp.Seq,
			Reason: fmt.Sprintf("its hash is not the hash that checkpoint %d signs "+
				"(the record was replaced)", cp.Seq)}
	case cp.Seq > v.chain.Records:
		v.checkpoints[cp.Seq] = cp.RecordHash
	}
	v.chain.Checkpoints++
	v.chain.LastSigned = cp.Seq
	return nil
}

func (v *Verifier) addRecord(r store.AuditRecord) error {
	if err := v.inChain(r.ChainID, "record", r.Seq); err != nil {
		return err
	}
	fail := func(reason string) error {
		return &Failure{ChainID: r.ChainID, What: "record", Seq: r.Seq, Reason: reason}
	}

	want := v.chain.Records + 1
	switch {
	case r.Seq > want:
		return fail(fmt.Sprintf("records %d to %d are missing", want, r.Seq-1))
	case r.Seq < want:
		return fail(fmt.Sprintf("it comes after record %d: records are out of order",
			v.chain.Records))
	}

	if !bytes.Equal(RecordHash(r), r.Hash) {
		return fail("its hash does not match its fields (a field was changed)")
	}
	if !bytes.Equal(r.PrevHash, v.lastHash) {
		return fail(fmt.Sprintf("its previous hash is not the hash of record %d "+
			"(a record was removed, inserted or moved)", r.Seq-1))
	}
	if signed, ok := v.checkpoints[r.Seq]; ok && !bytes.Equal(signed, r.Hash) {
		return fail("its hash is not the hash that checkpoint " +
			fmt.Sprint(r.Seq) + " signs (the record was replaced)")
	}

	v.chain.Records = r.Seq
	v.lastHash = r.Hash
	return nil
}

// endChain checks that no checkpoint of the current chain covers a record beyond its
// end, and adds the chain to the report.
func (v *Verifier) endChain() error {
	c := v.chain
	if c == nil {
		return nil
	}
	v.chain = nil

	if c.LastSigned > c.Records {
		return &Failure{ChainID: c.ChainID, What: "checkpoint", Seq: c.LastSigned,
			Reason: fmt.Sprintf("it signs record %d but the chain ends at record %d: "+
				"records were removed from the end", c.LastSigned, c.Records)}
	}
	c.UnsignedTail = c.Records - c.LastSigned
	v.report.Chains = append(v.report.Chains, *c)
	return nil
}

// Finish ends the last chain and returns the report.
func (v *Verifier) Finish() (Report, error) {
	if err := v.endChain(); err != nil {
		return v.report, err
	}
	return v.report, nil
}

// VerifySource verifies every chain of src with key. A chain that fails does not stop
// the others: the report lists the chains that hold, and the error joins one *Failure,
// the first, for each chain that does not.
func VerifySource(ctx context.Context, src Source, key *ecdsa.PublicKey) (Report, error) {
	chains, err := src.ListAuditChains(ctx)
	if err != nil {
		return Report{}, err
	}

	v := NewVerifier(key)
	var failures []error
	for _, c := range chains {
		err := walkChain(ctx, src, c, v.Add)
		if err == nil {
			err = v.endChain()
		}
		var failure *Failure
		if !errors.As(err, &failure) {
			if err != nil {
				return v.report, err
			}
			continue
		}
		failures = append(failures, err)
		v.chain = nil // the rest of this chain is not checked
	}
	return v.report, errors.Join(failures...)
}

// VerifyExport verifies the export read from r with key.
func VerifyExport(r io.Reader, key *ecdsa.PublicKey) (Report, error) {
	v := NewVerifier(key)
	if err := ReadExport(r, v.Add); err != nil {
		return v.report, err
	}
	return v.Finish()
}
