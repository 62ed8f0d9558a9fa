package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// chains returns the chain of every chain file, read from its header line, in no order.
func (a *auditFiles) chains() ([]AuditChain, error) {
	ids, err := a.chainFileIDs()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list audit chain files: %w", err)
	}

	var chains []AuditChain
	for _, id := range ids {
		c, err := readChainHeader(a.path(id))
		if err != nil {
			return nil, err
		}
		c.ID = id
		chains = append(chains, c)
	}
	return chains, nil
}

// chainFileIDs returns the chain ids of the chain files in the directory, in no order.
func (a *auditFiles) chainFileIDs() ([]string, error) {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), auditFileSuffix)
		if ok && e.Type().IsRegular() && validChainFileID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// readChainHeader returns the chain of the file's first line, or a chain with only
// informational fields missing when that line is missing, incomplete or damaged. A
// damaged first line is reported when the chain's records or checkpoints are read, so
// that one damaged file does not hide the other chains.
func readChainHeader(path string) (AuditChain, error) {
	var c AuditChain
	err := scanChainFile(path, filePosition{}, -1, func(line []byte, _ filePosition) (bool,
		error) {
		l, err := decodeFileLine(line)
		if err != nil || l.Type != fileLineChain {
			return true, nil
		}
		if c, err = l.chain(); err != nil {
			c = AuditChain{}
		}
		return true, nil
	})
	if errors.Is(err, ErrChainFileDamaged) {
		return AuditChain{}, nil // reported when the chain's lines are read
	}
	if err != nil {
		return AuditChain{}, fmt.Errorf("read chain file %s: %w", path, err)
	}
	return c, nil
}

// records returns up to limit records of the chain after afterSeq, in seq order.
func (a *auditFiles) records(chainID string, afterSeq uint64, limit int) ([]AuditRecord, error) {
	var records []AuditRecord
	var written []byte // the line of the last record rebuilt, reused
	err := a.page(chainID, fileLineRecord, afterSeq, limit, func(l fileLine, line []byte) (
		uint64, error) {
		r, err := l.record()
		if err != nil {
			return 0, err
		}
		written = appendRecordLine(written[:0], r)
		if !isWrittenForm(written, line) {
			return 0, errNotWrittenForm
		}
		records = append(records, r)
		return r.Seq, nil
	})
	return records, err
}

// checkpoints returns up to limit checkpoints of the chain after afterSeq, in seq order.
func (a *auditFiles) checkpoints(chainID string, afterSeq uint64, limit int) (
	[]AuditCheckpoint, error) {
	var checkpoints []AuditCheckpoint
	err := a.page(chainID, fileLineCheckpoint, afterSeq, limit, func(l fileLine, line []byte) (
		uint64, error) {
		c, err := l.checkpoint()
		if err != nil {
			return 0, err
		}
		if !isWrittenForm(appendCheckpointLine(nil, c), line) {
			return 0, errNotWrittenForm
		}
		checkpoints = append(checkpoints, c)
		return c.Seq, nil
	})
	return checkpoints, err
}

// page calls add with the decoded fields and the bytes of up to limit lines of kind with
// seq above afterSeq, in file order, which is seq order. It starts at the position where
// an earlier page ended, when one ended at afterSeq, so that reading a chain page by page
// reads the file once.
func (a *auditFiles) page(chainID, kind string, afterSeq uint64, limit int,
	add func(l fileLine, line []byte) (uint64, error)) error {
	start := a.cursor(cursorKey{chainID, kind, afterSeq})
	path := a.path(chainID)
	end := int64(-1)
	if w := a.openWriter(chainID); w != nil {
		// What this process wrote is complete up to here; the rest of the file is not.
		end = w.written()
	}

	// A checkpoint line follows the record line it signs. Record lines up to afterSeq
	// come before start, because start is the file's start or the end of an earlier page.
	highestRecord := afterSeq
	n, last, lastEnd := 0, afterSeq, filePosition{offset: -1}
	err := scanChainFile(path, start, end, func(line []byte, end filePosition) (bool, error) {
		typ, seq, decoded, err := classifyLine(chainID, line, end.line)
		if err != nil {
			return true, err
		}
		if typ == fileLineRecord {
			highestRecord = max(highestRecord, seq)
		}
		if typ != kind || seq <= afterSeq {
			return false, nil
		}
		if typ == fileLineCheckpoint && seq > highestRecord {
			return true, damagedLine(chainID, end.line, fmt.Sprintf(
				"no line of record %d comes before checkpoint %d", seq, seq))
		}

		if decoded == nil {
			l, err := decodeFileLine(line)
			if err != nil {
				return true, damagedLine(chainID, end.line, err.Error())
			}
			decoded = &l
		}
		if decoded.Seq != seq {
			return true, damagedLine(chainID, end.line, "the seq is not where a line "+
				"written by kmsd has it")
		}
		if decoded.ChainID != chainID {
			return true, damagedLine(chainID, end.line, fmt.Sprintf(
				"the line belongs to chain %q", decoded.ChainID))
		}
		seq, err = add(*decoded, line)
		if err != nil {
			return true, damagedLine(chainID, end.line, err.Error())
		}
		n, last, lastEnd = n+1, seq, end
		return n == limit, nil
	})
	if err != nil {
		return fmt.Errorf("read chain file %s: %w", path, err)
	}
	if lastEnd.offset >= 0 {
		a.setCursor(cursorKey{chainID, kind, last}, lastEnd)
	}
	return nil
}

