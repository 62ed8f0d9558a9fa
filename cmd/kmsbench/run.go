package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hsmkms/kms/service/auth"
)

// process is a child server.
type process struct {
	cmd  *exec.Cmd
	addr string
	logs *bytes.Buffer
}

func (p *process) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startProcess(name string, args []string, env []string, readyPath, addr string) (*process, error) {
	p := &process{cmd: exec.Command(name, args...), addr: addr, logs: &bytes.Buffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}

	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + addr + readyPath)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode < 500 {
				return p, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("%s did not become ready within 60 s:\n%s", name, p.logs)
}

// adminCredentials is the file kmsd writes on first start.
type adminCredentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
	ProjectID string `json:"project_id"`
}

// signedRequest is one request, ready for wrk.
type signedRequest struct {
	path    string
	body    []byte
	headers map[string]string
}

func sign(creds adminCredentials, host, op string, body []byte) signedRequest {
	path := "/v1.0/" + creds.ProjectID + "/kms/" + op
	req, _ := http.NewRequest(http.MethodPost, "http://"+host+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Project-Id", creds.ProjectID)
	req.Header.Set("User-Agent", "kmsbench")
	auth.Sign(req, body, creds.AccessKey, creds.SecretKey, time.Now())

	h := map[string]string{}
	for k := range req.Header {
		h[k] = req.Header.Get(k)
	}
	return signedRequest{path: path, body: body, headers: h}
}

// call sends one signed request and decodes a 200 response.
func call(creds adminCredentials, host, op string, body any) (map[string]any, error) {
	raw, _ := json.Marshal(body)
	sr := sign(creds, host, op, raw)
	req, _ := http.NewRequest(http.MethodPost, "http://"+host+sr.path, bytes.NewReader(raw))
	for k, v := range sr.headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", op, res.StatusCode, answer)
	}
	var out map[string]any
	return out, json.Unmarshal(answer, &out)
}

// workload is one measured operation: its request body and the text every correct
// response of kmsd must contain.
type workload struct {
	op          string
	body        []byte
	kmsdExpect  string
	ceilExpect  string
	unavailable string
}

func prepareWorkloads(creds adminCredentials, host string, ops []string) ([]workload, error) {
	key, err := call(creds, host, "create-key", map[string]any{"key_alias": "bench"})
	if err != nil {
		return nil, err
	}
	keyID := key["key_info"].(map[string]any)["key_id"].(string)
	ctx := map[string]string{"bench": "kmsbench", "tenant": "t-1"}

	dk, err := call(creds, host, "create-datakey",
		map[string]any{"key_id": keyID, "datakey_length": "512", "encryption_context": ctx})
	if err != nil {
		return nil, err
	}
	plain, cipher := dk["plain_text"].(string), dk["cipher_text"].(string)

	var out []workload
	for _, op := range ops {
		var body map[string]any
		w := workload{op: op}
		switch op {
		case "decrypt-datakey":
			body = map[string]any{"key_id": keyID, "cipher_text": cipher, "datakey_cipher_length": "64",
				"encryption_context": ctx, "sequence": "919c82d4-8046-4722-9094-35c3c6524cff"}
			w.kmsdExpect, w.ceilExpect = `"data_key":"`+plain+`"`, `"data_key":"`
		case "create-datakey":
			body = map[string]any{"key_id": keyID, "datakey_length": "256", "encryption_context": ctx}
			w.kmsdExpect, w.ceilExpect = `"plain_text":"`, `"plain_text":"`
		case "encrypt-datakey":
			body = map[string]any{"key_id": keyID, "datakey_plain_length": "64", "encryption_context": ctx,
				"plain_text": plain + digestHex(plain)}
			w.kmsdExpect, w.ceilExpect = `"cipher_text":"`, `"cipher_text":"`
		case "encrypt-data":
			body = map[string]any{"key_id": keyID, "plain_text": "a secret of about thirty bytes"}
			w.kmsdExpect, w.ceilExpect = `"cipher_text":"`, `"cipher_text":"`
		default:
			return nil, fmt.Errorf("unknown operation %q", op)
		}
		w.body, _ = json.Marshal(body)
		if _, err := call(creds, host, op, body); err != nil {
			w.unavailable = err.Error()
		}
		out = append(out, w)
	}
	return out, nil
}

