package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordedProcs is a procGovernor whose GOMAXPROCS changes are recorded instead of
// applied.
type recordedProcs struct {
	*procGovernor
	waiting atomic.Int64 // what runnable returns
	mu      sync.Mutex
	set     []int
}

func newRecordedProcs(high int) *recordedProcs {
	r := &recordedProcs{procGovernor: newProcGovernor(high, slog.New(slog.DiscardHandler))}
	r.setProcs = func(n int) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.set = append(r.set, n)
	}
	r.runnable = func() int { return int(r.waiting.Load()) }
	return r
}

func (r *recordedProcs) changes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.set)
}

func (r *recordedProcs) ticks(n int) {
	for range n {
		r.tick()
	}
}

func TestProcGovernor(t *testing.T) {
	tests := []struct {
		name string
		run  func(g *recordedProcs)
		want string
	}{
		{
			name: "lowered after quiet ticks",
			run: func(g *recordedProcs) {
				g.begin()
				g.end()
				g.ticks(procsQuietTicks)
			},
			want: "[1]",
		},
		{
			name: "not lowered before enough quiet ticks",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks - 1)
			},
			want: "[]",
		},
		{
			name: "one request in progress is quiet",
			run: func(g *recordedProcs) {
				g.begin()
				g.ticks(procsQuietTicks)
				g.end()
			},
			want: "[1]",
		},
		{
			name: "second request raises",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks)
				g.begin()
				g.begin()
				g.end()
				g.end()
			},
			want: "[1 3]",
		},
		{
			name: "second request while high changes nothing",
			run: func(g *recordedProcs) {
				g.begin()
				g.begin()
				g.end()
				g.end()
			},
			want: "[]",
		},
		{
			name: "two requests between ticks reset the count",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks - 1)
				g.begin()
				g.begin()
				g.end()
				g.end()
				g.ticks(procsQuietTicks)
			},
			want: "[]",
		},
		{
			name: "quiet again after a busy tick",
			run: func(g *recordedProcs) {
				g.begin()
				g.begin()
				g.tick()
				g.end()
				g.end()
				g.ticks(procsQuietTicks + 1)
			},
			want: "[1]",
		},
		{
			name: "lowered once while quiet",
			run: func(g *recordedProcs) {
				g.ticks(3 * procsQuietTicks)
			},
			want: "[1]",
		},
		{
			name: "waiting goroutines raise",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks)
				g.waiting.Store(procsRunnable)
				g.begin()
				g.end()
			},
			want: "[1 3]",
		},
		{
			name: "few waiting goroutines do not raise",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks)
				g.waiting.Store(procsRunnable - 1)
				g.begin()
				g.end()
				g.tick()
			},
			want: "[1]",
		},
		{
			name: "waiting goroutines keep it high",
			run: func(g *recordedProcs) {
				g.waiting.Store(procsRunnable)
				g.ticks(2 * procsQuietTicks)
			},
			want: "[]",
		},
		{
			name: "waiting goroutines at a tick raise",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks)
				g.waiting.Store(procsRunnable)
				g.tick()
			},
			want: "[1 3]",
		},
		{
			name: "lower skipped with two requests in progress",
			run: func(g *recordedProcs) {
				g.inFlight.Store(2)
				g.lower()
			},
			want: "[]",
		},
		{
			name: "tick raises when a request slipped past lower",
			run: func(g *recordedProcs) {
				g.ticks(procsQuietTicks)
				g.inFlight.Store(2) // counted without begin, as if begin ran before low was set
				g.peak.Store(2)
				g.tick()
			},
			want: "[1 3]",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newRecordedProcs(3)

			tc.run(g)

			if got := g.changes(); got != tc.want {
				t.Errorf("GOMAXPROCS changes = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestProcGovernorRunRaisesAtStop(t *testing.T) {
	g := newRecordedProcs(4)
	g.ticks(procsQuietTicks)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	g.run(ctx)

	if got, want := g.changes(), "[1 4]"; got != want {
		t.Errorf("GOMAXPROCS changes = %s, want %s", got, want)
	}
	if g.low.Load() {
		t.Error("governor still low after run returned")
	}
}

func TestProcGovernorConcurrentRequests(t *testing.T) {
	g := newRecordedProcs(3)
	g.ticks(procsQuietTicks)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				g.begin()
				g.end()
			}
		})
	}
	wg.Wait()

	if n := g.inFlight.Load(); n != 0 {
		t.Errorf("requests in progress = %d after all ended, want 0", n)
	}
	// Whether two requests overlapped depends on the scheduler; if they did, the only
	// change after lowering is one raise.
	if got := g.changes(); got != "[1]" && got != "[1 3]" {
		t.Errorf("GOMAXPROCS changes = %s, want [1] or [1 3]", got)
	}
}

