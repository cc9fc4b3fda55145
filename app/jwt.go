package main

import (
	"context"
	"net/http"
	"time"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// newJWT wires JWT bearer tokens when AUTH_JWKS_URL is set (nil otherwise):
// the verifier, and its background JWKS refresher, stopped by close.
func newJWT(a *application, db dbTimed, tel *telemetry.Telemetry) *auth.JWTVerifier {
	cfg := a.cfg
	if !cfg.JWTEnabled() {
		return nil
	}
	v := auth.NewJWTVerifier(auth.JWTConfig{
		JWKSURL: cfg.AuthJWKSURL, Issuer: cfg.AuthJWTIssuer, Audience: cfg.AuthJWTAudience, Plan: cfg.AuthJWTPlan,
		Leeway: cfg.AuthJWTLeeway, MinRefresh: cfg.AuthJWKSMinRefresh, FetchTimeout: 5 * time.Second,
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Subjects:   db, Cache: a.cache, CacheTTL: cfg.CacheTTL, Observer: tel.Metrics,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	a.closers = append(a.closers, func() { cancel(); <-done })
	return v
}

// jwksStep is the system warmup step that fetches the JWKS.
func jwksStep(v *auth.JWTVerifier) warmup.Step {
	return warmup.Step{Name: "jwks", Run: v.Refresh}
}

func (d dbTimed) SubjectPrincipal(ctx context.Context, issuer, subject, plan string) (domain.Principal, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	return d.Store.SubjectPrincipal(ctx, issuer, subject, plan)
}

// sessionStore is the store as the login warmup reads principals: a JWT's
// hash is in no table; the verifier of this instance (where the login
// warmup runs) holds it since it verified the token.
type sessionStore struct {
	store.Store
	jwt *auth.JWTVerifier
}

func (s sessionStore) Principal(ctx context.Context, h domain.TokenHash) (domain.Principal, error) {
	if p, ok := s.jwt.CachedPrincipal(h); ok {
		return p, nil
	}
	return s.Store.Principal(ctx, h)
}