// result is one wrk run.
type result struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	Connect    int64   `json:"errors_connect"`
	Read       int64   `json:"errors_read"`
	Write      int64   `json:"errors_write"`
	Status     int64   `json:"errors_status"`
	Timeout    int64   `json:"errors_timeout"`
	Failures   int64   `json:"failures"`
	Checked    int64   `json:"checked"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	P999       float64 `json:"p999"`
	RSSKiB     int64   `json:"-"`
	// CPUPerReq is the server's CPU time (user and system) per completed request, in
	// microseconds. It is steadier than req/s on a shared machine, for comparing builds.
	CPUPerReq float64 `json:"-"`

	latency latencyHistogram // from the HIST line of the wrk script
}

func (r result) rps() float64 { return float64(r.Requests) / (float64(r.DurationUS) / 1e6) }

func (r result) failed() int64 {
	return r.Failures + r.Status + r.Timeout + r.Read + r.Write + r.Connect
}

func runWrk(sr signedRequest, host, expect string, threads, conns int, d time.Duration) (result, error) {
	script, err := os.CreateTemp("", "kmsbench-*.lua")
	if err != nil {
		return result{}, err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(luaScript(sr, expect)); err != nil {
		return result{}, err
	}
	script.Close()

	args := []string{"-t", fmt.Sprint(threads), "-c", fmt.Sprint(conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())),
		"--timeout", "10s", "-s", script.Name(), "http://" + host + sr.path}
	out, err := exec.Command("wrk", args...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}

	var r result
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 64<<20) // the HIST line lists every distinct latency value
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "BENCH "); ok {
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return result{}, fmt.Errorf("invalid wrk result line: %w", err)
			}
			found = true
		}
		if rest, ok := strings.CutPrefix(line, "HIST"); ok {
			if r.latency, err = parseHistogram(rest); err != nil {
				return result{}, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return result{}, fmt.Errorf("read wrk output: %w", err)
	}
	if !found || r.latency == nil {
		return result{}, fmt.Errorf("wrk printed no result and histogram lines:\n%.2000s", out)
	}
	return r, nil
}

func luaString(s string) string {
	return "[==[" + s + "]==]"
}

func luaScript(sr signedRequest, expect string) string {
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\n")
	b.WriteString("wrk.body = " + luaString(string(sr.body)) + "\n")
	for k, v := range sr.headers {
		fmt.Fprintf(&b, "wrk.headers[ %s ] = %s\n", luaString(k), luaString(v))
	}
	b.WriteString("local expect = " + luaString(expect) + "\n")
	b.WriteString(`local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) failures = 0; checked = 0 end
