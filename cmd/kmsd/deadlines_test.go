package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// plainConnPair returns a plainConn and its peer, connected over loopback TCP.
func plainConnPair(t *testing.T) (*plainConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })

	accepted, err := plainListener{ln}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = accepted.Close() })
	return accepted.(*plainConn), peer
}

// writeAfter writes p to conn after delay, on another goroutine.
func writeAfter(conn net.Conn, delay time.Duration, p []byte) {
	go func() {
		time.Sleep(delay)
		_, _ = conn.Write(p)
	}()
}

func TestPlainConnReadDeadlines(t *testing.T) {
	tests := []struct {
		name string
		// deadlines are set in order, as offsets from now; 0 sets no deadline.
		deadlines []time.Duration
		// dataAfter is when the peer writes; 0 means it never does.
		dataAfter   time.Duration
		wantTimeout bool
	}{
		{"later deadline replaces earlier",
			[]time.Duration{100 * time.Millisecond, 10 * time.Second}, 400 * time.Millisecond, false},
		{"no deadline replaces earlier",
			[]time.Duration{100 * time.Millisecond, 0}, 400 * time.Millisecond, false},
		{"earlier deadline replaces later",
			[]time.Duration{10 * time.Second, 200 * time.Millisecond}, 0, true},
		{"later deadline passes",
			[]time.Duration{100 * time.Millisecond, 300 * time.Millisecond}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, peer := plainConnPair(t)
			start := time.Now()
			var last time.Time
			for _, d := range tt.deadlines {
				last = time.Time{}
				if d != 0 {
					last = start.Add(d)
				}
				if err := conn.SetReadDeadline(last); err != nil {
					t.Fatal(err)
				}
			}
			if tt.dataAfter != 0 {
				writeAfter(peer, tt.dataAfter, []byte("x"))
			} else {
				// Ends a read that no deadline ends, so that the test fails instead of hanging.
				defer time.AfterFunc(10*time.Second, func() { _ = peer.Close() }).Stop()
			}

			buf := make([]byte, 8)
			n, err := conn.Read(buf)
			if !tt.wantTimeout {
				if err != nil || n != 1 {
					t.Fatalf("Read = %d, %v; want the peer's byte", n, err)
				}
				return
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read error = %v; want os.ErrDeadlineExceeded", err)
			}
			if now := time.Now(); now.Before(last) {
				t.Errorf("Read timed out %v before the deadline", last.Sub(now))
			}
		})
	}
}

func TestPlainConnPastDeadlineInterruptsRead(t *testing.T) {
	conn, peer := plainConnPair(t)
	if err := conn.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	// net/http interrupts its hang-up read this way (abortPendingRead).
	if err := conn.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read error = %v; want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10 s after a deadline in the past was set")
	}

	// A deadline cleared after the interruption lets the next read wait for data.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	writeAfter(peer, 100*time.Millisecond, []byte("y"))
	if n, err := conn.Read(make([]byte, 8)); err != nil || n != 1 {
		t.Fatalf("Read after clearing the deadline = %d, %v; want the peer's byte", n, err)
	}
}

func TestPlainConnWriteAfterSocketDeadline(t *testing.T) {
	conn, peer := plainConnPair(t)
	if err := conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if err := conn.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	if n, err := conn.Write([]byte("hello")); err != nil || n != 5 {
		t.Fatalf("Write = %d, %v; want 5 bytes written", n, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v; want hello", got, err)
	}
}

func TestPlainConnWriteDeadlinePasses(t *testing.T) {
	conn, _ := plainConnPair(t)
	deadline := time.Now().Add(300 * time.Millisecond)
	if err := conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetWriteDeadline(deadline); err != nil {
		t.Fatal(err)
	}

	// The peer reads nothing, so the socket's buffers fill and a write blocks.
	chunk := bytes.Repeat([]byte("z"), 1<<20)
	var err error
	for i := 0; i < 1024 && err == nil; i++ {
		_, err = conn.Write(chunk)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write error = %v; want os.ErrDeadlineExceeded", err)
	}
	if now := time.Now(); now.Before(deadline) {
		t.Errorf("Write timed out %v before the deadline", deadline.Sub(now))
	}
}

func TestLazyDeadlineSetsSocket(t *testing.T) {
	base := time.Now()
	at := func(seconds int) time.Time { return base.Add(time.Duration(seconds) * time.Second) }
	tests := []struct {
		name        string
		laterAtOnce bool
		deadlines   []time.Time
		wantArmed   []time.Time // the deadlines put on the socket, in order
	}{
		{"read: later deadlines stay lazy", false,
			[]time.Time{at(10), at(20), {}, at(120), at(15)}, []time.Time{at(10)}},
		{"read: earlier deadline set at once", false,
			[]time.Time{at(120), at(10), time.Unix(1, 0), {}}, []time.Time{at(120), at(10), time.Unix(1, 0)}},
		{"write: every deadline set at once", true,
			[]time.Time{at(30), {}, at(31), {}, at(32)}, []time.Time{at(30), at(31), at(32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := lazyDeadline{laterAtOnce: tt.laterAtOnce}
			var armed []time.Time
			arm := func(t time.Time) error {
				armed = append(armed, t)
				return nil
			}
			for _, deadline := range tt.deadlines {
				if err := d.set(deadline, arm); err != nil {
					t.Fatal(err)
				}
			}

			if len(armed) != len(tt.wantArmed) {
				t.Fatalf("socket deadlines = %v, want %v", armed, tt.wantArmed)
			}
			for i := range armed {
				if !armed[i].Equal(tt.wantArmed[i]) {
					t.Errorf("socket deadline %d = %v, want %v", i, armed[i], tt.wantArmed[i])
				}
			}
		})
	}
}
