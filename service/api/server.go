// Package api is the HTTP layer: an echo server that speaks the Huawei Cloud KMS REST
// API v1.0 under /v1.0/{project_id}/kms/. Handlers bind and validate the JSON body,
// call the service, and map the result; errors become KMS error bodies in one place
// (errors.go).
//
// Every /v1.0/ route is authenticated with the AK/SK signature (service/auth) over the
// raw body bytes, so the body is read once, bounded by Config.MaxBodyBytes, before any
// handler runs.
package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
)

// Config holds the settings of a Server. The zero value of each field selects the
// default named in its comment.
type Config struct {
	// MaxBodyBytes bounds a request body. Default 64 KiB; larger bodies get 413.
	MaxBodyBytes int64
	// RequestTimeout, when positive, is the deadline of each request's context. Store and
	// token calls that honour their context give up after it, so a database that hangs
	// costs the caller 503 KMS.0102 instead of an unbounded wait. The audit record of the
	// call is written after it all the same. Zero: no deadline.
	RequestTimeout time.Duration
	// Audit records every call; default audit.Discard.
	Audit audit.Recorder
	// Credentials serves the credential management routes; nil disables them.
	Credentials *auth.Credentials
	// OperatorProjectID is the project whose admins manage the credentials of every
	// project: kmsd passes the project of its bootstrap admin credential. Admins of
	// other projects manage their own project's credentials only. Empty confines every
	// admin to its own project.
	OperatorProjectID string
	// Ready reports whether the token and the store are usable, for /readyz. Wrap its
	// error with ErrStarting, ErrTokenNotReady or ErrStoreNotReady: /readyz reports only
	// that category. Default: always ready.
	Ready func(ctx context.Context) error
	// MetricsElsewhere keeps GET /metrics off this server while Metrics still counts
	// requests, for metrics served on their own listener or not at all.
	MetricsElsewhere bool
	// Metrics, when set, counts and times every request and serves GET /metrics; see
	// NewMetrics. Default: no metrics.
	Metrics *Metrics
	// Started reports whether start-up has finished. Until it does, every /v1.0/ call
	// gets 503 with a retryable KMS code, because credentials may not exist yet and
	// 401 would be misleading. Default: always started.
	Started func() bool
	// AuditSource serves the admin audit routes (kmsctl audit export and tail); nil
	// disables them. AuditPublicKey returns the key they serve for verification.
	AuditSource    audit.Source
	AuditPublicKey func(ctx context.Context) (*ecdsa.PublicKey, error)
	// TrustedProxies lists the networks of the reverse proxies in front of the server.
	// For a call whose connection comes from one of them, the source address in logs and
	// audit records is the last address of X-Forwarded-For that is not in these
	// networks. Empty: the connection's address, and forwarding headers are ignored,
	// because any client can send them.
	TrustedProxies []*net.IPNet
}

// Server is the HTTP API. It is safe for concurrent use once built.
type Server struct {
	echo     *echo.Echo
	svc      *service.Service
	verifier *auth.Verifier
	log      *slog.Logger
	cfg      Config
	ready    readiness

	// routeOps maps "METHOD /path" of each operation route to its operation name, for
	// calls rejected before the handler runs. Written only while New registers routes.
	routeOps  map[string]string
	pendingOp string

	// errorLog caps the "request failed" lines of 5xx responses.
	errorLog *summaryLimiter
	// authFailures writes the "authentication failed" lines of 401 responses, capped.
	authFailures *authFailureLog
	// operatorAdmins serialises the disabling and deleting of operator-project admin
	// credentials in this process (checkNotLastOperatorAdmin).
	operatorAdmins sync.Mutex
}

// New builds the echo server and registers every route.
func New(svc *service.Service, verifier *auth.Verifier, log *slog.Logger, cfg Config) *Server {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard{}
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	if cfg.Started == nil {
		cfg.Started = func() bool { return true }
	}

	e := echo.New()
	e.HideBanner = true
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	e.HidePort = true
	s := &Server{echo: e, svc: svc, verifier: verifier, log: log, cfg: cfg,
		errorLog: newErrorLimiter(log), authFailures: newAuthFailureLog(log)}
	e.HTTPErrorHandler = s.handleError

	s.routeOps = map[string]string{}
	e.OnAddRouteHandler = s.nameRoute
	e.Use(s.measure)
	s.routes()
	return s
}

