package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
)

// trimZeroTails cuts the unwritten end off every chain file that no process writes. A
// writer killed before it could close its file leaves up to auditFileMapSize bytes of
// allocated disk there, and the line it was copying when it was killed (see
// trimZeroTail). A file that a live writer holds (flock) is skipped.
// Failures are logged, and the store opens all the same: verification then reports the
// file's unfinished line as damage.
func (a *auditFiles) trimZeroTails() {
	ids, err := a.chainFileIDs()
	if err != nil {
		a.log.Warn("listing audit chain files to trim failed", "dir", a.dir, "error", err)
		return
	}
	for _, id := range ids {
		cut, err := trimZeroTail(a.path(id))
		if err != nil {
			a.log.Warn("trimming the zero bytes off an audit chain file failed",
				"chain_id", id, "error", err)
			continue
		}
		if cut > 0 {
			a.log.Info("cut the unwritten end off the chain file of a stopped writer",
				"chain_id", id, "bytes", cut)
		}
	}
}

// trimZeroTail cuts the unwritten end off the chain file at path, unless a process holds
// its lock, and returns how many bytes it cut. The unwritten end is the zero bytes of the
// allocated region and any line that a killed writer left without its newline. Writers
// store in order (copyForward), but those of earlier builds stored the first bytes of a
// long batch last. So such a line can hold zero bytes with data after them, and a batch
// of several lines can be cut short anywhere. The file is therefore cut after the last
// newline that comes before the first zero byte of its last mapped region. No caller got a success for such a line, because an append
// returns only after its whole batch, newlines included, is in the file.
func trimZeroTail(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, nil // a live writer
	}
	if err != nil {
		return 0, err
	}

	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := info.Size()
	end, err := unwrittenEnd(f, size)
	if err != nil {
		return 0, err
	}
	if end == size {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, err
	}
	return size - end, nil
}

// unwrittenEnd returns the length of the complete lines at the start of the chain file f
// of the given size. A file that ends with a newline is complete, because a writer
// stores the newline that ends a batch after the rest of the batch. Otherwise it is the
// offset after the last newline before the first zero byte of the last auditFileMapSize
// bytes and one page (a region starts up to a page before its first line).
func unwrittenEnd(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		return size, nil
	}

	from := max(0, size-auditFileMapSize-int64(os.Getpagesize()))
	tail := make([]byte, size-from)
	if _, err := f.ReadAt(tail, from); err != nil {
		return 0, err
	}
	if z := bytes.IndexByte(tail, 0); z >= 0 {
		tail = tail[:z]
	}
	if nl := bytes.LastIndexByte(tail, '\n'); nl >= 0 {
		return from + int64(nl) + 1, nil
	}
	return lastNewlineBefore(f, from)
}

