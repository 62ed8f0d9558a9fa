package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hsmkms/kms/service/internal/jsonscan"
)

// The lines of a chain file are JSON objects with the field names and encodings of the
// audit export format (package service/audit, type Line, which this package cannot
// import). Hashes and signatures are lower-case hex, times RFC 3339 UTC with
// milliseconds, and empty fields are left out. Every line starts with its type, its chain id and, for records and checkpoints, its seq, in
// that order, so that a reader can skip lines without decoding them.
const (
	fileLineChain      = "chain"
	fileLineRecord     = "record"
	fileLineCheckpoint = "checkpoint"

	// fileTimeLayout is RFC 3339 with exactly three fractional digits.
	fileTimeLayout = "2006-01-02T15:04:05.000Z07:00"
)

// fileLine is the decoded form of any line of a chain file.
type fileLine struct {
	Type       string `json:"type"`
	ChainID    string `json:"chain_id"`
	StartedAt  string `json:"started_at,omitempty"`
	Host       string `json:"host,omitempty"`
	Seq        uint64 `json:"seq,omitempty"`
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
	RecordHash string `json:"record_hash,omitempty"`
	Signature  string `json:"signature,omitempty"`
}

// appendChainLine appends the header line of chain c, newline included.
func appendChainLine(b []byte, c AuditChain) []byte {
	b = append(b, `{"type":"chain","chain_id":`...)
	b = appendJSONString(b, c.ID)
	if !c.StartedAt.IsZero() {
		b = append(b, `,"started_at":"`...)
		b = appendFileTime(b, storedTime(c.StartedAt))
		b = append(b, '"')
	}
	b = appendStringField(b, "host", c.Host)
	return append(b, "}\n"...)
}

// appendRecordLine appends the line of r, newline included. Its encoding is the one
// encoding/json gives the export format's record line, byte for byte.
func appendRecordLine(b []byte, r AuditRecord) []byte {
	b = append(b, `{"type":"record","chain_id":`...)
	b = appendJSONString(b, r.ChainID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = appendFileTime(b, storedTime(r.Time))
	b = append(b, '"')
	b = appendStringField(b, "request_id", r.RequestID)
	b = appendStringField(b, "access_key", r.AccessKey)
	b = appendStringField(b, "user_id", r.UserID)
	b = appendStringField(b, "project_id", r.ProjectID)
	b = appendStringField(b, "source_ip", r.SourceIP)
	b = appendStringField(b, "operation", r.Operation)
	b = appendStringField(b, "key_id", r.KeyID)
	if r.KeyVersion != 0 {
		b = append(b, `,"key_version":`...)
		b = strconv.AppendUint(b, uint64(r.KeyVersion), 10)
	}
	b = appendStringField(b, "grant_id", r.GrantID)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	b = appendStringField(b, "error_code", r.ErrorCode)
	b = appendStringField(b, "sequence", r.Sequence)
	b = appendHexField(b, "prev_hash", r.PrevHash)
	b = appendHexField(b, "hash", r.Hash)
	return append(b, "}\n"...)
}

// appendFileTime appends t, a UTC time, in fileTimeLayout. It writes the digits itself,
// because time.Time.AppendFormat parses the layout on every call, which made it the
// largest part of building a record line. Other locations and years outside 0 to 9999
// go through AppendFormat.
func appendFileTime(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	if t.Location() != time.UTC || year < 0 || year > 9999 {
		return t.AppendFormat(b, fileTimeLayout)
	}
	hour, minute, second := t.Clock()

	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, second, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/int(time.Millisecond), 3)
	return append(b, 'Z')
}

// appendDigits appends v, which is from 0 to 10^width - 1, as width decimal digits.
func appendDigits(b []byte, v, width int) []byte {
	start := len(b)
	for range width {
		b = append(b, '0')
	}
	for i := len(b) - 1; i >= start && v > 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}