function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or not string.find(body, expect, 1, true) then failures = failures + 1 end
end
function done(summary, latency, requests)
  local f, c = 0, 0
  for _, t in ipairs(threads) do f = f + t:get("failures"); c = c + t:get("checked") end
  io.write(string.format('BENCH {"requests":%d,"duration_us":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"failures":%d,"checked":%d,"p50":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, f, c,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
  local hist = {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("%d:%d", value, count)
  end
  io.write("HIST ", table.concat(hist, " "), "\n")
end
`)
	return b.String()
}

// cpuTicks returns the user and system CPU time of process pid in clock ticks, or 0.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(fields[11], &utime) // field 14 of proc_pid_stat(5)
	fmt.Sscan(fields[12], &stime) // field 15
	return utime + stime
}

// clockTicksPerSecond is USER_HZ, which Linux fixes at 100 for /proc.
const clockTicksPerSecond = 100

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &n)
			return n
		}
	}
	return 0
}

// kmsdServer is one started kmsd with the credentials and workloads of its data directory.
type kmsdServer struct {
	proc      *process
	creds     adminCredentials
	workloads []workload
}

// startKmsd starts bin on a fresh data directory under the embedded default, with extra
// flags and environment, and prepares the workloads of ops on it. The caller removes
// dataDir after stopping the process.
func startKmsd(bin, dataDir string, args, env []string, ops string) (*kmsdServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args = append([]string{"--data-dir", dataDir, "--listen", addr, "--log-level", "warn"},
		args...)
	proc, err := startProcess(bin, args, env, "/readyz", addr)
	if err != nil {
		return nil, err
	}

	k := &kmsdServer{proc: proc}
	raw, err := os.ReadFile(filepath.Join(dataDir, "admin-credentials.json"))
	if err == nil {
		err = json.Unmarshal(raw, &k.creds)
	}
	if err == nil {
		k.workloads, err = prepareWorkloads(k.creds, addr, strings.Split(ops, ","))
	}
	if err != nil {
		proc.stop()
		return nil, err
	}
	return k, nil
}

func runBenchmark(ctx context.Context, o options) (bool, error) {
	var base *process // the ceiling, or the kmsd of --against
	var baseServer *kmsdServer
	baseName := "ceiling"
	if o.against != "" {
		baseName = "against"
		dataDir, err := os.MkdirTemp("", "kmsbench-against-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(dataDir)
		baseServer, err = startKmsd(o.against, dataDir, strings.Fields(o.kmsdArgs),
			strings.Fields(o.againstEnv), o.ops)
		if err != nil {
			return false, fmt.Errorf("--against: %w", err)
		}
		base = baseServer.proc
	} else {
		self, err := os.Executable()
		if err != nil {
			return false, err
		}
		ceilAddr, err := freeAddr()
		if err != nil {
			return false, err
		}
		base, err = startProcess(self, []string{"ceiling", "--listen", ceilAddr}, nil, "/",
			ceilAddr)
		if err != nil {
			return false, err
		}
	}
	defer base.stop()

	dataDir, err := os.MkdirTemp("", "kmsbench-data-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dataDir)
	var args []string
	pprofAddr := ""
	if o.profile != "" {
		if pprofAddr, err = freeAddr(); err != nil {
			return false, err
		}
		args = append(args, "--pprof-listen", pprofAddr)
	}
	if o.database != "" {
		args = append(args, "--database", o.database)
	}
	args = append(args, strings.Fields(o.kmsdArgs)...)
	server, err := startKmsd(o.kmsd, dataDir, args, strings.Fields(o.kmsdEnv), o.ops)
	if err != nil {
		return false, err
	}
	kmsd, kmsdAddr, creds := server.proc, server.proc.addr, server.creds
	defer kmsd.stop()

	if o.replicas > 1 && !strings.HasPrefix(o.database, "postgres") {
		return false, errors.New("--replicas above 1 needs --database postgres://...")
	}
	replicaAddrs := []string{kmsdAddr}
	for range o.replicas - 1 {
		addr, err := freeAddr()
		if err != nil {
			return false, err
		}
		replicaArgs := []string{"--data-dir", dataDir, "--listen", addr, "--log-level", "warn",
			"--database", o.database}
		if o.kmsdArgs != "" {
			replicaArgs = append(replicaArgs, strings.Fields(o.kmsdArgs)...)
		}
		replica, err := startProcess(o.kmsd, replicaArgs, strings.Fields(o.kmsdEnv), "/readyz", addr)
		if err != nil {
			return false, err
		}
		defer replica.stop()
		replicaAddrs = append(replicaAddrs, addr)
	}

	var rows []row
	ok := true
	// target is one server of a round: its process, and the request of the operation on
	// it and the text that every correct response contains.
	type target struct {
		name   string
		proc   *process
		creds  adminCredentials
		w      workload
		expect string
	}
	roundLen := roundLength(o.duration, o.rounds)

	// runOnce loads one target for one round and returns the result and the CPU time of
	// the target's process in clock ticks.
	runOnce := func(t target, conns, threads int) (result, int64, error) {
		var profiled chan error
		if t.name == "kmsd" && pprofAddr != "" {
			profiled = make(chan error, 1)
			go func(addr string) { profiled <- captureProfile(addr, o.profile, roundLen) }(pprofAddr)
			pprofAddr = "" // only the first loaded round
		}
		pid := t.proc.cmd.Process.Pid

		var r result
		var err error
		ticks := cpuTicks(pid)
		if t.name == "kmsd" && len(replicaAddrs) > 1 {
			r, err = runWrkSplit(t.creds, t.w, replicaAddrs, t.expect, threads, conns, roundLen)
		} else {
			r, err = runWrk(sign(t.creds, t.proc.addr, t.w.op, t.w.body), t.proc.addr, t.expect,
				threads, conns, roundLen)
		}
		used := cpuTicks(pid) - ticks

		if profiled != nil {
			if perr := <-profiled; perr != nil {
				fmt.Fprintln(os.Stderr, "kmsbench: CPU profile:", perr)
			}
		}
		return r, used, err
	}

	// measure loads the base (the ceiling or the --against build) and kmsd in turns,
	// o.rounds times each, so that both see the same drift of the machine's speed, and
	// merges the rounds of each. i is the index of the operation in the workloads.
	measure := func(i, conns, threads int) error {
		w := server.workloads[i]
		targets := []target{
			{name: baseName, proc: base, w: w, expect: w.ceilExpect},
			{name: "kmsd", proc: kmsd, creds: creds, w: w, expect: w.kmsdExpect},
		}
		if baseServer != nil {
			bw := baseServer.workloads[i]
			targets[0].creds, targets[0].w, targets[0].expect = baseServer.creds, bw, bw.kmsdExpect
		}
		if o.skipCeiling {
			targets = targets[1:]
		}
		runs := make([][]result, len(targets))
		ticks := make([]int64, len(targets))
		for range o.rounds {
			for i, t := range targets {
				r, used, err := runOnce(t, conns, threads)
				if err != nil {
					return err
				}
				runs[i] = append(runs[i], r)
				ticks[i] += used
			}
		}

		for i, t := range targets {
			r := combine(runs[i], false)
			if r.Requests > 0 && len(replicaAddrs) <= 1 {
				used := float64(ticks[i]) / clockTicksPerSecond
				r.CPUPerReq = used * 1e6 / float64(r.Requests)
			}
			if t.name == "kmsd" {
				r.RSSKiB = rssKiB(kmsd.cmd.Process.Pid)
			}
			if r.failed() > 0 || r.Checked == 0 {
				ok = false
			}
			rows = append(rows, row{w.op, t.name, conns, r})
			fmt.Fprintf(os.Stderr, "%-16s %-8s c=%-3d %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  failures %d\n",
				w.op, t.name, conns, r.rps(), r.P50/1000, r.P99/1000, r.failed())
		}
		return nil
	}

	for i, w := range server.workloads {
		if baseServer != nil && w.unavailable == "" {
			w.unavailable = baseServer.workloads[i].unavailable
		}
		if w.unavailable != "" {
			fmt.Fprintf(os.Stderr, "%s: skipped, kmsd does not serve it: %s\n", w.op, w.unavailable)
			continue
		}
		if err := measure(i, o.connections, o.threads); err != nil {
			return false, err
		}
		if !o.skipSingle {
			if err := measure(i, 1, 1); err != nil {
				return false, err
			}
		}
	}

	printTable(rows, func(op string, conns int) (result, bool) {
		for _, r := range rows {
			if r.op == op && r.conns == conns && r.target == baseName {
				return r.r, true
			}
		}
		return result{}, false
	})
	if ok && len(rows) == 0 {
		return false, errors.New("nothing was measured")
	}
	return ok, nil
}

// row is one line of the result table.
type row struct {
	op, target string
	conns      int
	r          result
}

func printTable(rows []row, ceilingOf func(string, int) (result, bool)) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tserver\tconns\treq/s\tp50 ms\tp99 ms\tp99.9 ms\treq/s ratio\tp50 ratio\tp99 ratio\tfailures\tkmsd RSS MiB\tCPU us/req\t")
	for _, row := range rows {
		r := row.r
		ratio, p50, p99, rss := "", "", "", ""
		if row.target == "kmsd" {
			if c, ok := ceilingOf(row.op, row.conns); ok && c.rps() > 0 {
				ratio = fmt.Sprintf("%.2f", r.rps()/c.rps())
				p50 = fmt.Sprintf("%.2f", r.P50/c.P50)
				p99 = fmt.Sprintf("%.2f", r.P99/c.P99)
			}
			rss = fmt.Sprintf("%.0f", float64(r.RSSKiB)/1024)
		}
		cpu := ""
		if r.CPUPerReq > 0 {
			cpu = fmt.Sprintf("%.0f", r.CPUPerReq)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%d\t%s\t%s\t\n",
			row.op, row.target, row.conns, r.rps(), r.P50/1000, r.P99/1000, r.P999/1000,
			ratio, p50, p99, r.failed(), rss, cpu)
	}
	tw.Flush()
}

// digestHex returns the upper-case hex SHA-256 of the data key in plainHex, the suffix
// that encrypt-datakey expects after the data key.
func digestHex(plainHex string) string {
	dek, _ := hex.DecodeString(plainHex) // plainHex is kmsd's own create-datakey output
	sum := sha256.Sum256(dek)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// captureProfile fetches a CPU profile of the middle of a run of length d.
func captureProfile(addr, path string, d time.Duration) error {
	seconds := max(1, int((d-2*time.Second)/time.Second))
	time.Sleep(time.Second)
	res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", res.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runWrkSplit runs one wrk per replica at the same time, each with an equal share of the
// threads and connections, and adds their counts. Its p50, p99 and p99.9 are the highest
// of the replicas' values, an upper bound of the combined percentiles.
func runWrkSplit(creds adminCredentials, w workload, hosts []string, expect string, threads, conns int, d time.Duration) (result, error) {
	n := len(hosts)
	results := make([]result, n)
	errs := make([]error, n)
	done := make(chan int, n)
	for i, host := range hosts {
		go func() {
			sr := sign(creds, host, w.op, w.body)
			results[i], errs[i] = runWrk(sr, host, expect, max(1, threads/n), max(1, conns/n), d)
			done <- i
		}()
	}
	for range hosts {
		<-done
	}

	for _, err := range errs {
		if err != nil {
			return result{}, err
		}
	}
	return combine(results, true), nil
}
