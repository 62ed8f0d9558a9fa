package api

import "github.com/labstack/echo/v4"

// tagRoutes registers the tag operations.
func (s *Server) tagRoutes(g *echo.Group) {}
