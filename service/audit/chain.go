package audit

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/hsmkms/kms/service/store"
)

// Domain tags start the canonical encodings, so that a record hash can never be
// mistaken for a checkpoint digest or for the hash of another format version.
const (
	recordTag     = "kms-audit-record-v1"
	checkpointTag = "kms-audit-checkpoint-v1"
)

// encoder writes the canonical encoding: every field is a 4-byte big-endian length
// followed by that many bytes. Integers are 8-byte big-endian two's complement, and a
// time is its Unix time in milliseconds as such an integer.
// encoder collects the encoding in one buffer and hashes it once, which costs fewer
// allocations per record than writing each field to a hash.Hash.
type encoder struct{ buf []byte }

func newEncoder() *encoder { return &encoder{buf: make([]byte, 0, 512)} }

func (e *encoder) bytes(b []byte) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *encoder) string(s string) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) int(v int64) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, 8)
	e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(v))
}

func (e *encoder) sum() []byte {
	digest := sha256.Sum256(e.buf)
	return digest[:]
}

// RecordHash returns the SHA-256 hash of the canonical encoding of r: the record tag,
// then ChainID, Seq, PrevHash, Time, RequestID, AccessKey, UserID, ProjectID, SourceIP,
// Operation, KeyID, KeyVersion, GrantID, Status, ErrorCode and Sequence, in that order.
// r.Hash is not part of it. docs/audit.md has a worked example.
func RecordHash(r store.AuditRecord) []byte {
	e := newEncoder()
	e.string(recordTag)
	e.string(r.ChainID)
	e.int(int64(r.Seq))
	e.bytes(r.PrevHash)
	e.int(r.Time.UnixMilli())
	e.string(r.RequestID)
	e.string(r.AccessKey)
	e.string(r.UserID)
	e.string(r.ProjectID)
	e.string(r.SourceIP)
	e.string(r.Operation)
	e.string(r.KeyID)
	e.int(int64(r.KeyVersion))
	e.string(r.GrantID)
	e.int(int64(r.Status))
	e.string(r.ErrorCode)
	e.string(r.Sequence)
	return e.sum()
}

// CheckpointDigest returns the SHA-256 digest that a checkpoint signature covers: the
// canonical encoding of the checkpoint tag, chainID, seq and recordHash.
func CheckpointDigest(chainID string, seq uint64, recordHash []byte) []byte {
	e := newEncoder()
	e.string(checkpointTag)
	e.string(chainID)
	e.int(int64(seq))
	e.bytes(recordHash)
	return e.sum()
}
