package api

import (
	"context"
	"database/sql"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

// errAuditUnavailable is the error of a call whose audit record could not be made durable.
var errAuditUnavailable = &service.Error{Code: service.CodeUnavailable,
	Message: "the audit trail is unavailable; retry later"}

// errAuditStoreUnavailable is errAuditUnavailable when the store that holds the trail is
// unavailable, which /readyz reports as "store unavailable" too. That store is the
// database or, on the embedded default, the chain files beside it, so the message names
// both.
var errAuditStoreUnavailable = &service.Error{Code: service.CodeUnavailable,
	Message: "the audit record could not be written to the database or the audit chain " +
		"files, so the result of the call is withheld; retry later"}

// auditFailure returns the error of a call whose audit record failed with err.
func auditFailure(err error) *service.Error {
	if errors.Is(err, store.ErrUnavailable) {
		return errAuditStoreUnavailable
	}
	return errAuditUnavailable
}

// statusClientClosed is the status that the audit trail and the metrics record for a
// call that failed because its client hung up, the 499 that nginx logs for the same
// case. No client ever receives it.
const statusClientClosed = 499

// statusOf returns the HTTP status for a KMS error code. Huawei's clients expect 400 for
// almost every KMS code, including a missing key; the exceptions are listed here.
func statusOf(code string) int {
	switch code {
	case service.CodeInternal:
		return http.StatusInternalServerError
	case service.CodeUnavailable:
		return http.StatusServiceUnavailable
	case service.CodeTooLong:
		return http.StatusRequestEntityTooLarge
	case service.CodeInvalidProject, service.CodeKeyForbidden, service.CodeRoleForbidden:
		return http.StatusForbidden
	default:
		return http.StatusBadRequest
	}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"error_code"`
	Message string `json:"error_msg"`
}

// gatewayErrorBody is the flat shape of Huawei's API gateway, used for authentication
// failures; the SDK's error parser reads both shapes.
type gatewayErrorBody struct {
	Code      string `json:"error_code"`
	Message   string `json:"error_msg"`
	RequestID string `json:"request_id"`
}

// handleError is the one place that turns errors into HTTP responses.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	st := stateOf(c)
	// database/sql reports a transaction that the cancellation rolled back during its
	// commit as sql.ErrTxDone, without context.Canceled.
	cancelled := errors.Is(err, context.Canceled) || errors.Is(err, sql.ErrTxDone)
	if cancelled && clientGone(c) {
		s.closeForGoneClient(c, st, err)
		return
	}

	var authErr *authFailure
	if errors.As(err, &authErr) {
		s.answerAuthFailure(c, st, authErr)
		return
	}

	var status int
	var detail errorDetail
	var he *echo.HTTPError
	var se *service.Error
	switch {
	case errors.As(err, &se):
		status, detail = statusOf(se.Code), errorDetail{se.Code, se.Message}
	case errors.As(err, &he):
		status, detail = httpErrorDetail(he)
	default:
		status, detail = http.StatusInternalServerError,
			errorDetail{service.CodeInternal, "internal error"}
	}
	if status >= http.StatusInternalServerError && timedOut(c) {
		// A transaction that the deadline rolled back fails its commit with
		// sql.ErrTxDone alone, so only the context shows why the call failed.
		status, detail = http.StatusServiceUnavailable, errorDetail{service.CodeUnavailable,
			"the call did not finish within the request timeout; retry later"}
	}

	if st.op == "" {
		st.op = s.operationOf(c) // rejected before its handler ran
	}
	s.logFailure(st, status, detail.Code, err)
	if st.op != "" && !st.audited {
		if st.principal.AccessKey == "" && st.principal.ProjectID == "" {
			nameUnauthenticatedCaller(c, st, nil) // rejected before authentication
		}
		if aerr := s.record(c, st, status, detail.Code); aerr != nil {
			status, detail = http.StatusServiceUnavailable,
				errorDetail{service.CodeUnavailable, auditFailure(aerr).Message}
			s.logFailure(st, status, detail.Code, aerr)
		}
	}

	if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if err := c.JSON(status, errorBody{detail}); err != nil {
		s.log.Warn("writing an error response failed", "request_id", st.id, "error", err)
	}
}

// closeForGoneClient ends a call that failed because its client hung up, which made
// net/http cancel the request's context while the store or the token served it. It is
// no internal error: the call is logged at INFO, audited with statusClientClosed, counted
// under that status, and ends with the connection closed.
func (s *Server) closeForGoneClient(c echo.Context, st *requestState, err error) {
	if st.op == "" {
		st.op = s.operationOf(c)
	}
	// Log the store's or token's error rather than the KMS.0101 "internal error" that
	// the service wrapped it in.
	cause := err
	var se *service.Error
	if errors.As(err, &se) && se.Err != nil {
		cause = se.Err
	}
	s.log.Info("client disconnected before the call finished", "request_id", st.id,
		"operation", st.op, "error", cause)

	if st.op != "" && !st.audited {
		if aerr := s.record(c, st, statusClientClosed, ""); aerr != nil {
			s.logFailure(st, http.StatusServiceUnavailable, service.CodeUnavailable, aerr)
		}
	}
	st.clientClosed = true
	c.Response().Status = statusClientClosed
}

func (s *Server) logFailure(st *requestState, status int, code string, err error) {
	attrs := []any{"request_id", st.id, "operation", st.op, "status", status, "error_code", code}
	if st.keyID != "" {
		attrs = append(attrs, "key_id", recordedKeyID(st.keyID))
	}
	if status >= 500 {
		if !s.errorLog.allow() {
			return
		}
		// Internal causes go to the log only, never to the client.
		s.log.Error("request failed", append(attrs, "error", err)...)
		return
	}
	s.log.Debug("request rejected", attrs...)
}

// httpErrorDetail maps echo's own errors (unknown route, wrong method, body limit).
func httpErrorDetail(he *echo.HTTPError) (int, errorDetail) {
	switch he.Code {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return he.Code, errorDetail{service.CodeInvalidURL, "the request URL or method is invalid"}
	case http.StatusRequestEntityTooLarge:
		return he.Code, errorDetail{service.CodeTooLong, "the request body is too large"}
	case http.StatusRequestTimeout:
		return he.Code, errorDetail{service.CodeInvalidJSON,
			"the request body did not arrive before the server's read timeout; send it again"}
	default:
		if he.Code >= 400 && he.Code < 500 {
			return he.Code, errorDetail{service.CodeInvalidParameter, http.StatusText(he.Code)}
		}
		return http.StatusInternalServerError, errorDetail{service.CodeInternal, "internal error"}
	}
}

// nameUnauthenticatedCaller sets the access key and the project of st's principal as
// the request sent them, unauthenticated, so that the audit record of a call rejected
// before or by authentication can be traced to a key or a project. reason is the
// authentication failure, if any. An Access value that can be a secret is recorded as
// auth.RedactedAccessKey (see failedAccessKey).
func nameUnauthenticatedCaller(c echo.Context, st *requestState, reason error) {
	st.principal.AccessKey = cutRecorded(failedAccessKey(c.Request(), reason),
		maxRecordedIDLength)
	st.principal.ProjectID = cutRecorded(c.Param("project_id"), maxRecordedIDLength)
}

// authFailure is an authentication failure, answered 401 in the gateway shape.
type authFailure struct{ err error }

func (a *authFailure) Error() string { return "authentication failed: " + a.err.Error() }
func (a *authFailure) Unwrap() error { return a.err }

func (s *Server) answerAuthFailure(c echo.Context, st *requestState, a *authFailure) {
	s.authFailures.write(c, st, a.err)
	if st.op == "" {
		st.op = s.operationOf(c)
	}
	nameUnauthenticatedCaller(c, st, a.err)
	if err := s.record(c, st, http.StatusUnauthorized, "APIGW.0301"); err != nil {
		// Nothing is released either way, but a call that could not be recorded fails
		// with 503 like every other.
		s.handleError(err, c)
		return
	}

	body := gatewayErrorBody{Code: "APIGW.0301", Message: auth.Message(a.err), RequestID: st.id}
	if err := c.JSON(http.StatusUnauthorized, body); err != nil {
		s.log.Warn("writing an error response failed", "request_id", st.id, "error", err)
	}
}

// timedOut reports whether the request's context passed its deadline
// (Config.RequestTimeout).
func timedOut(c echo.Context) bool {
	return errors.Is(c.Request().Context().Err(), context.DeadlineExceeded)
}
