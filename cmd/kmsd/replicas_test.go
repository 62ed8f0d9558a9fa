package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store/storetest"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

// replica is one kmsd process of a test that runs several on one store and one token.
type replica struct {
	p                 *kmsdProcess
	ak, sk, projectID string
}

// startReplica starts kmsd on dataDir (whose token and PINs replicas share) and the
// database dbURL, and waits until it is ready.
func startReplica(t *testing.T, dataDir, dbURL string, extra ...string) *replica {
	t.Helper()
	return waitForReplica(t, launchReplica(t, dataDir, dbURL, extra...), dataDir)
}

// launchReplica starts kmsd as startReplica does, without waiting.
func launchReplica(t *testing.T, dataDir, dbURL string, extra ...string) *kmsdProcess {
	t.Helper()
	args := append([]string{"--data-dir", dataDir, "--database", dbURL, "--keys-per-project", "100000",
		"--log-level", "warn"}, extra...)
	return launchKmsd(t, args)
}

// waitForReplica waits until p is ready, and returns it with the admin credential that
// dataDir holds then.
func waitForReplica(t *testing.T, p *kmsdProcess, dataDir string) *replica {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if status, _ := p.get("/readyz"); status == http.StatusOK {
			ak, sk, pid := readAdmin(t, dataDir)
			return &replica{p: p, ak: ak, sk: sk, projectID: pid}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kmsd did not become ready within 60 s; logs:\n%s", p.logs)
	return nil
}

// post sends a signed operation and returns the status and the decoded body.
func (r *replica) post(t testing.TB, op string, body any) (int, map[string]any) {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost,
		"http://"+r.p.addr+"/v1.0/"+r.projectID+"/kms/"+op, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	auth.Sign(req, raw, r.ak, r.sk, time.Now())

	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, map[string]any{"transport_error": err.Error()}
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	out := map[string]any{}
	_ = json.Unmarshal(answer, &out)
	return res.StatusCode, out
}

func (r *replica) createKey(t testing.TB, alias string) string {
	t.Helper()
	status, body := r.post(t, "create-key", map[string]any{"key_alias": alias})
	if status != http.StatusOK {
		t.Fatalf("create-key %s: status %d: %v", alias, status, body)
	}
	return body["key_info"].(map[string]any)["key_id"].(string)
}

func errorCode(body map[string]any) string {
	if inner, ok := body["error"].(map[string]any); ok {
		code, _ := inner["error_code"].(string)
		return code
	}
	return ""
}

// TestReplicasShareStoreAndToken runs two kmsd processes on one PostgreSQL schema and
// one SoftHSM2 token directory: a key created on A is usable on B at once, and parallel
// load on both gives no server error.
func TestReplicasShareStoreAndToken(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	dbURL := storetest.PostgresURL(t)
	a := startReplica(t, dataDir, dbURL)
	b := startReplica(t, dataDir, dbURL)

	keyID := a.createKey(t, "shared")
	deadline := time.Now().Add(2 * time.Second)
	for {
		s1, _ := b.post(t, "describe-key", map[string]any{"key_id": keyID})
		s2, body := b.post(t, "encrypt-datakey", map[string]any{"key_id": keyID,
			"plain_text": zeroDataKeyHex, "datakey_plain_length": "32"})
		if s1 == http.StatusOK && s2 == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica B could not use a key of A within 2 s: describe %d, encrypt %d %v", s1, s2, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	loadReplicas(t, []*replica{a, b}, keyID, replicaLoadDuration(t))
}

// TestReplicasFirstStartTogether starts three replicas at one moment on a new PostgreSQL
// schema and a new shared data directory. They must share one credential sealing key
// and one admin credential, which the admin credentials file holds and every replica
// accepts.
func TestReplicasFirstStartTogether(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	dbURL := storetest.PostgresURL(t)

	// The first start that sets up the embedded token runs alone (setup.lock), so the
	// replicas meet at the store's first-start steps.
	var launched []*kmsdProcess
	for range 3 {
		launched = append(launched, launchReplica(t, dataDir, dbURL))
	}
	var replicas []*replica
	for _, p := range launched {
		replicas = append(replicas, waitForReplica(t, p, dataDir))
	}

	// Each replica read the file when it became ready, so read it again now that all are.
	ak, sk, projectID := readAdmin(t, dataDir)
	for i, r := range replicas {
		r.ak, r.sk, r.projectID = ak, sk, projectID
		if status, body := r.post(t, "list-keys", map[string]any{}); status != http.StatusOK {
			t.Errorf("replica %d rejects the admin credential of the file: %d %v", i, status,
				body)
		}
	}
	keyID := replicas[0].createKey(t, "together")
	for i, r := range replicas {
		status, body := r.post(t, "encrypt-datakey", map[string]any{"key_id": keyID,
			"plain_text": zeroDataKeyHex, "datakey_plain_length": "32"})
		if status != http.StatusOK {
			t.Errorf("replica %d: encrypt-datakey: %d %v", i, status, body)
		}
	}

	sealingKeys := 0
	for _, ref := range tokenKeyObjects(t, dataDir) {
		if ref == auth.SealingKey {
			sealingKeys++
		}
	}
	if sealingKeys != 1 {
		t.Errorf("the token holds %d credential sealing keys, want 1", sealingKeys)
	}
	replaced, err := filepath.Glob(filepath.Join(dataDir, auth.AdminCredentialsFile+".replaced-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(replaced) != 0 {
		t.Errorf("replicas replaced each other's admin credentials file: %v", replaced)
	}
}

// TestReplicaOfOtherStoreExits starts a replica on one PostgreSQL schema, then another
// on a second schema with the same data directory. The second must exit at once, before
// it replaces the first one's admin credentials file, and a later replica of the first
// store must still start there.
func TestReplicaOfOtherStoreExits(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	first := startReplica(t, dataDir, storetest.PostgresURL(t))
	adminFile := mustRead(t, filepath.Join(dataDir, auth.AdminCredentialsFile))

	other := launchReplica(t, dataDir, storetest.PostgresURL(t))
	done := make(chan error, 1)
	go func() { done <- other.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the replica of the other store exited with status 0")
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the replica of the other store did not exit within 30 s; logs:\n%s",
			other.logs)
	}
	if logs := other.logs.String(); !strings.Contains(logs,
		"the data directory is in use by a replica of another store") {
		t.Errorf("the replica of the other store did not name the reason:\n%s", logs)
	}
	if got := mustRead(t, filepath.Join(dataDir, auth.AdminCredentialsFile)); !bytes.Equal(got, adminFile) {
		t.Error("the replica of the other store changed the admin credentials file")
	}
	if status, body := first.post(t, "list-keys", map[string]any{}); status != http.StatusOK {
		t.Errorf("the first replica after the other one exited: %d %v", status, body)
	}

	// The mark of a killed replica stays behind, and does not count.
	if err := first.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.p.cmd.Wait()
	marks, _ := filepath.Glob(filepath.Join(dataDir, "replicas", "*.mark"))
	if len(marks) == 0 {
		t.Fatal("the killed replica left no mark, so the case tests nothing")
	}
	startReplica(t, dataDir, storetest.PostgresURL(t))
}

// zeroDataKeyHex is a 32-byte zero data key followed by its SHA-256 digest.
const zeroDataKeyHex = "0000000000000000000000000000000000000000000000000000000000000000" +
	"66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"

func replicaLoadDuration(t *testing.T) time.Duration {
	if v := os.Getenv("KMS_TEST_REPLICA_LOAD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("KMS_TEST_REPLICA_LOAD: %v", err)
		}
		return d
	}
	return 60 * time.Second
}

// loadReplicas runs data-key round trips on every replica and a slow stream of
// create-key calls, for d, and fails on any 5xx or wrong data key. Key generation is
// kept slow because SoftHSM2 gets slower with every object in a token.
func loadReplicas(t *testing.T, replicas []*replica, keyID string, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()

	var calls, failures atomic.Int64
	var firstFailure sync.Once
	fail := func(format string, args ...any) {
		failures.Add(1)
		firstFailure.Do(func() { t.Errorf(format, args...) })
	}

	var wg sync.WaitGroup
	for ri, r := range replicas {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ec := map[string]string{"replica": fmt.Sprint(ri), "worker": fmt.Sprint(w)}
				for ctx.Err() == nil {
					status, c := r.post(t, "create-datakey", map[string]any{"key_id": keyID, "encryption_context": ec})
					calls.Add(1)
					if status != http.StatusOK {
						fail("create-datakey on replica %d: status %d %v", ri, status, c)
						continue
					}
					other := replicas[(ri+1)%len(replicas)]
					status, dk := other.post(t, "decrypt-datakey", map[string]any{"key_id": keyID,
						"cipher_text": c["cipher_text"], "datakey_cipher_length": "32", "encryption_context": ec})
					calls.Add(1)
					if status != http.StatusOK || dk["data_key"] != c["plain_text"] {
						fail("decrypt-datakey on the other replica: status %d %v", status, dk)
					}
				}
			}()
		}

		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				status, body := r.post(t, "create-key", map[string]any{"key_alias": fmt.Sprintf("load-%d-%d", ri, i)})
				calls.Add(1)
				if status >= 500 || status == 0 {
					fail("create-key on replica %d: status %d %v", ri, status, body)
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	wg.Wait()

	t.Logf("%d calls, %d failures over %v", calls.Load(), failures.Load(), d)
	for i, r := range replicas {
		if logs := r.p.logs.String(); strings.Contains(logs, "CKR_") {
			t.Errorf("replica %d logged a token error:\n%s", i, logs)
		}
	}
}

// TestReplicaSeesDisableWithinBound disables a key on A and checks that B refuses it
// within its key cache lifetime (--key-cache-ttl, 1 s by default) plus a margin.
func TestReplicaSeesDisableWithinBound(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	dbURL := storetest.PostgresURL(t)
	a := startReplica(t, dataDir, dbURL)
	b := startReplica(t, dataDir, dbURL)

	keyID := a.createKey(t, "to-disable")
	status, dk := b.post(t, "create-datakey", map[string]any{"key_id": keyID})
	if status != http.StatusOK {
		t.Fatalf("create-datakey on B: %d %v", status, dk)
	}
	decrypt := map[string]any{"key_id": keyID, "cipher_text": dk["cipher_text"], "datakey_cipher_length": "32"}
	if status, body := b.post(t, "decrypt-datakey", decrypt); status != http.StatusOK {
		t.Fatalf("decrypt-datakey on B before disable: %d %v", status, body)
	}

	if status, body := a.post(t, "disable-key", map[string]any{"key_id": keyID}); status != http.StatusOK {
		t.Fatalf("disable-key on A: %d %v", status, body)
	}
	disabledAt := time.Now()

	const bound = time.Second + 1500*time.Millisecond
	for {
		status, body := b.post(t, "decrypt-datakey", decrypt)
		if status == http.StatusBadRequest && errorCode(body) == "KMS.0209" {
			t.Logf("B refused the disabled key after %v", time.Since(disabledAt))
			return
		}
		if time.Since(disabledAt) > bound {
			t.Fatalf("B still answers %d %v %v after the disable", status, body, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCreateKeyStoreRefusesWrite makes PostgreSQL refuse the metadata writes of
// create-key, then checks that the call failed with a 5xx KMS error, that the token and
// the store still match exactly, and that the same alias can be created afterwards.
func TestCreateKeyStoreRefusesWrite(t *testing.T) {
	schemaURL := storetest.PostgresURL(t)
	admin, schema := openAdminDB(t, schemaURL)
	role := createSchemaRole(t, admin, schema, "kms_r_")
	roleURL := withUser(t, schemaURL, role)

	dataDir := filepath.Join(t.TempDir(), "kms-data")
	r := startReplica(t, dataDir, roleURL)
	r.createKey(t, "before")

	cases := []struct {
		name  string
		table string // the table whose writes are refused
	}{
		{"intent row refused", "key_versions"},
		{"key row refused", "keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustExec(t, admin, fmt.Sprintf(`REVOKE INSERT, UPDATE, DELETE ON %s.%s FROM %s`, schema, tc.table, role))
			status, body := r.post(t, "create-key", map[string]any{"key_alias": "x"})
			mustExec(t, admin, fmt.Sprintf(`GRANT INSERT, UPDATE, DELETE ON %s.%s TO %s`, schema, tc.table, role))

			if status < 500 || !strings.HasPrefix(errorCode(body), "KMS.") {
				t.Fatalf("create-key with the store refusing writes: status %d %v, want a 5xx KMS error", status, body)
			}
			checkTokenMatchesStore(t, dataDir, admin, schema)
		})
	}

	r.createKey(t, "x")
	checkTokenMatchesStore(t, dataDir, admin, schema)
}

// checkTokenMatchesStore compares the key objects in the token with the version rows of
// the store: every object has an active row, and every active row has its object.
func checkTokenMatchesStore(t *testing.T, dataDir string, db *sql.DB, schema string) {
	t.Helper()
	rows, err := db.Query(fmt.Sprintf(`SELECT key_id, version, state FROM %s.key_versions`, schema))
	if err != nil {
		t.Fatal(err)
	}
	stored := map[hsm.KeyRef]string{}
	for rows.Next() {
		var ref hsm.KeyRef
		var state string
		if err := rows.Scan(&ref.KeyID, &ref.Version, &state); err != nil {
			t.Fatal(err)
		}
		stored[ref] = state
	}
	rows.Close()

	objects := tokenKeyObjects(t, dataDir)
	for _, ref := range objects {
		if strings.HasPrefix(ref.KeyID, "system-") {
			continue
		}
		if stored[ref] != "active" {
			t.Errorf("token object %s has store state %q, want active", ref, stored[ref])
		}
	}
	inToken := map[hsm.KeyRef]bool{}
	for _, ref := range objects {
		inToken[ref] = true
	}
	for ref, state := range stored {
		if state == "active" && !inToken[ref] {
			t.Errorf("store row %s is active but the token has no object", ref)
		}
		if state == "creating" {
			t.Errorf("store row %s is still creating", ref)
		}
	}
}

// tokenKeyObjects lists the key objects of the shared token from the test process.
func tokenKeyObjects(t *testing.T, dataDir string) []hsm.KeyRef {
	t.Helper()
	module, err := softhsmsetup.FindModule()
	if err != nil {
		t.Skip(err)
	}
	pin, err := os.ReadFile(filepath.Join(dataDir, "user-pin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", filepath.Join(dataDir, "softhsm2.conf"))
	tok, err := hsm.Open(context.Background(), hsm.Config{ModulePath: module, TokenLabel: "kms",
		PIN: strings.TrimSpace(string(pin))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()

	refs, err := tok.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

func openAdminDB(t *testing.T, schemaURL string) (*sql.DB, string) {
	t.Helper()
	u, err := url.Parse(schemaURL)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	db, err := sql.Open("pgx", schemaURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, schema
}

// createSchemaRole creates a login role named prefix and the schema's random part, with
// every privilege on schema, and drops it with everything it owns when t ends.
func createSchemaRole(t *testing.T, admin *sql.DB, schema, prefix string) string {
	t.Helper()
	role := prefix + strings.TrimPrefix(schema, "s_")
	mustExec(t, admin, fmt.Sprintf(`CREATE ROLE %s LOGIN`, role))
	t.Cleanup(func() {
		mustExec(t, admin, fmt.Sprintf(`DROP OWNED BY %s CASCADE`, role))
		mustExec(t, admin, fmt.Sprintf(`DROP ROLE %s`, role))
	})
	mustExec(t, admin, fmt.Sprintf(`GRANT ALL ON SCHEMA %s TO %s`, schema, role))
	return role
}

func withUser(t *testing.T, rawURL, user string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

func mustExec(t *testing.T, db *sql.DB, query string) {
	t.Helper()
	if _, err := db.Exec(query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// TestSQLiteWriteLoad runs 50 clients of create-key, enable-key, disable-key,
// update-key-alias and create-grant against one kmsd on SQLite, then restarts it and
// checks that every acknowledged change is there and that no call met a locked database.
func TestSQLiteWriteLoad(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	dbPath := filepath.Join(dataDir, "kms.db")
	r := startReplica(t, dataDir, dbPath)

	d := 30 * time.Second
	if v := os.Getenv("KMS_TEST_SQLITE_LOAD"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("KMS_TEST_SQLITE_LOAD: %v", err)
		}
	}

	type acked struct {
		keyID, alias, state string
		grants              int
	}
	results := make([]acked, 50)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()

	var wg sync.WaitGroup
	var serverErrors atomic.Int64
	for c := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &results[c]
			a.alias = fmt.Sprintf("load-%d", c)
			status, body := r.post(t, "create-key", map[string]any{"key_alias": a.alias})
			if status != http.StatusOK {
				serverErrors.Add(1)
				t.Errorf("client %d create-key: %d %v", c, status, body)
				return
			}
			a.keyID, a.state = body["key_info"].(map[string]any)["key_id"].(string), "2"

			for i := 0; ctx.Err() == nil; i++ {
				var op string
				var req map[string]any
				switch i % 4 {
				case 0:
					op, req = "disable-key", map[string]any{"key_id": a.keyID}
				case 1:
					op, req = "enable-key", map[string]any{"key_id": a.keyID}
				case 2:
					op, req = "update-key-alias", map[string]any{"key_id": a.keyID,
						"key_alias": fmt.Sprintf("load-%d-%d", c, i)}
				case 3:
					op, req = "create-grant", map[string]any{"key_id": a.keyID, "grantee_principal": fmt.Sprintf("user%d%d", c, i),
						"operations": []string{"describe-key"}}
				}
				status, body := r.post(t, op, req)
				if status >= 500 || status == 0 {
					serverErrors.Add(1)
					t.Errorf("client %d %s: %d %v", c, op, status, body)
					continue
				}
				if status != http.StatusOK {
					if op == "create-grant" && errorCode(body) == "KMS.2404" {
						continue // the per-key grant quota is reached, which is not a store failure
					}
					t.Errorf("client %d %s: %d %v", c, op, status, body)
					continue
				}
				switch op {
				case "disable-key":
					a.state = "3"
				case "enable-key":
					a.state = "2"
				case "update-key-alias":
					a.alias = req["key_alias"].(string)
				case "create-grant":
					a.grants++
				}
			}
		}()
	}
	wg.Wait()
	if strings.Contains(r.p.logs.String(), "database is locked") {
		t.Fatalf("kmsd logged a locked database:\n%s", r.p.logs)
	}
	if serverErrors.Load() > 0 {
		t.Fatalf("%d calls failed with a server error", serverErrors.Load())
	}

	r.p.stop(t)
	r = startReplica(t, dataDir, dbPath)
	for c, a := range results {
		if a.keyID == "" {
			continue
		}
		status, body := r.post(t, "describe-key", map[string]any{"key_id": a.keyID})
		if status != http.StatusOK {
			t.Errorf("client %d describe-key after restart: %d %v", c, status, body)
			continue
		}
		info := body["key_info"].(map[string]any)
		if info["key_alias"] != a.alias || info["key_state"] != a.state {
			t.Errorf("client %d after restart: alias %v state %v, acknowledged %s %s",
				c, info["key_alias"], info["key_state"], a.alias, a.state)
		}
		status, grants := r.post(t, "list-grants", map[string]any{"key_id": a.keyID, "limit": "100"})
		if status != http.StatusOK {
			t.Errorf("client %d list-grants after restart: %d %v", c, status, grants)
			continue
		}
		if total, _ := grants["total"].(float64); int(total) != a.grants {
			t.Errorf("client %d after restart: %v grants, acknowledged %d", c, grants["total"], a.grants)
		}
	}
}
