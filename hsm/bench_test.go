package hsm

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// dataKey is a 64-byte plaintext, the size of a data key sealed on the decrypt-datakey path.
var dataKey = bytes.Repeat([]byte{0x5a}, 64)

// runGoroutines runs op b.N times in total, spread over goroutines.
func runGoroutines(b *testing.B, goroutines int, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup

	b.ResetTimer()
	for range goroutines {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// runEachParallelism runs op as a sub-benchmark on 1, 2, 4 and 8 goroutines.
func runEachParallelism(b *testing.B, op func() error) {
	for _, goroutines := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			runGoroutines(b, goroutines, op)
		})
	}
}

// benchAAD is the additional authenticated data of the benchmarks.
var benchAAD = []byte("ciphertext header and encryption context")

// sealedTestKey opens a module on a fresh token, generates the key keyID there and
// returns the module, the key and dataKey sealed under it with benchAAD.
func sealedTestKey(b *testing.B, keyID string) (*Module, KeyRef, Sealed) {
	b.Helper()

	m := openTestModule(b, nil)
	ref := KeyRef{KeyID: keyID, Version: 1}
	generateTestKey(b, m, ref)
	sealed, err := m.Seal(context.Background(), ref, dataKey, benchAAD)
	if err != nil {
		b.Fatal(err)
	}
	return m, ref, sealed
}

func BenchmarkSeal(b *testing.B) {
	m := openTestModule(b, nil)
	ref := KeyRef{KeyID: "bench-seal", Version: 1}
	generateTestKey(b, m, ref)
	ctx := context.Background()

	runEachParallelism(b, func() error {
		_, err := m.Seal(ctx, ref, dataKey, benchAAD)
		return err
	})
}

// BenchmarkSealRandom is the token call of create-datakey: a 64-byte data key and its IV
// from one C_GenerateRandom, sealed in the same session.
func BenchmarkSealRandom(b *testing.B) {
	m := openTestModule(b, nil)
	ref := KeyRef{KeyID: "bench-seal-random", Version: 1}
	generateTestKey(b, m, ref)
	ctx := context.Background()

	runEachParallelism(b, func() error {
		_, _, err := m.SealRandom(ctx, ref, len(dataKey), benchAAD)
		return err
	})
}

func BenchmarkOpen(b *testing.B) {
	m, ref, sealed := sealedTestKey(b, "bench-open")
	ctx := context.Background()

	for _, goroutines := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			runGoroutines(b, goroutines, func() error {
				_, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, benchAAD)
				return err
			})
		})
	}
}

// BenchmarkOpenAfterGap measures one Open after the calling thread paused, as a server
// with one client pauses between requests. "sleep" lets the processor go idle and
// "spin" keeps it busy for the same 100 µs. The us/open metric times the Open calls
// alone. ns/op includes the gap, and time.Sleep may sleep longer than asked.
func BenchmarkOpenAfterGap(b *testing.B) {
	m, ref, sealed := sealedTestKey(b, "bench-gap")
	ctx := context.Background()

	const gap = 100 * time.Microsecond
	for _, tt := range []struct {
		name  string
		pause func()
	}{
		{"none", func() {}},
		{"sleep", func() { time.Sleep(gap) }},
		{"spin", func() {
			for start := time.Now(); time.Since(start) < gap; {
			}
		}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var opening time.Duration
			for b.Loop() {
				tt.pause()

				start := time.Now()
				if _, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, benchAAD); err != nil {
					b.Fatal(err)
				}
				opening += time.Since(start)
			}
			b.ReportMetric(float64(opening.Microseconds())/float64(b.N), "us/open")
		})
	}
}

// BenchmarkRawDecrypt is the floor under Open: a bare C_DecryptInit and C_Decrypt loop on
// one session, with the token object and with a session copy of the same key.
func BenchmarkRawDecrypt(b *testing.B) {
	m, ref, sealed := sealedTestKey(b, "bench-raw")
	ctx := context.Background()

	c, release, err := m.acquire()
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	s, err := c.get(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.put(s)

	tokenKey, err := c.tokenHandle(s, ref)
	if err != nil {
		b.Fatal(err)
	}
	copyKey, err := c.sessionKey(s, ref)
	if err != nil {
		b.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		key  pkcs11.ObjectHandle
	}{
		{"token object", tokenKey},
		{"session copy", copyKey},
	} {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				_, err := decryptGCM(c.p11, s.handle, tt.key, sealed.IV, sealed.Ciphertext, benchAAD)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
