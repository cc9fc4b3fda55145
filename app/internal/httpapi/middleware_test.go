package httpapi

import (
	"testing"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

func TestRouteAttrsMadeOnce(t *testing.T) {
	a := routeAttrsOf("POST", "/api/test-route-attrs", 200)
	if a.spanName != "POST /api/test-route-attrs" || a.codeText != "200" ||
		a.span != [2]attribute.KeyValue{semconv.HTTPRoute("/api/test-route-attrs"), semconv.HTTPResponseStatusCode(200)} || len(a.record) != 1 {
		t.Fatalf("routeAttrs = %+v", a)
	}
	if b := routeAttrsOf("POST", "/api/test-route-attrs", 200); b != a {
		t.Error("a known method, route and status made afresh: not kept")
	}
	if b := routeAttrsOf("POST", "/api/test-route-attrs", 503); b == a || b.codeText != "503" {
		t.Errorf("another status shares the entry: %+v", b)
	}
	// Unknown methods and impossible statuses are made each time and never
	// kept, so clients cannot grow the cache.
	for _, c := range []struct {
		method string
		code   int
	}{{"BREW", 200}, {"POST", 1000}} {
		x := routeAttrsOf(c.method, "/api/test-route-attrs", c.code)
		if y := routeAttrsOf(c.method, "/api/test-route-attrs", c.code); x == y {
			t.Errorf("%s %d was kept", c.method, c.code)
		}
		if _, kept := routeAttrsCache.Load(routeKey{c.method, "/api/test-route-attrs", c.code}); kept {
			t.Errorf("%s %d is in the cache", c.method, c.code)
		}
	}
}