// appendCheckpointLine appends the line of c, newline included.
func appendCheckpointLine(b []byte, c AuditCheckpoint) []byte {
	b = append(b, `{"type":"checkpoint","chain_id":`...)
	b = appendJSONString(b, c.ChainID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = appendHexField(b, "record_hash", c.RecordHash)
	b = appendHexField(b, "signature", c.Signature)
	return append(b, "}\n"...)
}

func appendStringField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, value)
}

func appendHexField(b []byte, name string, value []byte) []byte {
	if len(value) == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, `":"`...)
	b = hex.AppendEncode(b, value)
	return append(b, '"')
}

// appendJSONString appends s as a JSON string. It escapes what encoding/json escapes
// by default (quotes, backslash, control characters, <, >, &, U+2028 and U+2029) and, as
// encoding/json does, writes each byte of invalid UTF-8 as U+FFFD. Such a string does
// not read back as it was: the audit trail stores valid UTF-8 only.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}

		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			switch r {
			case utf8.RuneError:
				b = append(b, `\ufffd`...)
			default:
				b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// lineHead returns the type and seq of a line written by the append functions above,
// without decoding the line. seq is 0 for a chain line, and ok is false for a line of
// another shape.
func lineHead(line []byte) (typ string, seq uint64, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(`{"type":"`))
	if !found {
		return "", 0, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, false
	}
	typ, rest = string(rest[:end]), rest[end+1:]
	if typ == fileLineChain {
		return typ, 0, true
	}

	// Chain ids of chain files contain no character that JSON escapes (validChainFileID).
	rest, found = bytes.CutPrefix(rest, []byte(`,"chain_id":"`))
	if !found {
		return "", 0, false
	}
	end = bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, false
	}
	rest, found = bytes.CutPrefix(rest[end+1:], []byte(`,"seq":`))
	if !found {
		return "", 0, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return typ, seq, true
}

// decodeFileLine decodes one line, newline excluded. It rejects unknown fields, so that
// a line of another format is reported instead of read with fields missing.
//
// It reads with jsonscan instead of encoding/json, which took half of the CPU time of
// `kmsctl audit verify`. It is stricter than encoding/json only for lines that the
// append functions never write: names must match in case, and a name given twice or a
// null value is rejected.
func decodeFileLine(line []byte) (fileLine, error) {
	var l fileLine
	var seen uint32 // fileLineFieldBits of the fields decoded so far
	err := jsonscan.Object(line, func(name string, raw []byte) error {
		bit := fileLineFieldBits[name]
		if seen&bit != 0 {
			return fmt.Errorf("field %q given twice", name)
		}
		seen |= bit
		return l.decodeField(name, raw)
	})
	if err != nil {
		return fileLine{}, err
	}
	return l, nil
}

// jsonString decodes raw, a JSON value that jsonscan.Object checked, when it is a string.
func jsonString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", errors.New("not a string")
	}
	return jsonscan.String(raw)
}

// fileLineFieldBits gives each JSON name of fileLine a bit of its own.
var fileLineFieldBits = func() map[string]uint32 {
	names := []string{"type", "chain_id", "started_at", "host", "seq", "time", "request_id",
		"access_key", "user_id", "project_id", "source_ip", "operation", "key_id",
		"key_version", "grant_id", "status", "error_code", "sequence", "prev_hash", "hash",
		"record_hash", "signature"}
	bits := make(map[string]uint32, len(names))
	for i, name := range names {
		bits[name] = 1 << i
	}
	return bits
}()

