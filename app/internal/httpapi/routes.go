package httpapi

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// routes is every public route, in one place. The API routes come first:
// Fiber matches in registration order, so the frontend's routes cost an API
// request nothing. The frontend's routes are not metered (no phase metrics,
// no [PERF] line) but get X-Request-Id, Server-Timing and CORS from observe
// like every response.
func (s *Server) routes(app *fiber.App) {
	app.Use(s.observe)
	app.Options("/*", s.preflight)

	app.Post("/api/hasNotEngine-ultra-fast", s.metered, s.handleQuery)
	app.Post("/api/items", s.metered, s.handleItems)
	app.Post("/api/user/warmup", s.metered, s.handleWarmupPost)
	app.Get("/api/user/warmup", s.metered, s.handleWarmupGet)

	app.Get("/livez", s.handleLivez)
	app.Get("/readyz", s.handleReadyz)

	if s.assets != nil {
		app.Get("/openapi.json", s.handleOpenAPI)
		app.Get("/", s.handleIndex)
		app.Get("/assets/:file", s.handleAsset)
	}
	if s.cfg.DemoUsers != nil {
		app.Get("/demo/users", s.handleDemoUsers)
	}

	app.Use(s.notFound)
}

// metered marks API routes: they get phase metrics and a [PERF] line, and
// their CPU samples carry the pprof label route=<template> (and so do
// pyroscope's), so profiles split by endpoint.
func (s *Server) metered(c *fiber.Ctx) error {
	state(c).perf = true
	var err error
	telemetry.WithRouteLabels(c.UserContext(), c.Route().Path, func(ctx context.Context) {
		c.SetUserContext(ctx)
		err = c.Next()
	})
	return err
}
