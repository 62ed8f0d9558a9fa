package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"

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
type encoder struct{ h hash.Hash }

func (e encoder) bytes(b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	e.h.Write(n[:])
	e.h.Write(b)
}

func (e encoder) string(s string) { e.bytes([]byte(s)) }

func (e encoder) int(v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	e.bytes(b[:])
}

// RecordHash returns the SHA-256 hash of the canonical encoding of r: the record tag,
// then ChainID, Seq, PrevHash, Time, RequestID, AccessKey, UserID, ProjectID, SourceIP,
// Operation, KeyID, KeyVersion, GrantID, Status, ErrorCode and Sequence, in that order.
// r.Hash is not part of it. docs/audit.md has a worked example.
func RecordHash(r store.AuditRecord) []byte {
	e := encoder{sha256.New()}
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
	return e.h.Sum(nil)
}

// CheckpointDigest returns the SHA-256 digest that a checkpoint signature covers: the
// canonical encoding of the checkpoint tag, chainID, seq and recordHash.
func CheckpointDigest(chainID string, seq uint64, recordHash []byte) []byte {
	e := encoder{sha256.New()}
	e.string(checkpointTag)
	e.string(chainID)
	e.int(int64(seq))
	e.bytes(recordHash)
	return e.h.Sum(nil)
}
