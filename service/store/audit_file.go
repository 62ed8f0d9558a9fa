package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Chain files keep the audit chains of a SQLite store: one append-only file of JSON lines
// per chain, in a directory beside the database file (kms.db-audit for kms.db). A batch
// is one write(2) of its lines, where SQLite wrote and checksummed whole 4 KiB pages to
// its WAL: on the development machines a lone client's audit write went from about
// 27 us to a few. The directory is part of the store: back it up with the database file.
//
// Durability is close to that of the synchronous=NORMAL SQLite commit it replaces. A
// written batch is in the operating system's page cache, so it survives a crash or kill
// of kmsd. The files are flushed (fdatasync) every auditFileSyncInterval, so an operating
// system crash or power loss can lose about that much of the trail. With
// SetAuditFsync(true) every batch is flushed before AppendAudit returns.
//
// NOTE: after a power loss between two flushes, a file system may keep a later page of
// the file and lose an earlier one, unlike SQLite's WAL recovery, which always keeps an
// unbroken run of commits. Reads of that chain then fail with a *ChainFileError at the
// damaged line. kmsd starts a new chain file at every start, so writing goes on.
//
// A chain lives where CreateAuditChain put it: chains created before the store used
// files, and records appended to a chain that was never created, stay in the
// audit_records table, and every read merges the two.

const (
	// auditFileSuffix ends the name of every chain file: <chain id>.jsonl.
	auditFileSuffix = ".jsonl"

	// auditFileSyncInterval is how often written chain files are flushed to disk when
	// batches are not flushed one by one.
	auditFileSyncInterval = 250 * time.Millisecond

	// auditFileCursors bounds the read positions remembered for paging (see cursor).
	auditFileCursors = 64
)

// ErrChainFileDamaged is matched by every *ChainFileError.
var ErrChainFileDamaged = errors.New("audit chain file damaged")

// ChainFileError reports a complete line of a chain file that is not a line of the
// format in its place: the chain line first, then record and checkpoint lines. It comes
// from a change to the file or from damage to the disk, so retrying does not help.
type ChainFileError struct {
	ChainID string
	Line    int // 1 for the first line
	Reason  string
}

func (e *ChainFileError) Error() string {
	return fmt.Sprintf("chain file of audit chain %s, line %d: %s", e.ChainID, e.Line, e.Reason)
}

// Unwrap returns ErrChainFileDamaged.
func (e *ChainFileError) Unwrap() error { return ErrChainFileDamaged }

// auditFiles is the directory of chain files of one SQLite store. It is safe for
// concurrent use.
type auditFiles struct {
	dir      string
	readOnly bool
	log      *slog.Logger

	mu      sync.Mutex
	writers map[string]*chainWriter    // chains this process appends to, by id
	cursors map[cursorKey]filePosition // see cursor
	closed  bool

	stopSync chan struct{}
	syncDone chan struct{}
}

// chainWriter appends to one chain file. Its mutex orders the writes of the file.
type chainWriter struct {
	mu   sync.Mutex
	f    *os.File
	path string

	// size is the length of the file's complete lines. A failed write may leave a part
	// of a line after it, which the next append cuts off first (damaged is then true).
	size    int64
	damaged bool
	dirty   bool // written since the last flush

	lastRecord     AuditRecord // zero Seq when the chain has no record
	lastCheckpoint uint64

	buf []byte
}

// filePosition is the start of a line of a chain file: its byte offset and line number.
type filePosition struct {
	offset int64
	line   int
}

// cursorKey names a read position: lines of kind before the position have seq <= after.
type cursorKey struct {
	chainID string
	kind    string
	after   uint64
}

// openAuditFiles opens the chain directory dir, creating it unless readOnly.
func openAuditFiles(dir string, readOnly bool, log *slog.Logger) (*auditFiles, error) {
	if !readOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create audit chain directory: %w", err)
		}
	}
	a := &auditFiles{
		dir: dir, readOnly: readOnly, log: log,
		writers:  map[string]*chainWriter{},
		cursors:  map[cursorKey]filePosition{},
		stopSync: make(chan struct{}),
		syncDone: make(chan struct{}),
	}
	go a.syncLoop()
	return a, nil
}