// Handler returns the server as an http.Handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// serveHTTP gives every request an id (echoed in X-Request-Id) and a state, then lets
// echo serve it. The state travels in the request context rather than as an echo
// middleware and context value, which echo would allocate anew for every request.
//
// A call whose client hung up gets no response: the connection is closed instead, so
// that a client that only shut down its sending side reads no success that did not
// happen. net/http would otherwise send 200 with an empty body.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}

	st := newRequestState(ctx)
	w.Header().Set("X-Request-Id", st.id)
	s.echo.ServeHTTP(w, r.WithContext(&st.ctx))
	if st.clientClosed {
		panic(http.ErrAbortHandler) // closes the connection and logs nothing
	}
}

// ipExtractor returns how echo's RealIP finds a call's source address: the connection's
// address, or with trusted proxies the client address that they add to X-Forwarded-For.
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	// Only the listed networks are trusted: echo would otherwise also trust every
	// loopback, link-local and private address.
	options := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false),
		echo.TrustPrivateNet(false)}
	for _, network := range trusted {
		options = append(options, echo.TrustIPRange(network))
	}
	return echo.ExtractIPFromXFFHeader(options...)
}

func (s *Server) routes() {
	e := s.echo
	e.GET("/healthz", s.healthz)
	e.HEAD("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.HEAD("/readyz", s.readyz)
	s.metricsRoutes()
	e.GET("/", s.listVersions)
	e.GET("/v1.0", s.showVersion)
	e.GET("/v1.0/", s.showVersion)
	s.projectRoutes()

	kms := s.group("/v1.0/:project_id/kms", s.rejectWhileStarting, s.readBody, s.authenticate)
	kms.POST("/create-key", s.op("create-key", s.createKey))
	kms.POST("/describe-key", s.op("describe-key", s.describeKey))
	kms.POST("/list-keys", s.op("list-keys", s.listKeys))
	kms.POST("/create-datakey", s.op("create-datakey", s.createDataKey))
	kms.POST("/create-datakey-without-plaintext",
		s.op("create-datakey-without-plaintext", s.createDataKeyWithoutPlaintext))
	kms.POST("/encrypt-datakey", s.op("encrypt-datakey", s.encryptDataKey))
	kms.POST("/decrypt-datakey", s.op("decrypt-datakey", s.decryptDataKey))
	s.lifecycleRoutes(kms)
	s.dataRoutes(kms)
	s.rotationRoutes(kms)
	s.aliasRoutes(kms)
	s.tagRoutes(kms)
	s.grantRoutes(kms)

	admin := s.group("/v1.0/:project_id/kms-admin", s.rejectWhileStarting, s.readBody,
		s.authenticate)
	admin.POST("/credentials", s.op("create-credential", s.createCredential))
	admin.GET("/credentials", s.op("list-credentials", s.listCredentials))
	admin.POST("/credentials/:access_key/disable", s.op("disable-credential", s.changeCredential("disable")))
	admin.POST("/credentials/:access_key/enable", s.op("enable-credential", s.changeCredential("enable")))
	admin.DELETE("/credentials/:access_key", s.op("delete-credential", s.changeCredential("delete")))
	s.auditRoutes(admin)
}

// requestState is the state of one request that the middleware fills in, shared with
// handlers and the error handler through the request context.
//
// States are not pooled, because the context in a state outlives the request: database/sql,
// for one, watches the context of a query from a goroutine that may run after the
// request has ended.
type requestState struct {
	id        string
	start     time.Time
	body      []byte
	principal auth.Principal
	op        string
	keyID     string
	version   uint32
	sequence  string
	audited   bool
	// clientClosed is set when the call ended because its client hung up: serveHTTP then
	// closes the connection without a response.
	clientClosed bool
	// authz collects the grants that allowed the call, for the audit record.
	authz service.Authorization
	// out is the response body that an opHandler encoded itself (see encodedBody), in a
	// pooled buffer from responseBuffer.
	out []byte
	// outBuffer is the pooled buffer that out was taken from, nil when out is not set.
	outBuffer *[]byte
	// ctx is the request context: the server's context with this state and authz as
	// values.
	ctx stateContext
}

// newRequestState returns a state with a new request id, whose context is parent with
// the state added.
func newRequestState(parent context.Context) *requestState {
	st := &requestState{id: newRequestID(), start: time.Now()}
	st.ctx = stateContext{Context: parent, state: st}
	return st
}

// responseBuffers holds the buffers of responses that handlers encode themselves.
var responseBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// maxPooledResponseBuffer bounds the capacity of a buffer that goes back to the pool.
const maxPooledResponseBuffer = 4 << 10

// responseBuffer returns an empty pooled buffer for st.out.
func (st *requestState) responseBuffer() []byte {
	st.outBuffer = responseBuffers.Get().(*[]byte)
	return (*st.outBuffer)[:0]
}

// releaseResponseBuffer clears st.out, which may contain a data key, and returns its
// buffer to the pool.
func (st *requestState) releaseResponseBuffer() {
	out, buffer := st.out, st.outBuffer
	st.out, st.outBuffer = nil, nil
	clear(out)
	if buffer == nil {
		return
	}
	if pooled := (*buffer)[:cap(*buffer)]; cap(pooled) != cap(out) {
		// The encoder outgrew the pooled buffer, which keeps the first part of the body.
		clear(pooled)
	}
	if cap(out) > maxPooledResponseBuffer {
		return
	}
	*buffer = out[:0]
	responseBuffers.Put(buffer)
}

// stateKey is the context key of the *requestState.
type stateKey struct{}

// stateContext is the context of a request. Its Value returns the request's state for
// stateKey and its service.Authorization for the service's key, which spares the two
// allocations of context.WithValue and service.WithAuthorization per request.
type stateContext struct {
	context.Context
	state *requestState
}

func (c *stateContext) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return c.state
	}
	if service.IsAuthorizationKey(key) {
		return &c.state.authz
	}
	return c.Context.Value(key)
}

