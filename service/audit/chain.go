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

// The canonical encoding: every field is a 4-byte big-endian length followed by that
// many bytes. Integers are 8-byte big-endian two's complement, and a time is its Unix
// time in milliseconds as such an integer. The encoding is collected in one buffer and
// hashed once, which costs fewer allocations per record than writing each field to a
// hash.Hash.

func appendBytesField(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendStringField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendIntField(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// RecordHash returns the SHA-256 hash of the canonical encoding of r: the record tag,
// then ChainID, Seq, PrevHash, Time, RequestID, AccessKey, UserID, ProjectID, SourceIP,
// Operation, KeyID, KeyVersion, GrantID, Status, ErrorCode and Sequence, in that order.
// r.Hash is not part of it. docs/audit.md has a worked example.
func RecordHash(r store.AuditRecord) []byte {
	var buf [512]byte // on the stack unless the fields need more
	b := appendStringField(buf[:0], recordTag)
	b = appendStringField(b, r.ChainID)
	b = appendIntField(b, int64(r.Seq))
	b = appendBytesField(b, r.PrevHash)
	b = appendIntField(b, r.Time.UnixMilli())
	b = appendStringField(b, r.RequestID)
	b = appendStringField(b, r.AccessKey)
	b = appendStringField(b, r.UserID)
	b = appendStringField(b, r.ProjectID)
	b = appendStringField(b, r.SourceIP)
	b = appendStringField(b, r.Operation)
	b = appendStringField(b, r.KeyID)
	b = appendIntField(b, int64(r.KeyVersion))
	b = appendStringField(b, r.GrantID)
	b = appendIntField(b, int64(r.Status))
	b = appendStringField(b, r.ErrorCode)
	b = appendStringField(b, r.Sequence)
	digest := sha256.Sum256(b)
	return digest[:]
}

// CheckpointDigest returns the SHA-256 digest that a checkpoint signature covers: the
// canonical encoding of the checkpoint tag, chainID, seq and recordHash.
func CheckpointDigest(chainID string, seq uint64, recordHash []byte) []byte {
	var buf [256]byte
	b := appendStringField(buf[:0], checkpointTag)
	b = appendStringField(b, chainID)
	b = appendIntField(b, int64(seq))
	b = appendBytesField(b, recordHash)
	digest := sha256.Sum256(b)
	return digest[:]
}
