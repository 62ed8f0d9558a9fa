package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store/storetest"
)

// storeNotReadyLog is part of the log line that kmsd writes when /readyz finds the store
// unusable.
const storeNotReadyLog = `msg="not ready" reason="store unavailable"`

// waitForNotReady polls /readyz every 100 ms until it responds 503 with reason, for at
// most 30 s.
func waitForNotReady(t *testing.T, p *kmsdProcess, reason string) {
	t.Helper()
	var status int
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		status, body = p.get("/readyz")
		var answer struct{ Reason string }
		_ = json.Unmarshal([]byte(body), &answer)
		if status == http.StatusServiceUnavailable && answer.Reason == reason {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/readyz did not answer 503 with the reason %q within 30 s; last answer %d %s; "+
		"logs:\n%s", reason, status, body, p.logs)
}

// TestReadyzSQLiteWALImmutable makes the -wal file of kmsd's SQLite database immutable
// while kmsd runs. Pings and reads still work then, but no write commits. /readyz must
// report the store unavailable and log the cause once, and report ready once writes
// commit again.
func TestReadyzSQLiteWALImmutable(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	r := startReplica(t, dataDir, filepath.Join(dataDir, "kms.db"))
	keyID := r.createKey(t, "before")

	wal := filepath.Join(dataDir, "kms.db-wal")
	storetest.SetImmutable(t, wal)
	waitForNotReady(t, r.p, "store unavailable")

	if status, body := r.post(t, "describe-key", map[string]any{"key_id": keyID}); status != http.StatusOK {
		t.Errorf("describe-key with an immutable -wal file: status %d %v, expected 200", status, body)
	}
	if status, body := r.post(t, "create-key", map[string]any{"key_alias": "during"}); status < 500 {
		t.Errorf("create-key with an immutable -wal file: status %d %v, expected a 5xx", status, body)
	}
	// Further probes must not log the unchanged cause again.
	for range 3 {
		r.p.get("/readyz")
	}
	logs := r.p.logs.String()
	if n := strings.Count(logs, storeNotReadyLog); n != 1 {
		t.Errorf("the log has %d lines %s, expected 1; logs:\n%s", n, storeNotReadyLog, logs)
	}
	// The write fails with "operation not permitted" on the connection that was open, and
	// with "attempt to write a readonly database" on one that kmsd opened since.
	if !strings.Contains(logs, "operation not permitted") &&
		!strings.Contains(logs, "attempt to write a readonly database") {
		t.Errorf("the log does not name the cause, a write that is not permitted; logs:\n%s",
			logs)
	}

	storetest.ClearImmutable(t, wal)
	r.p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	r.createKey(t, "after")
}