// validChainFileID reports whether id can name a chain file: 1 to 128 letters, digits,
// '-', '_' and '.', not starting with '.'. Chain ids are UUIDs.
func validChainFileID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

func (a *auditFiles) path(chainID string) string {
	return filepath.Join(a.dir, chainID+auditFileSuffix)
}

// openWriter returns the writer of chainID when this process has it open, else nil.
func (a *auditFiles) openWriter(chainID string) *chainWriter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.writers[chainID]
}

// has reports whether chainID has a chain file.
func (a *auditFiles) has(chainID string) (bool, error) {
	if !validChainFileID(chainID) {
		return false, nil
	}
	if a.openWriter(chainID) != nil {
		return true, nil
	}

	_, err := os.Stat(a.path(chainID))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("check audit chain file: %w", err)
	}
}

// create writes the file of a new chain with its header line and flushes the file and
// the directory, so that the chain's existence survives a power loss. It returns
// ErrConflict when the file exists.
func (a *auditFiles) create(c AuditChain) error {
	if a.readOnly {
		return errors.New("the store is read-only")
	}
	if !validChainFileID(c.ID) {
		return fmt.Errorf("invalid chain id %q: use 1 to 128 letters, digits, '-', '_' or '.'",
			c.ID)
	}

	path := a.path(c.ID)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("chain file %s exists: %w", path, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create chain file: %w: %w", ErrUnavailable, err)
	}
	w := &chainWriter{f: f, path: path}
	if err := w.lock(); err != nil {
		f.Close()
		return err
	}

	header := appendChainLine(nil, c)
	err = w.write(header, true)
	if err == nil {
		err = syncDir(a.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create chain file: %w: %w", ErrUnavailable, err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		f.Close()
		return errors.New("the store is closed")
	}
	a.writers[c.ID] = w
	return nil
}

// writer returns the writer of chainID, opening its existing file for appending when
// this process has not written to it yet.
func (a *auditFiles) writer(chainID string) (*chainWriter, error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.closed {
		return nil, errors.New("the store is closed")
	}
	if w, ok := a.writers[chainID]; ok {
		return w, nil
	}
	if a.readOnly {
		return nil, errors.New("the store is read-only")
	}

	w, err := openChainWriter(a.path(chainID))
	if err != nil {
		return nil, err
	}
	a.writers[chainID] = w
	return w, nil
}

// openChainWriter opens an existing chain file for appending. It locks the file, reads
// where its records and checkpoints end and marks a partial last line for removal.
func openChainWriter(path string) (*chainWriter, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open chain file: %w: %w", ErrUnavailable, err)
	}
	w := &chainWriter{f: f, path: path}
	if err := w.lock(); err != nil {
		f.Close()
		return nil, err
	}

	info, err := f.Stat()
	if err == nil {
		id := strings.TrimSuffix(filepath.Base(path), auditFileSuffix)
		err = scanChainFile(path, filePosition{}, func(line []byte, end filePosition) (bool,
			error) {
			w.size = end.offset
			return false, w.observe(id, line, end.line)
		})
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open chain file %s: %w", path, err)
	}
	w.damaged = info.Size() != w.size
	return w, nil
}