func (a *auditFiles) cursor(k cursorKey) filePosition {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cursors[k]
}

func (a *auditFiles) setCursor(k cursorKey, end filePosition) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cursors) >= auditFileCursors {
		clear(a.cursors)
	}
	a.cursors[k] = end
}

// classifyLine returns the type and seq of line number n of the file of chain chainID.
// Only kmsd writes chain files, so a line whose head is not in the form that the append
// functions write, a chain line that is not the first line, or a line of another type
// returns a *ChainFileError. The first line is decoded and checked, and returned as
// decoded; other lines are decoded by the caller when it needs their fields.
func classifyLine(chainID string, line []byte, n int) (typ string, seq uint64,
	decoded *fileLine, err error) {
	typ, seq, ok := lineHead(line)
	switch {
	case !ok:
		return "", 0, nil, damagedLine(chainID, n, "the line is not in the form kmsd writes")
	case typ == fileLineChain && n != 1:
		return "", 0, nil, damagedLine(chainID, n, "a chain line after the first line")
	case typ == fileLineChain:
		l, err := decodeFileLine(line)
		if err == nil && l.Type != fileLineChain {
			err = errors.New("the type is not the first field")
		}
		var c AuditChain
		if err == nil {
			c, err = l.chain()
		}
		if err == nil && !isWrittenForm(appendChainLine(nil, c), line) {
			err = errNotWrittenForm
		}
		if err != nil {
			return "", 0, nil, damagedLine(chainID, n, err.Error())
		}
		return typ, 0, &l, nil
	case typ != fileLineRecord && typ != fileLineCheckpoint:
		return "", 0, nil, damagedLine(chainID, n, fmt.Sprintf("unknown line type %q", typ))
	}
	return typ, seq, nil, nil
}

// decodeRecordLine returns the record of line number n, decoding it unless decoded is
// already the decoded line.
func decodeRecordLine(chainID string, line []byte, n int, decoded *fileLine) (AuditRecord,
	error) {
	if decoded == nil {
		l, err := decodeFileLine(line)
		if err != nil {
			return AuditRecord{}, damagedLine(chainID, n, err.Error())
		}
		decoded = &l
	}
	r, err := decoded.record()
	if err != nil {
		return AuditRecord{}, damagedLine(chainID, n, err.Error())
	}
	return r, nil
}

func damagedLine(chainID string, n int, reason string) error {
	return &ChainFileError{ChainID: chainID, Line: n, Reason: reason}
}

// lastRecord returns the record with the highest seq of the chain, or ErrNotFound.
func (a *auditFiles) lastRecord(chainID string) (AuditRecord, error) {
	a.mu.Lock()
	w := a.writers[chainID]
	a.mu.Unlock()
	if w != nil {
		w.mu.Lock()
		last := w.lastRecord
		w.mu.Unlock()
		if last.Seq == 0 {
			return AuditRecord{}, ErrNotFound
		}
		return last, nil
	}

	var last AuditRecord
	err := scanChainFile(a.path(chainID), filePosition{}, -1, func(line []byte,
		end filePosition) (bool, error) {
		typ, _, decoded, err := classifyLine(chainID, line, end.line)
		if err != nil || typ != fileLineRecord {
			return err != nil, err
		}
		last, err = decodeRecordLine(chainID, line, end.line, decoded)
		return err != nil, err
	})
	if err != nil {
		return AuditRecord{}, fmt.Errorf("read chain file %s: %w", a.path(chainID), err)
	}
	if last.Seq == 0 {
		return AuditRecord{}, ErrNotFound
	}
	return last, nil
}

