package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// healthz answers 200 while the process serves HTTP.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when the token and the store are usable, 503 otherwise.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
	defer cancel()

	if err := s.cfg.Ready(ctx); err != nil {
		c.Response().Header().Set("Retry-After", "1")
		return c.JSON(http.StatusServiceUnavailable,
			map[string]string{"status": "not ready", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
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

func (s *Server) currentVersion(c echo.Context) version {
	return version{
		ID:      "v1.0",
		Links:   []versionLink{{Href: c.Scheme() + "://" + c.Request().Host + "/v1.0/", Rel: "self"}},
		Status:  "CURRENT",
		Updated: "2018-09-30T00:00:00Z",
	}
}

// listVersions answers GET / with every API version.
func (s *Server) listVersions(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string][]version{"versions": {s.currentVersion(c)}})
}

// showVersion answers GET /v1.0 with that version.
func (s *Server) showVersion(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]version{"version": s.currentVersion(c)})
}