// TestReadyzPostgresReadOnly makes the PostgreSQL sessions of kmsd read-only, as they are
// after a failover to a hot standby. It sets default_transaction_read_only on kmsd's role
// and ends its sessions, so that kmsd opens new ones. /readyz must report the store
// unavailable, and report ready once the role accepts writes again.
func TestReadyzPostgresReadOnly(t *testing.T) {
	schemaURL := storetest.PostgresURL(t)
	admin, schema := openAdminDB(t, schemaURL)
	role := createSchemaRole(t, admin, schema, "kms_ro_")

	dataDir := filepath.Join(t.TempDir(), "kms-data")
	r := startReplica(t, dataDir, withUser(t, schemaURL, role))
	r.createKey(t, "before")

	endSessions := func() {
		t.Helper()
		mustExec(t, admin, fmt.Sprintf(
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'`, role))
	}
	mustExec(t, admin, fmt.Sprintf(`ALTER ROLE %s SET default_transaction_read_only = on`, role))
	endSessions()
	// pgx checks a pooled connection before reuse only when it has been idle for more
	// than a second (stdlib Conn.ResetSession), and database/sql does not retry a ping
	// that meets an ended session. Without this pause a ping could fail once and the test
	// would pass without any check that writes.
	time.Sleep(1500 * time.Millisecond)
	waitForNotReady(t, r.p, "store unavailable")

	if status, body := r.post(t, "create-key", map[string]any{"key_alias": "during"}); status < 500 {
		t.Errorf("create-key on read-only sessions: status %d %v, expected a 5xx", status, body)
	}
	logs := r.p.logs.String()
	if n := strings.Count(logs, storeNotReadyLog); n != 1 {
		t.Errorf("the log has %d lines %s, expected 1; logs:\n%s", n, storeNotReadyLog, logs)
	}
	if !strings.Contains(logs, "SQLSTATE 25006") {
		t.Errorf("the log does not name the cause, SQLSTATE 25006; logs:\n%s", logs)
	}

	// The sessions are not ended this time: a session keeps the read-only setting of its
	// start, so kmsd must replace the sessions that found the database read-only.
	mustExec(t, admin, fmt.Sprintf(`ALTER ROLE %s RESET default_transaction_read_only`, role))
	r.p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	r.createKey(t, "after")
}

// TestKmsdStartsWithImmutableWAL starts kmsd while the -wal file of its SQLite database
// cannot be written, as after a crash on a volume gone read-only. SQLite then opens its
// connections read-only for good, so kmsd must replace them: once the file can be
// written, create-key must succeed without a restart and without a /readyz probe.
func TestKmsdStartsWithImmutableWAL(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	dbPath := filepath.Join(dataDir, "kms.db")
	first := startReplica(t, dataDir, dbPath)
	first.createKey(t, "before")
	if err := first.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.p.cmd.Wait()

	// SIGKILL leaves the -wal file in place.
	wal := dbPath + "-wal"
	storetest.SetImmutable(t, wal)
	r := &replica{p: launchKmsd(t, []string{"--data-dir", dataDir, "--database", dbPath})}
	r.ak, r.sk, r.projectID = readAdmin(t, dataDir)
	waitForNotReady(t, r.p, "store unavailable")
	if status, body := r.post(t, "create-key", map[string]any{"key_alias": "during"}); status < 500 {
		t.Errorf("create-key with an immutable -wal file: status %d %v, expected a 5xx", status, body)
	}

	storetest.ClearImmutable(t, wal)
	deadline := time.Now().Add(30 * time.Second)
	status, body := r.post(t, "create-key", map[string]any{"key_alias": "after"})
	for status != http.StatusOK && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		status, body = r.post(t, "create-key", map[string]any{"key_alias": "after"})
	}
	if status != http.StatusOK {
		t.Fatalf("create-key 30 s after the -wal file became writable: status %d %v; logs:\n%s",
			status, body, r.p.logs)
	}
	r.p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
}

// TestKmsdTokenFolderNotWritable makes the embedded token's folder immutable while kmsd
// runs, as a volume gone read-only would. SoftHSM2 then fails key generation with
// CKR_GENERAL_ERROR. create-key must return 503 KMS.0102, /readyz must report the token
// unavailable, data keys must keep working, and kmsd must recover once the folder can
// be written.
func TestKmsdTokenFolderNotWritable(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	r := startReplica(t, dataDir, filepath.Join(dataDir, "kms.db"))
	keyID := r.createKey(t, "before")

	folders, err := filepath.Glob(filepath.Join(dataDir, "tokens", "*"))
	if err != nil || len(folders) != 1 {
		t.Fatalf("token folders %v (%v), expected one", folders, err)
	}
	storetest.SetImmutable(t, folders[0])

	status, body := r.post(t, "create-key", map[string]any{"key_alias": "during"})
	if status != http.StatusServiceUnavailable || errorCode(body) != "KMS.0102" {
		t.Errorf("create-key with the token folder immutable: status %d %v, expected 503 "+
			"KMS.0102", status, body)
	}
	waitForNotReady(t, r.p, "token unavailable")
	status, body = r.post(t, "create-datakey", map[string]any{"key_id": keyID})
	if status != http.StatusOK {
		t.Errorf("create-datakey with the token folder immutable: status %d %v, expected 200",
			status, body)
	}

	storetest.ClearImmutable(t, folders[0])
	r.p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)
	r.createKey(t, "after")
}

// TestKmsdWaitsForPostgresAtStart starts kmsd while its PostgreSQL address refuses
// connections, as when a replica restarts during a database outage. kmsd must serve
// /healthz, report the store unavailable in /readyz, and start the service without a
// restart once the database accepts connections, here through a TCP proxy to the test
// server.
func TestKmsdWaitsForPostgresAtStart(t *testing.T) {
	schemaURL := storetest.PostgresURL(t)
	u, err := url.Parse(schemaURL)
	if err != nil {
		t.Fatal(err)
	}
	database := u.Host
	u.Host = freeAddr(t) // nothing listens there yet
	dataDir := filepath.Join(t.TempDir(), "kms-data")

	p := launchKmsd(t, []string{"--data-dir", dataDir, "--database", u.String()})
	waitForNotReady(t, p, "store unavailable")
	if status, body := p.get("/healthz"); status != http.StatusOK {
		t.Errorf("/healthz while the store is unavailable: %d %s, want 200", status, body)
	}
	status, body := p.get("/v1.0/p/kms/list-keys")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "metadata store") {
		t.Errorf("an API call while the store is unavailable: %d %s, want 503 naming the "+
			"metadata store", status, body)
	}

	proxyTCP(t, u.Host, database)
	p.waitFor(t, "/readyz", http.StatusOK, 30*time.Second)

	ak, sk, projectID := readAdmin(t, dataDir)
	r := &replica{p: p, ak: ak, sk: sk, projectID: projectID}
	r.createKey(t, "after-outage")
	logs := p.logs.String()
	if n := strings.Count(logs, "metadata store unavailable, waiting for it"); n != 1 {
		t.Errorf("the log has %d lines about waiting for the store, want 1; logs:\n%s", n, logs)
	}
	p.stop(t)
}

