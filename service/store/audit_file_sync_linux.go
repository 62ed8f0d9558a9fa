//go:build linux && cgo

package store

/*
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

// datasync_job is one fdatasync run on a thread of its own. The Go caller allocates it
// with malloc and frees it after reading the completion byte.
struct datasync_job {
	int fd;      // file to flush
	int done_fd; // write end of a pipe that receives one byte when fdatasync returned
	int err;     // errno of fdatasync, or 0
};

static void *datasync_run(void *arg) {
	struct datasync_job *job = arg;
	int rc;
	do {
		rc = fdatasync(job->fd);
	} while (rc < 0 && errno == EINTR);
	job->err = rc < 0 ? errno : 0;

	char done = 1;
	while (write(job->done_fd, &done, 1) < 0 && errno == EINTR) {
	}
	return NULL;
}

// datasync_start runs fdatasync(job->fd) on a new detached thread and returns 0, or
// returns the error of pthread_create.
static int datasync_start(struct datasync_job *job) {
	pthread_attr_t attr;
	pthread_t thread;
	int rc = pthread_attr_init(&attr);
	if (rc != 0) {
		return rc;
	}
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&thread, &attr, datasync_run, job);
	pthread_attr_destroy(&attr);
	return rc;
}
*/
import "C"

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// fdatasyncInBackground flushes f like fdatasync, from a thread that the Go scheduler
// does not own, and waits for it in the network poller.
//
// A goroutine in a system call keeps its P (a processor's right to run Go code) until
// the runtime's monitor takes it back, which can take up to 10 ms when the process is
// mostly idle. When kmsd runs on one P between requests, a periodic fdatasync of a few
// ms in the calling goroutine would hold back every request for that long.
func fdatasyncInBackground(f *os.File) error {
	done, doneWrite, err := os.Pipe()
	if err != nil {
		return fdatasync(f)
	}
	defer done.Close()

	job := (*C.struct_datasync_job)(C.malloc(C.sizeof_struct_datasync_job))
	if job == nil {
		doneWrite.Close()
		return fdatasync(f)
	}
	job.fd = C.int(f.Fd())
	job.done_fd = C.int(doneWrite.Fd())
	if rc := C.datasync_start(job); rc != 0 {
		C.free(unsafe.Pointer(job))
		doneWrite.Close()
		return fdatasync(f)
	}

	// The thread writes its byte after fdatasync returned. Until then the write end and
	// job stay as they are: if the read fails, both are left to the thread, because a
	// closed descriptor number can be reused by another file that the byte would go to.
	var b [1]byte
	if _, err := io.ReadFull(done, b[:]); err != nil {
		return fmt.Errorf("wait for fdatasync: %w", err)
	}
	errno := syscall.Errno(job.err)
	C.free(unsafe.Pointer(job))
	doneWrite.Close()
	runtime.KeepAlive(f)

	if errno != 0 {
		return errno
	}
	return nil
}
