package api

import "github.com/labstack/echo/v4"

// lifecycleRoutes registers the lifecycle operations.
func (s *Server) lifecycleRoutes(g *echo.Group) {}
