package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// authMetrics count authentications and JWKS fetches.
type authMetrics struct {
	authRequests   metric.Int64Counter
	jwksRefreshes  metric.Int64Counter
	authAddOpts    map[[2]string][]metric.AddOption
	refreshAddOpts map[string][]metric.AddOption
}

// authResults are the results precomputed for warmpath_auth_requests_total.
var authResults = []string{"ok", "missing_token", "malformed_token", "unknown_token", "expired_token",
	"revoked_token", "invalid_token", "unavailable"}

// registerAuth creates warmpath_auth_requests_total{method,result} and
// warmpath_jwks_refreshes_total{result}, their ok series exported at 0 from
// the start.
func (a *authMetrics) registerAuth(meter metric.Meter) error {
	var err1, err2 error
	a.authRequests, err1 = meter.Int64Counter("warmpath.auth.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Authentications by method (opaque, jwt) and result (ok, the 401 code, unavailable)."))
	a.jwksRefreshes, err2 = meter.Int64Counter("warmpath.jwks.refreshes",
		metric.WithUnit("{fetch}"),
		metric.WithDescription("JWKS fetches by result (ok, error)."))
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	a.authAddOpts = map[[2]string][]metric.AddOption{}
	for _, method := range []string{"opaque", "jwt"} {
		for _, result := range authResults {
			a.authAddOpts[[2]string{method, result}] = []metric.AddOption{metric.WithAttributeSet(
				attribute.NewSet(attribute.String("method", method), attribute.String("result", result)))}
		}
		a.authRequests.Add(context.Background(), 0, a.authAddOpts[[2]string{method, "ok"}]...)
	}
	a.refreshAddOpts = map[string][]metric.AddOption{}
	for _, result := range []string{"ok", "error"} {
		a.refreshAddOpts[result] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", result)))}
		a.jwksRefreshes.Add(context.Background(), 0, a.refreshAddOpts[result]...)
	}
	return nil
}

// AuthRequest counts an authentication:
// warmpath_auth_requests_total{method="opaque|jwt",result="ok|<401 code>|unavailable"}.
func (a *authMetrics) AuthRequest(ctx context.Context, method, result string) {
	if opts, ok := a.authAddOpts[[2]string{method, result}]; ok {
		a.authRequests.Add(ctx, 1, opts...)
		return
	}
	a.authRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("method", method), attribute.String("result", result)))
}

// JWKSRefresh counts a JWKS fetch: warmpath_jwks_refreshes_total{result="ok|error"}.
func (a *authMetrics) JWKSRefresh(ctx context.Context, result string) {
	if opts, ok := a.refreshAddOpts[result]; ok {
		a.jwksRefreshes.Add(ctx, 1, opts...)
		return
	}
	a.jwksRefreshes.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}
