package api

import "github.com/labstack/echo/v4"

// dataRoutes registers encrypt-data, decrypt-data, gen-random and re-encrypt.
func (s *Server) dataRoutes(g *echo.Group) {}
