package api

import "github.com/labstack/echo/v4"

// aliasRoutes registers the alias API operations.
func (s *Server) aliasRoutes(g *echo.Group) {}
