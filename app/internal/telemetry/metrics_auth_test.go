package telemetry_test

import (
	"context"
	"testing"
)

func TestAuthMetrics(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	// Exported at 0 before any event.
	fams := families(t, tel)
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"warmpath_auth_requests_total", map[string]string{"method": "opaque", "result": "ok"}},
		{"warmpath_auth_requests_total", map[string]string{"method": "jwt", "result": "ok"}},
		{"warmpath_jwks_refreshes_total", map[string]string{"result": "ok"}},
		{"warmpath_jwks_refreshes_total", map[string]string{"result": "error"}},
	} {
		if got, ok := value(t, fams, tc.name, tc.labels); !ok || got != 0 {
			t.Errorf("before any event %s%v = %v (present %v), want 0", tc.name, tc.labels, got, ok)
		}
	}
	ctx := context.Background()
	tel.Metrics.AuthRequest(ctx, "jwt", "ok")
	tel.Metrics.AuthRequest(ctx, "jwt", "ok")
	tel.Metrics.AuthRequest(ctx, "jwt", "invalid_token")
	tel.Metrics.AuthRequest(ctx, "opaque", "unavailable")
	tel.Metrics.JWKSRefresh(ctx, "ok")
	tel.Metrics.JWKSRefresh(ctx, "error")
	tel.Metrics.JWKSRefresh(ctx, "error")
	fams = families(t, tel)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"warmpath_auth_requests_total", map[string]string{"method": "jwt", "result": "ok"}, 2},
		{"warmpath_auth_requests_total", map[string]string{"method": "jwt", "result": "invalid_token"}, 1},
		{"warmpath_auth_requests_total", map[string]string{"method": "opaque", "result": "unavailable"}, 1},
		{"warmpath_jwks_refreshes_total", map[string]string{"result": "ok"}, 1},
		{"warmpath_jwks_refreshes_total", map[string]string{"result": "error"}, 2},
	} {
		if got, ok := value(t, fams, tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
}