// tcpProxy copies connections between a listener and a target address. While stalled,
// it still accepts connections but passes no byte in either direction, as a database
// server that stopped (SIGSTOP) or a network that drops packets would.
type tcpProxy struct {
	stalled atomic.Bool
	closed  atomic.Bool
}

// stall holds every byte from now on until resume.
func (p *tcpProxy) stall() { p.stalled.Store(true) }

// resume passes the held bytes and those that follow.
func (p *tcpProxy) resume() { p.stalled.Store(false) }

// copy copies src to dst, holding each read while the proxy is stalled, until either
// side fails or the proxy is closed.
func (p *tcpProxy) copy(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.stalled.Load() && !p.closed.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil || p.closed.Load() {
			return
		}
	}
}

// proxyTCP accepts connections on listen and copies each to and from a new connection to
// target, until the test ends.
func proxyTCP(t *testing.T, listen, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		p.closed.Store(true)
		ln.Close()
		wg.Wait()
	})

	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				p.copy(server, client)
			}()
			go func() {
				defer wg.Done()
				p.copy(client, server)
			}()
		}
	}()
	return p
}

// postWithin is replica.post with a client that gives up after timeout, for calls that
// could hang. A call that got no response has status 0.
func postWithin(t *testing.T, r *replica, timeout time.Duration, op string, body any) (
	int, map[string]any,
) {
	t.Helper()
	saved := http.DefaultClient.Timeout
	http.DefaultClient.Timeout = timeout
	defer func() { http.DefaultClient.Timeout = saved }()
	return r.post(t, op, body)
}

// TestKmsdPostgresStallGets503 stops every byte between kmsd and PostgreSQL while the
// connections stay open, as a database host that hangs does. A call must then get 503
// KMS.0102 once --request-timeout passes, instead of a wait as long as the stall and no
// response. That holds with the audit trail off, and on, where the audit record waits
// up to 20 s for the database too. kmsd must serve again once the database responds.
func TestKmsdPostgresStallGets503(t *testing.T) {
	tests := []struct {
		name  string
		audit string
		ops   []string
	}{
		{"audit off", "--audit=false", []string{"list-keys", "describe-key", "create-datakey"}},
		{"audit on", "--audit=true", []string{"create-datakey"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			schemaURL := storetest.PostgresURL(t)
			u, err := url.Parse(schemaURL)
			if err != nil {
				t.Fatal(err)
			}
			database := u.Host
			u.Host = freeAddr(t)
			proxy := proxyTCP(t, u.Host, database)

			dataDir := filepath.Join(t.TempDir(), "kms-data")
			r := startReplica(t, dataDir, u.String(), tt.audit, "--request-timeout", "2s",
				"--key-cache-ttl", "0s")
			keyID := r.createKey(t, "before-stall")

			proxy.stall()
			for _, op := range tt.ops {
				status, body := postWithin(t, r, 50*time.Second, op, map[string]any{"key_id": keyID})
				if status != http.StatusServiceUnavailable || errorCode(body) != "KMS.0102" {
					t.Errorf("%s while PostgreSQL stalls: status %d %v, want 503 KMS.0102",
						op, status, body)
				}
			}

			proxy.resume()
			r.p.waitFor(t, "/readyz", http.StatusOK, 60*time.Second)
			status, body := postWithin(t, r, 30*time.Second, "create-datakey",
				map[string]any{"key_id": keyID})
			if status != http.StatusOK {
				t.Errorf("create-datakey after the stall: status %d %v, want 200; logs:\n%s",
					status, body, r.p.logs)
			}
		})
	}
}

// TestKmsdExitsWhenPostgresRejectsLogin starts kmsd with PostgreSQL URLs that the server
// rejects for good: waiting cannot fix them, so kmsd must end with an error that names
// the cause instead of waiting for the store.
func TestKmsdExitsWhenPostgresRejectsLogin(t *testing.T) {
	schemaURL := storetest.PostgresURL(t)
	tests := []struct {
		name      string
		change    func(u *url.URL)
		wantCause string
	}{
		{"unknown role", func(u *url.URL) { u.User = url.User("kms_no_such_role") },
			"SQLSTATE 28000"},
		{"missing database", func(u *url.URL) { u.Path = "/kms_no_such_database" },
			"SQLSTATE 3D000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(schemaURL)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(u)
			dataDir := filepath.Join(t.TempDir(), "kms-data")

			p := launchKmsd(t, []string{"--data-dir", dataDir, "--database", u.String()})
			waitForFailedExit(t, p, "its login was rejected")
			logs := p.logs.String()
			if !strings.Contains(logs, "opening the metadata store") ||
				!strings.Contains(logs, tt.wantCause) {
				t.Errorf("the log does not name the store and %s; logs:\n%s", tt.wantCause, logs)
			}
		})
	}
}
