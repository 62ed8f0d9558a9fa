package compat

import (
	"crypto/rand"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/basic"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/signer"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/config"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/request"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/sdkerr"
	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
)

// kmsd is the one server process that every test of the package talks to. TestMain
// starts it before the tests and stops it after them.
var kmsd *server

// server is a running kmsd process and the admin credential it was bootstrapped with.
type server struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
	endpoint string // http://127.0.0.1:port

	accessKey string
	secretKey string
	projectID string
	domainID  string
}

// readyTimeout bounds how long kmsd may take to create its token and return 200 on /readyz.
const readyTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kms-compat-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "compat: creating a temp dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	kmsd, err = startServer(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "compat: %v\n", err)
		return 1
	}

	code := m.Run()

	if err := kmsd.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "compat: %v\n", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "compat: kmsd log:\n%s\n", kmsd.log())
	}
	return code
}

// kmsdBinaryEnv names a variable that, when set, gives the path of a kmsd binary to test
// in place of building one from the parent module.
const kmsdBinaryEnv = "KMS_COMPAT_KMSD"

// startServer builds kmsd from the parent module into dir (or takes the binary named by
// KMS_COMPAT_KMSD) and starts it on a fresh data directory with a random admin
// credential, then waits until /readyz returns 200.
func startServer(dir string) (*server, error) {
	bin := os.Getenv(kmsdBinaryEnv)
	if bin == "" {
		bin = filepath.Join(dir, "kmsd")
		build := exec.Command("go", "build", "-o", bin, "github.com/hsmkms/kms/cmd/kmsd")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building kmsd: %w\n%s", err, out)
		}
	}

	addr, err := freeAddress()
	if err != nil {
		return nil, err
	}
	s := &server{
		exited:    make(chan struct{}),
		logPath:   filepath.Join(dir, "kmsd.log"),
		endpoint:  "http://" + addr,
		accessKey: "COMPAT" + strings.ToUpper(randomHex(7)),
		secretKey: randomHex(20),
		projectID: randomHex(16),
		domainID:  randomHex(16),
	}

	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the kmsd log: %w", err)
	}
	defer logFile.Close()

	s.cmd = exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen", addr,
		"--log-level", "debug", "--keys-per-project", "100")
	s.cmd.Env = append(os.Environ(),
		"KMS_ADMIN_ACCESS_KEY="+s.accessKey,
		"KMS_ADMIN_SECRET_KEY="+s.secretKey,
		"KMS_PROJECT_ID="+s.projectID,
		"KMS_DOMAIN_ID="+s.domainID,
	)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting kmsd: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(); err != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		return nil, fmt.Errorf("%w; kmsd log:\n%s", err, s.log())
	}
	return s, nil
}

func (s *server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("kmsd exited before it was ready: %v", s.cmd.ProcessState)
		default:
		}

		res, err := client.Get(s.endpoint + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kmsd did not return 200 on /readyz within %s", readyTimeout)
}

// stop sends SIGTERM and waits for kmsd to exit with status 0, killing it after 30 s.
func (s *server) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping kmsd: %w", err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("kmsd did not exit within 30 s of SIGTERM")
	}
	if !s.cmd.ProcessState.Success() {
		return fmt.Errorf("kmsd exited with %v after SIGTERM", s.cmd.ProcessState)
	}
	return nil
}

func (s *server) log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}

// freeAddress returns a loopback address with a port that is free now. When
// KMS_TEST_PORTS is set to FIRST-LAST, as for the tests of cmd/kmsd, the port is the
// first free one of that range.
func freeAddress() (string, error) {
	candidates := []string{"127.0.0.1:0"}
	if ports := os.Getenv("KMS_TEST_PORTS"); ports != "" {
		var first, last int
		if _, err := fmt.Sscanf(ports, "%d-%d", &first, &last); err != nil || first > last {
			return "", fmt.Errorf("KMS_TEST_PORTS=%q: want FIRST-LAST, for example 23100-23199",
				ports)
		}
		candidates = candidates[:0]
		for port := first; port <= last; port++ {
			candidates = append(candidates, fmt.Sprintf("127.0.0.1:%d", port))
		}
	}

	var lastErr error
	for _, candidate := range candidates {
		ln, err := net.Listen("tcp", candidate)
		if err != nil {
			lastErr = err
			continue
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			return "", fmt.Errorf("finding a free port: %w", err)
		}
		return addr, nil
	}
	return "", fmt.Errorf("finding a free port: none of %d candidates is free: %w",
		len(candidates), lastErr)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24 and later)
	return hex.EncodeToString(b)
}

// credential is an access key pair and the project it belongs to.
type credential struct {
	accessKey string
	secretKey string
	projectID string
}

func (s *server) admin() credential {
	return credential{s.accessKey, s.secretKey, s.projectID}
}

// newClient returns the SDK's KMS v2 client for cred, pointed at kmsd with an endpoint
// override. The project id is set, so the SDK never calls IAM to look it up.
func newClient(t *testing.T, cred credential) *kms.KmsClient {
	t.Helper()
	creds, err := basic.NewCredentialsBuilder().
		WithAk(cred.accessKey).
		WithSk(cred.secretKey).
		WithProjectId(cred.projectID).
		SafeBuild()
	if err != nil {
		t.Fatalf("building SDK credentials: %v", err)
	}

	hc, err := kms.KmsClientBuilder().
		WithEndpoints([]string{kmsd.endpoint}).
		WithCredential(creds).
		WithHttpConfig(config.DefaultHttpConfig().WithTimeout(30 * time.Second)).
		SafeBuild()
	if err != nil {
		t.Fatalf("building the SDK client: %v", err)
	}
	return kms.NewKmsClient(hc)
}