// stateOf returns the state of the request of c. A request that did not pass serveHTTP
// gets a new state.
func stateOf(c echo.Context) *requestState {
	r := c.Request()
	st, _ := r.Context().Value(stateKey{}).(*requestState)
	if st == nil {
		st = &requestState{id: newRequestID(), start: time.Now()}
		st.ctx = stateContext{Context: r.Context(), state: st}
		c.SetRequest(r.WithContext(&st.ctx))
	}
	return st
}

// group returns a route group under prefix whose routes run middleware, composed once
// per route. echo's own group middleware is composed again on every request, which
// allocates one closure per middleware and request.
func (s *Server) group(prefix string, middleware ...echo.MiddlewareFunc) *routeGroup {
	g := &routeGroup{group: s.echo.Group(prefix), middleware: middleware}
	// As echo's Group.Use does, so that an unknown URL under prefix passes the
	// middleware (and its signature check) before it gets 404.
	g.group.RouteNotFound("", g.wrap(echo.NotFoundHandler))
	g.group.RouteNotFound("/*", g.wrap(echo.NotFoundHandler))
	return g
}

// routeGroup registers routes under a prefix with the middleware of the group.
type routeGroup struct {
	group      *echo.Group
	middleware []echo.MiddlewareFunc
}

// wrap returns h behind the group's middleware, the first one outermost as in echo.
func (g *routeGroup) wrap(h echo.HandlerFunc) echo.HandlerFunc {
	for i := len(g.middleware) - 1; i >= 0; i-- {
		h = g.middleware[i](h)
	}
	return h
}

// GET registers a GET route, as echo.Group.GET does.
func (g *routeGroup) GET(path string, h echo.HandlerFunc) { g.group.GET(path, g.wrap(h)) }

// POST registers a POST route, as echo.Group.POST does.
func (g *routeGroup) POST(path string, h echo.HandlerFunc) { g.group.POST(path, g.wrap(h)) }

// DELETE registers a DELETE route, as echo.Group.DELETE does.
func (g *routeGroup) DELETE(path string, h echo.HandlerFunc) { g.group.DELETE(path, g.wrap(h)) }

// NewRequestID returns a random request id, 32 lower-case hex digits, as every response
// carries in X-Request-Id.
func NewRequestID() string { return newRequestID() }

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // since Go 1.24 crypto/rand.Read returns no error (it ends the program instead)
	return hex.EncodeToString(b[:])
}

// opHandler handles one API operation. It returns the response body, or nil for 204,
// and must not write to the response itself: the caller writes it only after the
// audit record is durable.
type opHandler func(c echo.Context, st *requestState) (any, error)

// noContent is returned by an opHandler whose response is 204 No Content.
type noContent struct{}

// encodedBody is returned by an opHandler that encoded its JSON response into st.out,
// a buffer from responseBuffer. It has no fields, so returning it as an any does not
// allocate.
type encodedBody struct{}

