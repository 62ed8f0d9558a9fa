package api

import "github.com/labstack/echo/v4"

// rotationRoutes registers the rotation operations.
func (s *Server) rotationRoutes(g *echo.Group) {}
