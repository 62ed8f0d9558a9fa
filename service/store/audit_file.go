package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Chain files keep the audit chains of a SQLite store: one append-only file of JSON lines
// per chain, in a directory beside the database file (kms.db-audit for kms.db). The
// directory is part of the store: back it up with the database file.
//
// A batch is one copy of its lines into a mapping of the file. SQLite wrote and
// checksummed whole 4 KiB pages to its WAL, about 27 us for a lone client's record on the
// development machines. One write(2) of the lines took 2 us in a quiet loop but about
// 3 us of CPU per request in a loaded kmsd, and the copy takes a fraction of that. The
// writer allocates and maps auditFileMapSize bytes of the file ahead of its lines, so a
// written file ends in zero bytes until the writer closes it and cuts them off. Readers
// stop at the first zero byte. On file systems that cannot allocate a region
// (fallocate), batches are written with write(2).
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

	// auditFileRereads bounds how often a reader reads a line again that has zero bytes
	// with data after them, because the writer, maybe in another process, was copying
	// that line. Zero bytes that stay in place, with data after them, are damage.
	auditFileRereads = 3
)

// auditFileMapSize is the length of the region of a chain file that a writer maps at a
// time, in bytes: about a third of a second of decrypt-datakey records (about 600 bytes
// each) at 20,000 a second. It counts in kmsd's resident set while mapped. It is a variable so that tests can make regions small.
var auditFileMapSize int64 = 4 << 20

// errMapUnsupported is returned by mapFileRegion when the file system or the operating
// system cannot allocate and map a region of a file.
var errMapUnsupported = errors.New("the file system cannot allocate file regions")

// ErrChainFileCut is returned by every append to a chain file after its writer found the
// file shorter than its mapped region. Another program cut it short, and the lines from
// the cut on, if it reached any, are lost. The writer appends nothing more, so that the chain stays as
// the cut left it, and the caller starts a new chain.
var ErrChainFileCut = errors.New("audit chain file cut short by another program")

// ErrChainFileNotWritable is matched by the error of an append to a chain file that the
// writer cannot write or extend, although the file keeps its length. The causes are an
// immutable or append-only file (chattr +i, +a), a read-only or full file system, the file
// size limit and a denied permission. The file keeps the lines written before, and the
// lines of the failed append are not part of the chain. Each later append tries again, so
// appends go on in the same chain once the file can be written. Errors that match it
// match ErrUnavailable too.
var ErrChainFileNotWritable = errors.New("audit chain file cannot be written")

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

	// m maps the region of the file from mapOff, allocated on disk, that appends are
	// copied into. While m is set, the file is longer than size and its bytes after size
	// are zero. m is nil before the first append, after a failed remap and once the file
	// is cut. noMap makes appends use write(2), after mapFileRegion returned
	// errMapUnsupported.
	m      []byte
	mapOff int64
	noMap  bool
	// cut is set when the file was found shorter than the mapped region.
	cut bool

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
	if !readOnly {
		a.trimZeroTails()
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
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
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
		w.unmap()
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create chain file: %w: %w", ErrUnavailable, err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		_, _ = w.finish() // the chain keeps its first line, and the file nothing after it
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
		err = scanChainFile(path, filePosition{}, -1, func(line []byte, end filePosition) (bool,
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

	if w.cut {
		return fmt.Errorf("append to chain file %s: %w", w.path, ErrChainFileCut)
	}

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

// skipCheckpoints makes append reject checkpoints up to seq, which are stored elsewhere.
func (w *chainWriter) skipCheckpoints(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastCheckpoint = max(w.lastCheckpoint, seq)
}

// write appends b, which holds whole lines, to the file: copied into the mapped region,
// or with write(2) when the file cannot be mapped. A failed or short write is cut off
// again, so that the file never holds a part of a line before a later one. The caller
// holds w.mu, or owns w alone.
func (w *chainWriter) write(b []byte, flush bool) error {
	if !w.noMap {
		err := w.writeMapped(b)
		if err == nil && flush {
			err = fdatasync(w.f)
			if err != nil {
				err = fmt.Errorf("flush chain file %s: %w: %w", w.path, ErrUnavailable, err)
			}
		}
		if err == nil {
			w.dirty = !flush
			return nil
		}
		if !errors.Is(err, errMapUnsupported) {
			return err
		}
		w.noMap = true
		w.damaged = true // cut the allocated region off before the first write(2)
	}

	if w.damaged {
		if err := w.cutOffPartialLine(); err != nil {
			return err
		}
	}

	n, err := w.f.Write(b)
	if err != nil {
		if n > 0 {
			// The next write cuts it off; a reader stops at a line without its newline.
			w.damaged = w.f.Truncate(w.size) != nil
		}
		return w.writeFailure("write", err)
	}
	if flush {
		if err := fdatasync(w.f); err != nil {
			w.damaged = w.f.Truncate(w.size) != nil
			return fmt.Errorf("write chain file %s: %w: %w", w.path, ErrUnavailable, err)
		}
	}

	w.size += int64(n)
	w.dirty = !flush
	return nil
}

// written returns the length of the file's complete lines.
func (w *chainWriter) written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size
}

// flush writes the file's data to disk when it changed since the last flush. It does not
// hold w.mu during the fdatasync, which takes milliseconds, so appends go on meanwhile.
// What they write is flushed by this call or the next one.
func (w *chainWriter) flush() error {
	w.mu.Lock()
	dirty := w.dirty
	w.dirty = false
	w.checkCut()
	if dirty {
		w.unmapWritten()
	}
	w.mu.Unlock()

	if !dirty {
		return nil
	}
	if err := fdatasyncInBackground(w.f); err != nil {
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
	var errs []error
	for _, w := range a.writerList() {
		errs = append(errs, w.flush())
	}
	return errors.Join(errs...)
}

// writerList returns the open writers, in no order.
func (a *auditFiles) writerList() []*chainWriter {
	a.mu.Lock()
	defer a.mu.Unlock()
	writers := make([]*chainWriter, 0, len(a.writers))
	for _, w := range a.writers {
		writers = append(writers, w)
	}
	return writers
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

	var err error
	for _, w := range a.writerList() {
		appended, finishErr := w.finish()
		if appended > 0 {
			a.log.Warn("cut off bytes that another program appended to an audit chain file",
				"path", w.path, "bytes", appended)
		}
		err = errors.Join(err, finishErr)
	}
	err = errors.Join(err, a.flushAll())
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, w := range a.writers {
		err = errors.Join(err, w.f.Close())
		delete(a.writers, id)
	}
	return err
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