// scanChainFile calls fn with each complete line of the file from position start, newline
// removed, and the position after it. It stops when fn returns stop or an error, or at
// the end of the written lines. That end is the end of the file, the offset limit when it
// is not negative, or the first zero byte. A writer grows the file ahead of its lines
// (see writeMapped), and the bytes there stay zero until written, while JSON lines
// contain no zero byte. Zero bytes with data after them are damage (a page lost in a
// power loss, say). They are reported as a *ChainFileError once the line has been read
// again auditFileRereads times, because a writer may have been copying it.
func scanChainFile(path string, start filePosition, limit int64,
	fn func(line []byte, end filePosition) (stop bool, err error)) error {
	id := strings.TrimSuffix(filepath.Base(path), auditFileSuffix)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrPermission) {
		// As with damage, retrying cannot help, and the other chains stay readable.
		return damagedLine(id, 1, "the file cannot be read: "+err.Error())
	}
	if err != nil {
		return err
	}
	defer f.Close()

	pos := start
	rereads, lastZero := 0, int64(-1)
	for {
		zeroAt, err := scanLines(f, &pos, limit, fn)
		if err != nil || zeroAt < 0 {
			return err
		}
		tail, err := zeroTailAt(f, zeroAt, limit)
		switch {
		case err != nil:
			return err
		case tail == zeroTailEnd:
			return nil
		case tail == zeroTailFilled:
			continue // a writer copied a line there meanwhile: read on
		}

		if zeroAt != lastZero {
			rereads, lastZero = 0, zeroAt
		}
		if rereads == auditFileRereads {
			return damagedLine(id, pos.line+1, "zero bytes with data after them")
		}
		rereads++
		time.Sleep(time.Millisecond)
	}
}

// Kinds of what follows a zero byte of a chain file (zeroTailAt).
const (
	zeroTailEnd    = iota // zero bytes to the end: the unwritten part of the file
	zeroTailFilled        // the byte is no longer zero: a writer copied a line there
	zeroTailData          // zero bytes, then data: damage, or a copy in progress
)

// zeroTailAt reads the file from offset at, where an earlier read found a zero byte, to
// the end of the file, or to limit when it is not negative, and returns which of the
// zeroTail kinds it found.
func zeroTailAt(f *os.File, at, limit int64) (int, error) {
	r := sectionTo(f, at, limit)
	buf := make([]byte, 64<<10)
	first := true
	for {
		k, err := r.Read(buf)
		for i, c := range buf[:k] {
			switch {
			case c == 0:
			case first && i == 0:
				return zeroTailFilled, nil
			default:
				return zeroTailData, nil
			}
		}
		first = first && k == 0
		if errors.Is(err, io.EOF) {
			return zeroTailEnd, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// scanLines is one pass of scanChainFile from *pos, which it advances past each line
// given to fn. It returns the offset of the first zero byte it met, or -1.
func scanLines(f *os.File, pos *filePosition, limit int64,
	fn func(line []byte, end filePosition) (stop bool, err error)) (int64, error) {
	r := bufio.NewReaderSize(sectionTo(f, pos.offset, limit), 64<<10)

	var long []byte // a line longer than the reader's buffer
	for {
		chunk, err := r.ReadSlice('\n')
		if i := bytes.IndexByte(chunk, 0); i >= 0 {
			return pos.offset + int64(len(long)+i), nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			continue
		}
		if errors.Is(err, io.EOF) {
			return -1, nil
		}
		if err != nil {
			return -1, err
		}

		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		pos.offset += int64(len(line))
		pos.line++
		stop, err := fn(bytes.TrimSuffix(line, []byte{'\n'}), *pos)
		if err != nil || stop {
			return -1, err
		}
	}
}

// sectionTo returns a reader of f from offset from to the end of the file, or to offset
// limit when it is not negative.
func sectionTo(f *os.File, from, limit int64) *io.SectionReader {
	n := int64(math.MaxInt64 - from)
	if limit >= 0 {
		n = max(0, limit-from)
	}
	return io.NewSectionReader(f, from, n)
}

// sortChains orders chains by start time, then id.
func sortChains(chains []AuditChain) {
	sort.Slice(chains, func(i, j int) bool {
		if !chains[i].StartedAt.Equal(chains[j].StartedAt) {
			return chains[i].StartedAt.Before(chains[j].StartedAt)
		}
		return chains[i].ID < chains[j].ID
	})
}