func TestRunnableGoroutines(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 * procsRunnable {
		wg.Go(func() {
			for !stop.Load() {
				runtime.Gosched()
			}
		})
	}
	runtime.Gosched() // let them start; on one P they then wait behind this goroutine

	got := runnableGoroutines()
	stop.Store(true)
	wg.Wait()
	if got < procsRunnable {
		t.Errorf("runnableGoroutines = %d with %d goroutines yielding on one P, want at least %d",
			got, 2*procsRunnable, procsRunnable)
	}
}

var gomaxprocsMetric = regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads (\d+)$`)

// gomaxprocsOf reads GOMAXPROCS of a kmsd from its /metrics.
func gomaxprocsOf(t *testing.T, p *kmsdProcess) int {
	t.Helper()
	res, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := gomaxprocsMetric.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no go_sched_gomaxprocs_threads in /metrics:\n%s", body)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// waitGomaxprocs polls /metrics until GOMAXPROCS of p is want, for up to 20 s.
func waitGomaxprocs(t *testing.T, p *kmsdProcess, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := gomaxprocsOf(t, p)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS = %d after 20 s, want %d; logs:\n%s", got, want, p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startSlowRequest opens a connection and sends a request whose body never completes,
// so that kmsd's handler stays in progress until the connection closes.
func startSlowRequest(t *testing.T, p *kmsdProcess) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /v1.0/project/kms/decrypt-datakey HTTP/1.1\r\n"+
		"Host: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

var gomaxprocsLog = regexp.MustCompile(`msg="Go processors set" gomaxprocs=(\d+) .*one_while_idle=(true|false)`)

// governedProcs returns the GOMAXPROCS that kmsd's start-up log line names, and skips
// the test when kmsd does not lower it while idle.
func governedProcs(t *testing.T, p *kmsdProcess) int {
	t.Helper()
	m := gomaxprocsLog.FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("no \"Go processors set\" line in the logs:\n%s", p.logs)
	}
	if m[2] != "true" {
		t.Skipf("kmsd runs on one processor only: %s", m[0])
	}
	high, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatalf("invalid gomaxprocs in %q: %v", m[0], err)
	}
	return high
}

func TestKmsdOneProcWhileIdle(t *testing.T) {
	p := startKmsd(t, t.TempDir())
	high := governedProcs(t, p)

	waitGomaxprocs(t, p, 1)

	first := startSlowRequest(t, p)
	second := startSlowRequest(t, p)
	waitGomaxprocs(t, p, high)

	first.Close()
	second.Close()
	waitGomaxprocs(t, p, 1)
	p.stop(t)
}

// TestKmsdRaisesUnderFastRequests loads kmsd with health checks, whose handler never
// blocks: on one P they run one after the other, so only the goroutines that wait for the
// P show the load.
func TestKmsdRaisesUnderFastRequests(t *testing.T) {
	p := startKmsd(t, t.TempDir())
	high := governedProcs(t, p)
	waitGomaxprocs(t, p, 1)

	var stop atomic.Bool
	var wg sync.WaitGroup
	url := "http://" + p.addr + "/healthz"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	for range 32 {
		wg.Go(func() {
			for !stop.Load() {
				res, err := client.Get(url)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	waitGomaxprocs(t, p, high)
}

func TestKmsdGOMAXPROCSFromEnvironment(t *testing.T) {
	p := startKmsd(t, t.TempDir(), "GOMAXPROCS=2")

	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	found := false
	for sc.Scan() {
		if m := gomaxprocsLog.FindStringSubmatch(sc.Text()); m != nil {
			found = true
			if m[1] != "2" || m[2] != "false" {
				t.Errorf("log line %q, want gomaxprocs 2 and one_while_idle false", m[0])
			}
		}
	}
	if !found {
		t.Fatalf("no \"Go processors set\" line in the logs:\n%s", p.logs)
	}

	// Longer than the governor needs to lower GOMAXPROCS, had it run.
	time.Sleep(procsQuietTicks*procsTick + time.Second)
	if got := gomaxprocsOf(t, p); got != 2 {
		t.Errorf("GOMAXPROCS = %d with GOMAXPROCS=2 in the environment, want 2", got)
	}
	p.stop(t)
}
