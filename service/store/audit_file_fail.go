package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// storeFailed returns the error of a copy into w.m[from:to] that faulted. A file shorter
// than the mapped region was cut short by another program: the writer appends nothing
// more (ErrChainFileCut). Otherwise the file system rejected the store, for example
// because the file was made immutable: the writer clears what the copy stored, unmaps
// the file and maps it again at the next append (ErrChainFileNotWritable). The caller
// holds w.mu.
func (w *chainWriter) storeFailed(from, to int64, fault error) error {
	info, err := w.f.Stat()
	if err == nil && info.Size() < w.mapOff+int64(len(w.m)) {
		w.unmap()
		w.cut = true
		return fmt.Errorf("write chain file %s: %w: the file is %d bytes, shorter than "+
			"its mapped region: %w", w.path, ErrChainFileCut, info.Size(), fault)
	}
	if err != nil {
		fault = errors.Join(fault, err) // not known to be cut, so not reported as cut
	}

	w.clearMapped(from, to)
	w.unmap()
	w.damaged = true // cut off the region, and anything left of the copy, before the next
	return w.notWritable("write", fault)
}

// clearMapped stores zero bytes over w.m[from:to], which a copy that faulted may have
// written in part, so that no reader takes its lines for lines of the chain. It stores
// page by page and skips a page where a store faults, because the copy could not store
// there either.
//
// NOTE: a page that the kernel wrote back and made read-only between the copy and this
// call faults here although the copy stored into it. Its complete lines then stay after
// the writer's end. The next append cuts them off, but when the writer stops before it
// can write again, the next read-write start of the store keeps them (trimZeroTail).
func (w *chainWriter) clearMapped(from, to int64) {
	page := int64(os.Getpagesize())
	for from < to {
		end := min(to, (from/page+1)*page) // w.m starts at a page boundary
		_ = storeMapped(func() { clear(w.m[from:end]) })
		from = end
	}
}

// cutOffPartialLine cuts the file back to its complete lines, after a failed write or
// allocation left bytes after them. A file that is shorter than its complete lines was cut
// short by another program (ErrChainFileCut). The caller holds w.mu, or owns w alone.
func (w *chainWriter) cutOffPartialLine() error {
	if info, err := w.f.Stat(); err == nil && info.Size() < w.size {
		w.cut = true
		return fmt.Errorf("write chain file %s: %w: the file is %d bytes, shorter than its "+
			"%d bytes of lines", w.path, ErrChainFileCut, info.Size(), w.size)
	}
	if err := w.f.Truncate(w.size); err != nil {
		return w.writeFailure("cut the incomplete end off", err)
	}
	w.damaged = false
	return nil
}

// writeFailure returns the error of op on the writer's file. It matches ErrUnavailable,
// and ErrChainFileNotWritable too when err means that the file cannot be written or
// extended.
func (w *chainWriter) writeFailure(op string, err error) error {
	if !cannotWrite(err) {
		return fmt.Errorf("%s chain file %s: %w: %w", op, w.path, ErrUnavailable, err)
	}
	return w.notWritable(op, err)
}

// notWritable returns the error of op on the writer's file, which cannot be written, with
// the cause that the file's attributes or its file system show.
func (w *chainWriter) notWritable(op string, err error) error {
	cause := notWritableCause(w.f)
	if cause == "" {
		return fmt.Errorf("%s chain file %s: %w: %w: %w", op, w.path, ErrChainFileNotWritable,
			ErrUnavailable, err)
	}
	return fmt.Errorf("%s chain file %s: %w (%s): %w: %w", op, w.path, ErrChainFileNotWritable,
		cause, ErrUnavailable, err)
}

// cannotWrite reports whether err, of a write, truncate, allocation or mapping of a file,
// means that the file cannot be written or extended.
func cannotWrite(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.EACCES, syscall.EROFS,
		syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