// op returns the handler of operation name: it runs h, records the call, then writes
// the answer. It also hands name to nameRoute, which maps the next route added to name.
func (s *Server) op(name string, h opHandler) echo.HandlerFunc {
	s.pendingOp = name
	return func(c echo.Context) error {
		st := stateOf(c) // its context carries st.authz for the service
		st.op = name
		if err := checkQueryRepeats(c.Request()); err != nil {
			return err
		}

		resp, err := h(c, st)
		if st.out != nil {
			// Once the response is written (the writer copies it) or has failed.
			defer st.releaseResponseBuffer()
		}
		if err != nil {
			return err // handleError records and answers
		}

		if err := s.record(c, st, http.StatusOK, ""); err != nil {
			return err
		}
		switch r := resp.(type) {
		case noContent:
			return c.NoContent(http.StatusNoContent)
		case encodedBody:
			return c.JSONBlob(http.StatusOK, st.out)
		case jsonAppender:
			return c.JSONBlob(http.StatusOK, r.appendJSON(make([]byte, 0, 512)))
		default:
			return c.JSON(http.StatusOK, resp)
		}
	}
}

// checkQueryRepeats rejects a query string that names a parameter more than once. No
// operation takes a repeated parameter, and handlers read the first value only, so a
// proxy or log that reads another value would see another request than the one served.
func checkQueryRepeats(r *http.Request) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	for name, values := range r.URL.Query() {
		if len(values) > 1 {
			return service.Errorf(service.CodeInvalidParameter,
				"query parameter %q appears %d times", cutRecorded(name, maxRecordedIDLength),
				len(values))
		}
	}
	return nil
}

// maxRecordedKeyIDLength is the length of the longest key reference that can be valid.
// A longer key_id is invalid whatever it contains, so audit records and log lines keep
// only this much of it (recordedKeyID). Without the cut, any signed client could write up
// to the body limit into the trail on every call.
const maxRecordedKeyIDLength = service.MaxKeyRefLength

// redactedKeyID is the placeholder that audit records and logs show for a key_id that
// can be a secret.
const redactedKeyID = service.Redacted

// recordedKeyID returns how audit records and logs show id: redactedKeyID when id can be
// a data key, a ciphertext or a secret key sent by mistake (service.MaybeSecret), else
// id, cut as cutRecorded does past maxRecordedKeyIDLength.
func recordedKeyID(id string) string {
	if service.MaybeSecret(id) {
		return redactedKeyID
	}
	return cutRecorded(id, maxRecordedKeyIDLength)
}

// maxRecordedIDLength is the length of the longest valid access key, project id or user
// id (1 to 64 characters), to which audit records cut such values as sent.
const maxRecordedIDLength = 64

// cutRecorded returns s, or for s longer than max bytes its first bytes up to max at a
// UTF-8 boundary followed by its length in bytes.
func cutRecorded(s string, max int) string {
	if len(s) <= max {
		return s
	}

	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}

// record writes the audit record of the call. A failure becomes a 503 error, so that
// nothing is released without a durable record.
func (s *Server) record(c echo.Context, st *requestState, status int, code string) error {
	st.audited = true
	r := audit.Record{
		Time:       st.start.UTC(),
		RequestID:  st.id,
		AccessKey:  st.principal.AccessKey,
		UserID:     st.principal.UserID,
		ProjectID:  st.principal.ProjectID,
		SourceIP:   c.RealIP(),
		Operation:  st.op,
		KeyID:      recordedKeyID(st.keyID),
		KeyVersion: st.version,
		GrantID:    strings.Join(st.authz.GrantIDs, ","),
		Status:     status,
		ErrorCode:  code,
		Sequence:   st.sequence,
	}
	// The record is written even when the client has hung up: the call's work is done,
	// so the trail must show it. The trail bounds its own wait.
	ctx := context.WithoutCancel(c.Request().Context())
	if err := s.cfg.Audit.Record(ctx, r); err != nil {
		// The caller logs the 503 as a failed request, within the error log's budget.
		return fmt.Errorf("%w: %w", auditFailure(err), err)
	}
	return nil
}

// clientGone reports whether the client of c closed the connection: net/http cancels
// the request context then.
func clientGone(c echo.Context) bool {
	return errors.Is(c.Request().Context().Err(), context.Canceled)
}
