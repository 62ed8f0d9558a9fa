package api

import (
	"errors"
	"io"
	"runtime"

	"github.com/labstack/echo/v4"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
)

var errBodyTooLarge = &service.Error{Code: service.CodeTooLong,
	Message: "the request body is larger than the limit"}

// readBody reads the whole body once, up to MaxBodyBytes, because the signature covers
// the raw bytes and handlers decode from the same bytes. A larger body is rejected
// with 413 as soon as the limit is passed, without reading the rest.
func (s *Server) readBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.cfg.MaxBodyBytes {
			c.Response().Header().Set("Connection", "close")
			return errBodyTooLarge
		}

		body, err := readAtMost(r.Body, r.ContentLength, s.cfg.MaxBodyBytes+1)
		if err != nil {
			return &service.Error{Code: service.CodeInvalidJSON,
				Message: "the request body could not be read", Err: err}
		}
		if int64(len(body)) > s.cfg.MaxBodyBytes {
			c.Response().Header().Set("Connection", "close")
			return errBodyTooLarge
		}

		stateOf(c).body = body

		// Reading the body to its end made net/http start a goroutine that reads the
		// connection to notice a hang-up, queued to run next on this processor. Left
		// there, it is taken by another processor as soon as this goroutine enters its
		// token call. Yielding runs it here first: kmsbench --against measured 1 to 8%
		// more decrypt-datakey requests per second at 64 connections, 4% on average over
		// five runs, and a p99 lower by a fifth.
		runtime.Gosched()
		return next(c)
	}
}

// readAtMost reads r to its end, or to limit bytes when it is longer, as
// io.ReadAll(io.LimitReader(r, limit)) does. A size hint of 0 to limit (the request's
// Content-Length) sizes the buffer, so a body of that length is read without growing it
// and without the allocation of an io.LimitedReader.
func readAtMost(r io.Reader, hint, limit int64) ([]byte, error) {
	size := int64(512)
	if hint >= 0 && hint < limit {
		size = hint + 1 // one byte more, so that the read that returns EOF needs no growth
	}
	b := make([]byte, 0, min(size, limit))
	for {
		n, err := r.Read(b[len(b):min(int64(cap(b)), limit)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil || int64(len(b)) >= limit {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append choose the growth
		}
	}
}

// authenticate verifies the AK/SK signature and then that the caller's project is the
// one in the URL and in X-Project-Id, when sent.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		st := stateOf(c)
		r := c.Request()

		p, err := s.verifier.Verify(r.Context(), r, st.body)
		if err != nil {
			return verifyError(err)
		}
		st.principal = p

		if c.Param("project_id") != p.ProjectID {
			return service.Errorf(service.CodeInvalidProject,
				"the project id in the URL is not the project of the access key")
		}
		if h := r.Header.Get("X-Project-Id"); h != "" && h != p.ProjectID {
			return service.Errorf(service.CodeInvalidProject,
				"X-Project-Id is not the project of the access key")
		}
		return next(c)
	}
}

// verifyError separates authentication failures (401) from failures of the credential
// store or the token behind the verifier, which are the server's fault.
func verifyError(err error) error {
	for _, sentinel := range []error{auth.ErrMalformedHeader, auth.ErrInvalidDate,
		auth.ErrDateExpired, auth.ErrUnknownAccessKey, auth.ErrDisabledAccessKey,
		auth.ErrSignatureMismatch, auth.ErrLocked} {
		if errors.Is(err, sentinel) {
			return &authFailure{err: err}
		}
	}
	if errors.Is(err, hsm.ErrUnavailable) {
		// Unsealing a credential that is not cached needs the token.
		return &service.Error{Code: service.CodeUnavailable,
			Message: "the key token is unavailable; retry later", Err: err}
	}
	if errors.Is(err, store.ErrUnavailable) {
		return &service.Error{Code: service.CodeUnavailable,
			Message: "the credential store is unavailable; retry later", Err: err}
	}
	return &service.Error{Code: service.CodeInternal, Message: "internal error", Err: err}
}