// lock takes an exclusive advisory lock on the file, so that no two processes append
// to one chain.
func (w *chainWriter) lock() error {
	err := syscall.Flock(int(w.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("chain file %s is open for writing in another process: %w", w.path,
			ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("lock chain file %s: %w", w.path, err)
	}
	return nil
}

// observe updates the last seqs from line number n of the file of chain chainID.
func (w *chainWriter) observe(chainID string, line []byte, n int) error {
	typ, seq, decoded, err := classifyLine(chainID, line, n)
	switch {
	case err != nil:
		return err
	case typ == fileLineCheckpoint:
		w.lastCheckpoint = seq
	case typ == fileLineRecord:
		r, err := decodeRecordLine(chainID, line, n, decoded)
		if err != nil {
			return err
		}
		w.lastRecord = r
	}
	return nil
}

// append writes records and checkpoints of the writer's chain as one write. It returns
// ErrConflict, writing nothing, when a seq is not above the last one of its kind.
func (w *chainWriter) append(records []AuditRecord, checkpoints []AuditCheckpoint,
	flush bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()

	lastSeq := w.lastRecord.Seq
	for _, r := range records {
		if r.Seq <= lastSeq {
			return fmt.Errorf("audit record %s/%d exists: %w", r.ChainID, r.Seq, ErrConflict)
		}
		lastSeq = r.Seq
	}
	lastCheckpoint := w.lastCheckpoint
	for _, c := range checkpoints {
		if c.Seq <= lastCheckpoint {
			return fmt.Errorf("audit checkpoint %s/%d exists: %w", c.ChainID, c.Seq,
				ErrConflict)
		}
		lastCheckpoint = c.Seq
	}

	b := w.buf[:0]
	for _, r := range records {
		b = appendRecordLine(b, r)
	}
	for _, c := range checkpoints {
		b = appendCheckpointLine(b, c)
	}
	w.buf = b

	if err := w.write(b, flush); err != nil {
		return err
	}
	if len(records) > 0 {
		last := records[len(records)-1]
		last.PrevHash = append([]byte{}, last.PrevHash...)
		last.Hash = append([]byte{}, last.Hash...)
		w.lastRecord = last
	}
	w.lastCheckpoint = lastCheckpoint
	return nil
}

// write appends b, which holds whole lines, to the file. A failed or short write is cut
// off again, so that the file never holds a part of a line before a later one. The
// caller holds w.mu, or owns w alone.
func (w *chainWriter) write(b []byte, flush bool) error {
	if w.damaged {
		if err := w.f.Truncate(w.size); err != nil {
			return fmt.Errorf("cut a partial line off chain file %s: %w: %w", w.path,
				ErrUnavailable, err)
		}
		w.damaged = false
	}

	n, err := w.f.Write(b)
	if err == nil && flush {
		err = fdatasync(w.f)
	}
	if err != nil {
		if n > 0 {
			// The next write cuts it off; a reader stops at a line without its newline.
			w.damaged = w.f.Truncate(w.size) != nil
		}
		return fmt.Errorf("write chain file %s: %w: %w", w.path, ErrUnavailable, err)
	}

	w.size += int64(n)
	w.dirty = !flush
	return nil
}

// flush writes the file's data to disk when it changed since the last flush. It does not
// hold w.mu during the fdatasync, which takes milliseconds, so appends go on meanwhile.
// What they write is flushed by this call or the next one.
func (w *chainWriter) flush() error {
	w.mu.Lock()
	dirty := w.dirty
	w.dirty = false
	w.mu.Unlock()

	if !dirty {
		return nil
	}
	if err := fdatasync(w.f); err != nil {
		w.mu.Lock()
		w.dirty = true
		w.mu.Unlock()
		return fmt.Errorf("flush chain file %s: %w", w.path, err)
	}
	return nil
}

// syncLoop flushes written chain files every auditFileSyncInterval until close.
func (a *auditFiles) syncLoop() {
	defer close(a.syncDone)
	ticker := time.NewTicker(auditFileSyncInterval)
	defer ticker.Stop()

	failing := false
	for {
		select {
		case <-a.stopSync:
			return
		case <-ticker.C:
		}

		err := a.flushAll()
		switch {
		case err != nil && !failing:
			a.log.Error("flushing audit chain files failed; retrying", "error", err)
		case err == nil && failing:
			a.log.Info("audit chain files flushed again")
		}
		failing = err != nil
	}
}

func (a *auditFiles) flushAll() error {
	a.mu.Lock()
	writers := make([]*chainWriter, 0, len(a.writers))
	for _, w := range a.writers {
		writers = append(writers, w)
	}
	a.mu.Unlock()

	var errs []error
	for _, w := range writers {
		errs = append(errs, w.flush())
	}
	return errors.Join(errs...)
}

// close flushes and closes every chain file.
func (a *auditFiles) close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()

	close(a.stopSync)
	<-a.syncDone

	err := a.flushAll()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, w := range a.writers {
		err = errors.Join(err, w.f.Close())
		delete(a.writers, id)
	}
	return err
}

// chains returns the chain of every chain file, read from its header line, in no order.
func (a *auditFiles) chains() ([]AuditChain, error) {
	entries, err := os.ReadDir(a.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list audit chain files: %w", err)
	}

	var chains []AuditChain
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), auditFileSuffix)
		if !ok || !e.Type().IsRegular() || !validChainFileID(id) {
			continue
		}
		c, err := readChainHeader(a.path(id))
		if err != nil {
			return nil, err
		}
		c.ID = id
		chains = append(chains, c)
	}
	return chains, nil
}

