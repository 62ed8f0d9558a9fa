package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadAtMostMatchesLimitReader checks readAtMost against the io.ReadAll over an
// io.LimitReader that it replaces, for right, wrong and missing size hints.
func TestReadAtMostMatchesLimitReader(t *testing.T) {
	const limit = 65
	readers := map[string]func(string) io.Reader{
		"plain":         func(s string) io.Reader { return strings.NewReader(s) },
		"one byte":      func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"data with EOF": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
		"half reads":    func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	}
	for name, newReader := range readers {
		for _, size := range []int{0, 1, 63, 64, 65, 66, 600} {
			body := strings.Repeat("x", size)
			want, wantErr := io.ReadAll(io.LimitReader(newReader(body), limit))
			for _, hint := range []int64{-1, 0, int64(size), int64(size) / 2, 2 * int64(size)} {
				got, err := readAtMost(newReader(body), hint, limit)
				if !bytes.Equal(got, want) || !errors.Is(err, wantErr) {
					t.Errorf("%s reader, %d bytes, hint %d: got %d bytes, %v; expected %d bytes, %v",
						name, size, hint, len(got), err, len(want), wantErr)
				}
			}
		}
	}
}

func TestReadAtMostReturnsReadError(t *testing.T) {
	failure := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("part"), iotest.ErrReader(failure))
	got, err := readAtMost(r, 10, 100)
	if !errors.Is(err, failure) {
		t.Errorf("error = %v, expected %v", err, failure)
	}
	if string(got) != "part" {
		t.Errorf("read %q before the error, expected %q", got, "part")
	}
}

// TestResponseBufferReuseLeaksNothing checks that a released response buffer is cleared,
// so the next response encoded into it holds nothing of the previous one.
func TestResponseBufferReuseLeaksNothing(t *testing.T) {
	first := &requestState{}
	first.out = append(first.responseBuffer(), "data key 0123456789ABCDEF"...)
	written := first.out[:cap(first.out)]
	first.releaseResponseBuffer()

	if first.out != nil || first.outBuffer != nil {
		t.Error("the released state still refers to the buffer")
	}
	if i := bytes.IndexFunc(written, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("the released buffer keeps a nonzero byte at %d", i)
	}

	second := &requestState{}
	second.out = append(second.responseBuffer(), "{}"...)
	if tail := second.out[len(second.out):cap(second.out)]; bytes.ContainsAny(tail, "dk0") {
		t.Error("a reused buffer holds bytes of an earlier response")
	}
	second.releaseResponseBuffer()
}

// TestResponseBufferOutgrownIsCleared checks that a body larger than the pooled buffer
// leaves no part of itself in the pooled buffer it outgrew.
func TestResponseBufferOutgrownIsCleared(t *testing.T) {
	st := &requestState{}
	st.out = st.responseBuffer()
	pooled := st.out[:cap(st.out)]
	st.out = append(st.out, bytes.Repeat([]byte("K"), 2*cap(pooled))...)
	st.releaseResponseBuffer()

	if bytes.IndexByte(pooled, 'K') >= 0 {
		t.Error("the outgrown pooled buffer keeps the start of the body")
	}
}

func TestStateContextValues(t *testing.T) {
	type otherKey struct{}
	parent := context.WithValue(context.Background(), otherKey{}, "parent value")
	st := newRequestState(parent)
	ctx := context.Context(&st.ctx)

	if got := ctx.Value(stateKey{}); got != st {
		t.Errorf("Value(stateKey) = %v, expected the state", got)
	}
	if got := ctx.Value(otherKey{}); got != "parent value" {
		t.Errorf("Value of a parent key = %v, expected %q", got, "parent value")
	}

	// The service's grants reaching the audit record through this context is checked
	// end to end by the tests in audit_grants_test.go.
}