// adminClient returns the SDK client of the bootstrap admin credential.
func adminClient(t *testing.T) *kms.KmsClient {
	t.Helper()
	return newClient(t, kmsd.admin())
}

// serviceError returns err as the SDK's error for an HTTP response with status 400 or more, and
// fails the test when it is another kind of error (transport, decoding).
func serviceError(t *testing.T, err error) *sdkerr.ServiceResponseError {
	t.Helper()
	if err == nil {
		t.Fatal("the call succeeded; expected an error response")
	}
	var se *sdkerr.ServiceResponseError
	if !errors.As(err, &se) {
		t.Fatalf("error is %T, not an SDK service error: %v", err, err)
	}
	return se
}

// rawRequest is a request signed with the SDK's own signer (core/auth/signer) and sent
// with net/http, for what the typed client cannot send: probes, the admin API and
// altered requests.
type rawRequest struct {
	method string
	path   string // with the project id filled in
	body   string // sent byte for byte; "" sends no body
	date   time.Time
}

// sign builds the request and signs it for cred the way the SDK's BasicCredentials
// does: X-Project-Id, User-Agent and X-Sdk-Date are signed, Content-Type is not.
func (r rawRequest) sign(cred credential) (*http.Request, error) {
	builder := request.NewHttpRequestBuilder().
		WithMethod(r.method).
		WithEndpoint(kmsd.endpoint).
		WithPath(r.path).
		AddHeaderParam("Content-Type", "application/json;charset=UTF-8").
		AddHeaderParam("User-Agent", "huaweicloud-usdk-go/3.0").
		AddHeaderParam("X-Project-Id", cred.projectID)
	if !r.date.IsZero() {
		builder.AddHeaderParam("X-Sdk-Date", r.date.UTC().Format(signer.BasicDateFormat))
	}
	if r.body != "" {
		builder.WithBody("body", r.body)
	}
	req := builder.Build()

	headers, err := signer.Signer{}.Sign(req, cred.accessKey, cred.secretKey)
	if err != nil {
		return nil, fmt.Errorf("signing %s %s: %w", r.method, r.path, err)
	}
	for k, v := range headers {
		req.AddHeaderParam(k, v)
	}

	httpReq, err := req.ConvertRequest()
	if err != nil {
		return nil, fmt.Errorf("converting %s %s: %w", r.method, r.path, err)
	}
	return httpReq, nil
}

// rawResponse is the status, body and request id of a response.
type rawResponse struct {
	status    int
	body      string
	requestID string
}

func send(t *testing.T, req *http.Request) rawResponse {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the response: %v", req.Method, req.URL.Path, err)
	}
	return rawResponse{status: res.StatusCode, body: string(b), requestID: res.Header.Get("X-Request-Id")}
}

// sendSigned signs r for cred with the current time and sends it.
func sendSigned(t *testing.T, cred credential, r rawRequest) rawResponse {
	t.Helper()
	req, err := r.sign(cred)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, req)
}

// kmsPath returns the path of a KMS v1.0 route in the admin's project.
func kmsPath(route string) string {
	return "/v1.0/" + kmsd.projectID + "/kms/" + route
}

var (
	probeMu      sync.Mutex
	probeResults = map[string]bool{}
)

// routeServed reports whether kmsd serves method on route (a path under
// /v1.0/{project_id}/kms/). It probes once per route with a signed request whose body is
// "{}" (none for GET): an unserved route returns 404 with KMS.0201, and a served one
// returns any other status, usually 400 for the empty body.
func routeServed(t *testing.T, method, route string) bool {
	t.Helper()
	key := method + " " + route

	probeMu.Lock()
	defer probeMu.Unlock()
	if served, ok := probeResults[key]; ok {
		return served
	}

	body := "{}"
	if method == http.MethodGet {
		body = ""
	}
	res := sendSigned(t, kmsd.admin(), rawRequest{method: method, path: kmsPath(route), body: body})
	served := !(res.status == http.StatusNotFound && strings.Contains(res.body, "KMS.0201"))
	probeResults[key] = served
	return served
}

// requireRoute skips the test when kmsd does not serve method on route. Tests of
// operations that other groups are still building call it first, so that they run as
// soon as kmsd serves the route.
func requireRoute(t *testing.T, method, route string) {
	t.Helper()
	if !routeServed(t, method, route) {
		t.Skipf("kmsd does not serve %s /v1.0/{project_id}/kms/%s yet (404 KMS.0201)", method, route)
	}
}

// createCredential creates an access key for a new user of the admin's project with
// role, through kmsd's own credential route (Huawei manages access keys in IAM, so the
// SDK has no call for it). The user id is userID.
func createCredential(t *testing.T, userID, role string) credential {
	t.Helper()
	body, err := json.Marshal(map[string]string{"user_id": userID, "role": role})
	if err != nil {
		t.Fatal(err)
	}
	res := sendSigned(t, kmsd.admin(), rawRequest{
		method: http.MethodPost,
		path:   "/v1.0/" + kmsd.projectID + "/kms-admin/credentials",
		body:   string(body) + "\n",
	})
	if res.status != http.StatusOK {
		t.Fatalf("creating a %s credential: status %d: %s", role, res.status, res.body)
	}

	var created struct {
		AccessKey string `json:"access_key"`
		SecretKey string `json:"secret_key"`
		ProjectID string `json:"project_id"`
	}
	// The response contains the secret key, so failure messages leave the body out.
	if err := json.Unmarshal([]byte(res.body), &created); err != nil {
		t.Fatalf("decoding the created credential: %v", err)
	}
	if created.AccessKey == "" || created.SecretKey == "" {
		t.Fatal("the created credential has no access_key or secret_key")
	}
	return credential{created.AccessKey, created.SecretKey, created.ProjectID}
}