// decodeField sets the field of l named name from its raw JSON value.
func (l *fileLine) decodeField(name string, raw []byte) error {
	var err error
	switch name {
	case "type":
		l.Type, err = jsonString(raw)
	case "chain_id":
		l.ChainID, err = jsonString(raw)
	case "started_at":
		l.StartedAt, err = jsonString(raw)
	case "host":
		l.Host, err = jsonString(raw)
	case "seq":
		l.Seq, err = strconv.ParseUint(string(raw), 10, 64)
	case "time":
		l.Time, err = jsonString(raw)
	case "request_id":
		l.RequestID, err = jsonString(raw)
	case "access_key":
		l.AccessKey, err = jsonString(raw)
	case "user_id":
		l.UserID, err = jsonString(raw)
	case "project_id":
		l.ProjectID, err = jsonString(raw)
	case "source_ip":
		l.SourceIP, err = jsonString(raw)
	case "operation":
		l.Operation, err = jsonString(raw)
	case "key_id":
		l.KeyID, err = jsonString(raw)
	case "key_version":
		var v uint64
		v, err = strconv.ParseUint(string(raw), 10, 32)
		l.KeyVersion = uint32(v)
	case "grant_id":
		l.GrantID, err = jsonString(raw)
	case "status":
		var v int64
		v, err = strconv.ParseInt(string(raw), 10, 0)
		l.Status = int(v)
	case "error_code":
		l.ErrorCode, err = jsonString(raw)
	case "sequence":
		l.Sequence, err = jsonString(raw)
	case "prev_hash":
		l.PrevHash, err = jsonString(raw)
	case "hash":
		l.Hash, err = jsonString(raw)
	case "record_hash":
		l.RecordHash, err = jsonString(raw)
	case "signature":
		l.Signature, err = jsonString(raw)
	default:
		return fmt.Errorf("unknown field %q", name)
	}
	if err != nil {
		return fmt.Errorf("field %q: %w", name, err)
	}
	return nil
}

func (l fileLine) chain() (AuditChain, error) {
	c := AuditChain{ID: l.ChainID, Host: l.Host}
	if l.StartedAt == "" {
		return c, nil
	}
	at, err := time.Parse(time.RFC3339Nano, l.StartedAt)
	if err != nil {
		return AuditChain{}, fmt.Errorf("invalid started_at %q", l.StartedAt)
	}
	c.StartedAt = at.UTC()
	return c, nil
}

func (l fileLine) record() (AuditRecord, error) {
	at, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("record %d: invalid time %q", l.Seq, l.Time)
	}
	prev, err := hex.DecodeString(l.PrevHash)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("record %d: invalid prev_hash: %w", l.Seq, err)
	}
	hash, err := hex.DecodeString(l.Hash)
	if err != nil {
		return AuditRecord{}, fmt.Errorf("record %d: invalid hash: %w", l.Seq, err)
	}
	return AuditRecord{
		ChainID: l.ChainID, Seq: l.Seq, Time: at.UTC(), RequestID: l.RequestID,
		AccessKey: l.AccessKey, UserID: l.UserID, ProjectID: l.ProjectID,
		SourceIP: l.SourceIP, Operation: l.Operation, KeyID: l.KeyID,
		KeyVersion: l.KeyVersion, GrantID: l.GrantID, Status: l.Status,
		ErrorCode: l.ErrorCode, Sequence: l.Sequence, PrevHash: prev, Hash: hash,
	}, nil
}

// errNotWrittenForm reports a line that decodes to fields of its type but is not byte for
// byte the line that the append functions write for them: other escaping, spacing, field
// order or letter case of its hex, or a field that lines of its type do not have. Its
// hashed fields may be unchanged, so the hash chain alone would not show the change.
var errNotWrittenForm = errors.New("the line is not in the exact form kmsd writes for its fields")

// isWrittenForm reports whether line, newline excluded, equals written, a line that an
// append function built, newline included.
func isWrittenForm(written, line []byte) bool {
	return bytes.Equal(bytes.TrimSuffix(written, []byte("\n")), line)
}

func (l fileLine) checkpoint() (AuditCheckpoint, error) {
	recordHash, err := hex.DecodeString(l.RecordHash)
	if err != nil {
		return AuditCheckpoint{}, fmt.Errorf("checkpoint %d: invalid record_hash: %w", l.Seq,
			err)
	}
	signature, err := hex.DecodeString(l.Signature)
	if err != nil {
		return AuditCheckpoint{}, fmt.Errorf("checkpoint %d: invalid signature: %w", l.Seq,
			err)
	}
	return AuditCheckpoint{ChainID: l.ChainID, Seq: l.Seq, RecordHash: recordHash,
		Signature: signature}, nil
}
