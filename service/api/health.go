package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
)

// Readiness categories. Config.Ready wraps its error with one of them, and /readyz
// returns the category alone, because the cause (a module path, a token label, a
// database address) is for the log, not for anyone who can reach the port.
var (
	// ErrStarting means start-up has not finished, for example the first admin
	// credential is not created yet.
	ErrStarting = errors.New("starting")
	// ErrTokenNotReady means the PKCS#11 token cannot be used.
	ErrTokenNotReady = errors.New("token unavailable")
	// ErrTokenBehind means the token lacks key versions that the store records: it is an
	// older copy of the live token (service.ErrTokenBehindStore).
	ErrTokenBehind = errors.New("token older than the store")
	// ErrStoreNotReady means the metadata store cannot be used: it does not respond, or
	// it does not commit a write.
	ErrStoreNotReady = errors.New("store unavailable")
	// ErrAuditNotReady means the audit trail failed to write records, so every call
	// would get 503.
	ErrAuditNotReady = errors.New("audit trail unavailable")
)

// readyTimeout bounds one readiness check, below the usual 10 s probe timeout of
// Kubernetes and load balancers.
const readyTimeout = 5 * time.Second

// readiness remembers the last /readyz result, so that a change is logged once.
type readiness struct {
	mu     sync.Mutex
	known  bool
	reason string
}

// errStarting is the error of a call that arrives before start-up has finished.
var errStarting = &service.Error{Code: service.CodeUnavailable,
	Message: "the service is starting; retry later"}

// rejectWhileStarting returns 503 until Config.Started reports true.
func (s *Server) rejectWhileStarting(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.cfg.Started() {
			return errStarting
		}
		return next(c)
	}
}

// healthz responds 200 while the process serves HTTP.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz returns 200 when Config.Ready reports the token and the store usable, and 503
// with a reason category (see readinessReason) otherwise.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()

	err := s.cfg.Ready(ctx)
	reason := readinessReason(err)
	s.logReadiness(reason, err)

	if err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable,
			map[string]string{"status": "not ready", "reason": reason})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// readinessReason returns the category of err: one of the Err*NotReady texts,
// "starting", "timed out" when the check ran out of time, "not ready" for any other
// error, and "" for nil.
func readinessReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrStarting):
		return ErrStarting.Error()
	case errors.Is(err, ErrTokenNotReady):
		return ErrTokenNotReady.Error()
	case errors.Is(err, ErrTokenBehind):
		return ErrTokenBehind.Error()
	case errors.Is(err, ErrStoreNotReady):
		return ErrStoreNotReady.Error()
	case errors.Is(err, ErrAuditNotReady):
		return ErrAuditNotReady.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	default:
		return "not ready"
	}
}

// logReadiness logs the readiness result when its category differs from the last one.
func (s *Server) logReadiness(reason string, err error) {
	s.ready.mu.Lock()
	changed := !s.ready.known || reason != s.ready.reason
	s.ready.known, s.ready.reason = true, reason
	s.ready.mu.Unlock()

	if !changed {
		return
	}
	if err != nil {
		s.log.Warn("not ready", "reason", reason, "error", err)
		return
	}
	s.log.Info("ready")
}

type versionLink struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

type version struct {
	ID         string        `json:"id"`
	Links      []versionLink `json:"links"`
	Version    string        `json:"version"`
	Status     string        `json:"status"`
	Updated    string        `json:"updated"`
	MinVersion string        `json:"min_version"`
}

// currentVersion returns the one API version. Its link is a relative reference, which
// clients resolve against the URL they called. An absolute link would repeat the
// request's Host header, which any client sets, in an unauthenticated response that a
// shared cache could then serve to others.
func (s *Server) currentVersion() version {
	return version{
		ID:      "v1.0",
		Links:   []versionLink{{Href: "/v1.0/", Rel: "self"}},
		Status:  "CURRENT",
		Updated: "2018-09-30T00:00:00Z",
	}
}

// listVersions serves GET / with every API version.
func (s *Server) listVersions(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string][]version{"versions": {s.currentVersion()}})
}

// showVersion serves GET /v1.0 with that version.
func (s *Server) showVersion(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]version{"version": s.currentVersion()})
}