// lastNewlineBefore returns the offset after the last newline of f before offset end, or
// 0 when there is none.
func lastNewlineBefore(f *os.File, end int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end > 0 {
		start := max(0, end-int64(len(buf)))
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil {
			return 0, err
		}
		if nl := bytes.LastIndexByte(chunk, '\n'); nl >= 0 {
			return start + int64(nl) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// writeMapped copies b into the mapped region, mapping the next region first when b does
// not fit. A line is complete once its newline is there, so the copy stores the newline
// last. Another processor may still see the stores out of order. A reader that sees the
// newline before the bytes ahead of it finds zero bytes in the line and reads it again
// (auditFileRereads).
func (w *chainWriter) writeMapped(b []byte) error {
	if w.damaged || w.m == nil || w.size+int64(len(b)) > w.mapOff+int64(len(w.m)) {
		if err := w.remap(len(b)); err != nil {
			return err
		}
	}

	at := w.size - w.mapOff
	if err := copyLines(w.m[at:at+int64(len(b))], b); err != nil {
		return w.storeFailed(at, at+int64(len(b)), err)
	}
	w.size += int64(len(b))
	return nil
}

// remap maps the region of the file that starts at the page of w.size and holds at least
// n more bytes, after cutting off a partial line when the writer is damaged.
func (w *chainWriter) remap(n int) error {
	w.unmap()
	if w.damaged {
		if err := w.cutOffPartialLine(); err != nil {
			return err
		}
	}

	page := int64(os.Getpagesize())
	off := w.size / page * page
	need := (w.size - off + int64(n) + page - 1) / page * page
	m, err := mapFileRegion(w.f, off, int(max(auditFileMapSize, need)))
	if (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG)) &&
		need < auditFileMapSize {
		// A nearly full disk, or a file size limit: allocate only what the n bytes need.
		// ext4 keeps the blocks that a failed fallocate allocated before it ran out, past
		// the end of the file, so they are freed first. Otherwise the file would hold the
		// disk's last free space, which the database needs to become writable again.
		if truncErr := w.f.Truncate(w.size); truncErr != nil {
			w.damaged = true
			return w.writeFailure("free the blocks of a failed allocation", truncErr)
		}
		m, err = mapFileRegion(w.f, off, int(need))
	}
	if errors.Is(err, errMapUnsupported) {
		return err
	}
	if err != nil {
		// Allocating may have grown the file: cut it back before the next try.
		w.damaged = true
		return w.writeFailure("map", err)
	}
	w.m, w.mapOff = m, off
	return nil
}

// unmapWritten maps the region again from the page of w.size to its end, so that the
// full pages before it are no longer mapped when the file is flushed. Before the kernel
// writes back a dirty page of a shared mapping, it makes the page read-only in every
// mapping. Each mapped page then costs a TLB flush, which interrupts every other
// processor that runs a thread of the process. When the rest of the region cannot be
// mapped, the old mapping stays. The caller holds w.mu.
func (w *chainWriter) unmapWritten() {
	if w.m == nil || w.damaged {
		return
	}

	page := int64(os.Getpagesize())
	off := w.size / page * page
	end := w.mapOff + int64(len(w.m))
	if off == w.mapOff || off >= end {
		return
	}
	m, err := mapAllocatedRegion(w.f, off, int(end-off))
	if err != nil {
		return
	}
	w.unmap()
	w.m, w.mapOff = m, off
}

// unmap removes the mapping, if any. The file keeps its length.
func (w *chainWriter) unmap() {
	if w.m != nil {
		// munmap(2) fails only for an invalid range, and w.m is the range mmap returned.
		_ = unmapFileRegion(w.m)
		w.m = nil
	}
}

// copyLines copies b, which ends with a newline, to dst, the newline last. A store to a
// mapping of a file that another program cut short, or that the file system rejects,
// raises SIGBUS, which is returned as an error instead of ending the process.
func copyLines(dst, b []byte) error {
	return storeMapped(func() {
		n := len(b) - 1
		copyForward(dst[:n], b[:n])
		dst[n] = b[n]
	})
}

// copyForward copies src to dst in ascending order of address, eight bytes at a time.
// A process killed during the copy thus leaves a prefix of src in dst and zero bytes
// after it, which readers take for the unwritten end. The copy builtin promises no
// order: Go 1.26's runtime.memmove on amd64 with AVX stores the first 32 bytes of a copy
// of 2 KiB or more after the rest. A writer killed in between left zero bytes with data
// after them, which verification reports as damage.
func copyForward(dst, src []byte) {
	dst = dst[:len(src)]
	i := 0
	for ; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:]))
	}
	for ; i < len(src); i++ {
		dst[i] = src[i]
	}
}

// storeMapped calls store, which stores into a mapping of a file, and returns an error
// when a store faults (see copyLines).
func storeMapped(store func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if fault, ok := r.(interface{ Addr() uintptr }); ok {
			err = fmt.Errorf("store to the mapped file faulted at address %#x", fault.Addr())
		} else if r != nil {
			err = fmt.Errorf("store to the mapped file failed: %v", r)
		}
	}()

	store()
	return nil
}

// finish unmaps the file and cuts off the allocated bytes after the last line, so that
// a closed chain file ends with its last line. It returns how many bytes it cut off
// beyond the allocated region, which another program appended. The caller flushes the
// file after it.
func (w *chainWriter) finish() (appended int64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()

	if w.m == nil && !w.damaged {
		return 0, nil
	}
	if info, err := w.f.Stat(); err == nil && w.m != nil {
		appended = max(0, info.Size()-w.mapOff-int64(len(w.m)))
	}
	w.unmap()
	if err := w.f.Truncate(w.size); err != nil {
		return 0, w.writeFailure("cut the allocated end off", err)
	}
	w.damaged = false
	w.dirty = true
	return appended, nil
}

// checkCut sets w.cut when the file is shorter than its mapped region. A store to a page
// past the end of the file raises SIGBUS (see copyLines), but a store past the end
// within the file's last page is lost without a fault, so flush looks at the length
// too. The caller holds w.mu.
func (w *chainWriter) checkCut() {
	if w.m == nil || w.cut {
		return
	}
	info, err := w.f.Stat()
	if err == nil && info.Size() < w.mapOff+int64(len(w.m)) {
		w.unmap()
		w.cut = true
	}
}
