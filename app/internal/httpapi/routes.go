package httpapi

import (
	"context"
	"net/http"
	"net/http/pprof"

	"github.com/warmpath/warmpath/app/internal/apperr"

	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// routes is every public route, in one place (the admin routes follow). The API routes come first:
// Fiber matches in registration order, so the frontend's routes cost an API
// request nothing. The frontend's routes are not metered (no phase metrics,
// no [PERF] line) but get X-Request-Id, Server-Timing and CORS from observe
// like every response.
func (s *Server) routes(app *fiber.App) {
	app.Use(s.observe)
	app.Options("/*", s.preflight)

	app.Post("/api/hasNotEngine-ultra-fast", s.metered, postJSON(s, s.handleQuery))
	app.Post("/api/items", s.metered, postJSON(s, s.handleItems))
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

// routes is every admin route (the admin listener, net/http), in one place.
func (a *admin) routes(mux *http.ServeMux) {
	if a.cfg.MetricsHandler != nil {
		mux.Handle("GET /metrics", a.cfg.MetricsHandler)
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /admin/users", a.createUser)
	mux.HandleFunc("POST /admin/users/{id}/tokens", a.createToken)
	mux.HandleFunc("DELETE /admin/tokens/{id}", a.revokeToken)
	mux.HandleFunc("POST /admin/sync", a.triggerSync)
	mux.HandleFunc("GET /admin/sync", a.syncStatus)
	mux.HandleFunc("GET /admin/warmup", a.warmupStatus)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.error(w, apperr.New(apperr.NotFound, "no such admin route: %s %s", r.Method, r.URL.Path))
	})
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