// readChainHeader returns the chain of the file's first line, or a chain with only
// informational fields missing when that line is missing, incomplete or damaged. A
// damaged first line is reported when the chain's records or checkpoints are read, so
// that one damaged file does not hide the other chains.
func readChainHeader(path string) (AuditChain, error) {
	var c AuditChain
	err := scanChainFile(path, filePosition{}, func(line []byte, _ filePosition) (bool, error) {
		l, err := decodeFileLine(line)
		if err != nil || l.Type != fileLineChain {
			return true, nil
		}
		if c, err = l.chain(); err != nil {
			c = AuditChain{}
		}
		return true, nil
	})
	if err != nil {
		return AuditChain{}, fmt.Errorf("read chain file %s: %w", path, err)
	}
	return c, nil
}

// records returns up to limit records of the chain after afterSeq, in seq order.
func (a *auditFiles) records(chainID string, afterSeq uint64, limit int) ([]AuditRecord, error) {
	var records []AuditRecord
	err := a.page(chainID, fileLineRecord, afterSeq, limit, func(l fileLine) (uint64, error) {
		r, err := l.record()
		if err != nil {
			return 0, err
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
	err := a.page(chainID, fileLineCheckpoint, afterSeq, limit, func(l fileLine) (uint64, error) {
		c, err := l.checkpoint()
		if err != nil {
			return 0, err
		}
		checkpoints = append(checkpoints, c)
		return c.Seq, nil
	})
	return checkpoints, err
}

// page calls add for up to limit lines of kind with seq above afterSeq, in file order,
// which is seq order. It starts at the position where an earlier page ended, when one
// ended at afterSeq, so that reading a chain page by page reads the file once.
func (a *auditFiles) page(chainID, kind string, afterSeq uint64, limit int,
	add func(fileLine) (uint64, error)) error {
	start := a.cursor(cursorKey{chainID, kind, afterSeq})
	path := a.path(chainID)

	n, last, lastEnd := 0, afterSeq, filePosition{offset: -1}
	err := scanChainFile(path, start, func(line []byte, end filePosition) (bool, error) {
		typ, seq, decoded, err := classifyLine(chainID, line, end.line)
		if err != nil {
			return true, err
		}
		if typ != kind || seq <= afterSeq {
			return false, nil
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
		seq, err = add(*decoded)
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
		if err == nil {
			_, err = l.chain()
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
	err := scanChainFile(a.path(chainID), filePosition{}, func(line []byte,
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
// excluded, and the position just after it, whose line number is that of the line
// passed, until fn returns stop or an error. A last line without its newline is being
// written, or was cut short by a crash, and is not passed.
func scanChainFile(path string, start filePosition,
	fn func(line []byte, end filePosition) (stop bool, err error)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if start.offset > 0 {
		if _, err := f.Seek(start.offset, io.SeekStart); err != nil {
			return err
		}
	}

	r := bufio.NewReaderSize(f, 64<<10)
	pos := start
	var long []byte // a line longer than the reader's buffer
	for {
		chunk, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}

		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		pos.offset += int64(len(line))
		pos.line++
		stop, err := fn(bytes.TrimSuffix(line, []byte{'\n'}), pos)
		if err != nil || stop {
			return err
		}
	}
}

// syncDir flushes the directory entry of a new file.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
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
