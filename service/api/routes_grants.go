package api

import "github.com/labstack/echo/v4"

// grantRoutes registers the grant operations.
func (s *Server) grantRoutes(g *echo.Group) {}
