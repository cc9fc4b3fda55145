package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// reqState is one request's bookkeeping, kept in c.Locals.
type reqState struct {
	id    string
	start time.Time
	t     telemetry.Timings // in the request's context: phases add to it
	perf  bool              // a metered/API route: gets a [PERF] line and phase metrics
	// authFailed: the token was refused (or the address is limited); the
	// answer's Server-Timing then has only total, so it does not tell which
	// lookups ran.
	authFailed bool
}

const stateKey = "warmpath.req"

func state(c *fiber.Ctx) *reqState {
	if s, ok := c.Locals(stateKey).(*reqState); ok {
		return s
	}
	return &reqState{}
}

func requestID(c *fiber.Ctx) string {
	if s, ok := c.Locals(stateKey).(*reqState); ok {
		return s.id
	}
	// Errors raised before the middleware ran (e.g. the body limit) still
	// get an id.
	return newIDs.next()
}

// idSource makes request ids: a random per-process prefix and a counter, so
// ids are unique across instances and cost no syscall per request.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

var newIDs = func() *idSource {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &idSource{prefix: hex.EncodeToString(b)}
}()

func (s *idSource) next() string {
	return s.prefix + "-" + strconv.FormatUint(s.n.Add(1), 36)
}

// validInboundID accepts a caller's X-Request-Id only if it is short and
// plain, so it is safe to echo and log.
func validInboundID(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for _, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}

// headerCarrier adapts fasthttp request headers for trace-context extraction
// without copying every header into an http.Header.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (hc headerCarrier) Get(k string) string { return string(hc.h.Peek(k)) }
func (hc headerCarrier) Set(k, v string)     { hc.h.Set(k, v) }
func (hc headerCarrier) Keys() []string      { return []string{"traceparent", "tracestate", "baggage"} }

// observe is the outermost middleware: request id, server span, timing,
// the error shape, Server-Timing, CORS, metrics and the [PERF] line.
func (s *Server) observe(c *fiber.Ctx) (err error) {
	st := &reqState{start: time.Now()}
	s.conns.setBusy(c.Context().Conn())
	if in := c.Request().Header.Peek(fiber.HeaderXRequestID); validInboundID(in) {
		st.id = string(in)
	} else {
		st.id = newIDs.next()
	}
	c.Locals(stateKey, st)
	c.Set(fiber.HeaderXRequestID, st.id)

	ctx := s.prop.Extract(context.Background(), headerCarrier{&c.Request().Header})
	method := stableMethod(c.Method())
	ctx = telemetry.WithTimings(ctx, &st.t)
	ctx, span := s.tracer.Start(ctx, method, serverKind)
	// Attributes only on a span that keeps them (sampled in): an unsampled
	// request, or any with no exporter, pays no copy of the path or the
	// address. No sampler here reads start attributes, so setting them just
	// after Start is the same to the exporter.
	if span.IsRecording() {
		span.SetAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			// The path aliases fasthttp's buffer too; the span outlives it.
			semconv.URLPath(strings.Clone(c.Path())),
			semconv.URLScheme(c.Protocol()),
			semconv.ClientAddress(c.IP()),
		)
	}
	c.SetUserContext(ctx)

	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "panic serving request", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = apperr.New(apperr.Internal, "an internal error occurred")
		}
		if err != nil {
			if e := fromFiber(err); status(e.Code) >= 500 {
				span.RecordError(err)
				s.log.ErrorContext(ctx, "request failed", "request_id", st.id, "code", string(e.Code), "err", err.Error())
			}
			_ = writeError(c, err)
			err = nil
		}
		s.finish(ctx, c, st, span)
	}()
	s.cors(c)
	return c.Next()
}

func (s *Server) finish(ctx context.Context, c *fiber.Ctx, st *reqState, span trace.Span) {
	st.t.Add(telemetry.PhaseTotal, time.Since(st.start))
	b := st.t.Breakdown()
	code := c.Response().StatusCode()
	route := c.Route().Path
	if code == fiber.StatusNotFound && (route == "/" || route == "") {
		route = "unmatched" // keep metric cardinality bounded
	}
	method := stableMethod(c.Method())
	if st.authFailed {
		c.Set("Server-Timing", telemetry.ServerTiming(telemetry.Breakdown{Total: b.Total}))
	} else {
		c.Set("Server-Timing", telemetry.ServerTiming(b))
	}

	ra := routeAttrsOf(method, route, code)
	if span.IsRecording() {
		span.SetName(ra.spanName)
		span.SetAttributes(ra.span[:]...)
		if code >= 500 {
			span.SetStatus(codes.Error, ra.codeText)
		}
	}
	span.End()

	s.reqDuration.Record(ctx, b.Total.Seconds(), ra.record...)
	if st.perf {
		slow := s.metrics.RecordRequest(ctx, b)
		telemetry.LogPerf(ctx, s.log, method, route, code, b, slow)
	}
}

// serverKind is the server span's start option, made once.
var serverKind = trace.WithSpanKind(trace.SpanKindServer)

// routeAttrs is what a finished request's span and duration metric need for
// one method, route and status: made once per combination (routeAttrsOf)
// rather than formatted and sorted on every request.
type routeAttrs struct {
	spanName string                // "POST /api/hasNotEngine-ultra-fast"
	span     [2]attribute.KeyValue // http.route, http.response.status_code
	codeText string                // the status as the error status's description
	record   []metric.RecordOption // the http.server.request.duration attribute set
}

type routeKey struct {
	method, route string
	code          int
}

// routeAttrsCache memoises routeAttrs. Its keys are bounded: known methods
// (stableMethod's constants), the routes registered with Fiber (their
// templates, plus "unmatched") and status codes 100-599; anything else is
// made afresh and not kept, so a client cannot grow it. A pure function of
// its key, so sharing it between servers (tests) is harmless.
var routeAttrsCache sync.Map // routeKey → *routeAttrs

func routeAttrsOf(method, route string, code int) *routeAttrs {
	k := routeKey{method, route, code}
	if v, ok := routeAttrsCache.Load(k); ok {
		return v.(*routeAttrs)
	}
	// The route is Fiber's registered template (or a constant); cloned
	// anyway, once, so nothing kept can alias a request's buffer.
	route = strings.Clone(route)
	ra := &routeAttrs{
		spanName: method + " " + route,
		span:     [2]attribute.KeyValue{semconv.HTTPRoute(route), semconv.HTTPResponseStatusCode(code)},
		codeText: strconv.Itoa(code),
		record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.HTTPRoute(route),
			semconv.HTTPResponseStatusCode(code),
		))},
	}
	if _, known := knownMethod(method); known && code >= 100 && code < 600 {
		k.route = route
		v, _ := routeAttrsCache.LoadOrStore(k, ra)
		return v.(*routeAttrs)
	}
	return ra
}

// knownMethod returns the constant spelling of m when it is one of the
// methods Fiber knows.
func knownMethod(m string) (string, bool) {
	for _, known := range [...]string{fiber.MethodGet, fiber.MethodPost, fiber.MethodOptions, fiber.MethodHead,
		fiber.MethodPut, fiber.MethodDelete, fiber.MethodPatch, fiber.MethodConnect, fiber.MethodTrace} {
		if m == known {
			return known, true
		}
	}
	return "", false
}

// stableMethod returns m as a string that does not alias fasthttp's request
// buffer. Fiber's c.Method() does alias it (unless fiber.Config.Immutable),
// and the method outlives the request as a span attribute (exported later by
// the batch processor) and as a metric label (kept by the SDK): both read the
// next request's bytes otherwise ("GETT"). Known methods cost no allocation.
func stableMethod(m string) string {
	if known, ok := knownMethod(m); ok {
		return known
	}
	return strings.Clone(m)
}

// corsExpose are the response headers a browser page may read: the timing
// breakdown, the quota, when to retry, the id to quote, and replays.
const corsExpose = "Server-Timing, RateLimit, RateLimit-Policy, Retry-After, X-Request-Id, Idempotent-Replayed"

// cors sets the CORS headers for allowed origins only, on every answer
// (errors included: a page must be able to read a 429's Retry-After).
// Timing-Allow-Origin lets it read the Server-Timing breakdown too. With "*"
// the answer is "*" and never carries credentials (the API needs none: the
// token travels in Authorization, not in a cookie).
func (s *Server) cors(c *fiber.Ctx) {
	if !s.corsAny && len(s.corsExact) == 0 {
		return
	}
	origin := c.Get(fiber.HeaderOrigin)
	allow := "*"
	if !s.corsAny {
		// The answer depends on Origin: caches must key on it.
		c.Vary(fiber.HeaderOrigin)
		if origin == "" || !s.corsExact[origin] {
			return
		}
		allow = origin
	} else if origin == "" {
		return
	}
	h := &c.Response().Header
	h.Set(fiber.HeaderAccessControlAllowOrigin, allow)
	h.Set(fiber.HeaderTimingAllowOrigin, allow)
	h.Set(fiber.HeaderAccessControlExposeHeaders, corsExpose)
}

func (s *Server) allowOrigin(origin string) bool {
	return origin != "" && (s.corsAny || s.corsExact[origin])
}

// preflight answers CORS preflight requests: the methods of the API and the
// request headers a page sends (the token, JSON, idempotency, tracing).
func (s *Server) preflight(c *fiber.Ctx) error {
	if !s.allowOrigin(c.Get(fiber.HeaderOrigin)) {
		return apperr.New(apperr.Forbidden, "origin not allowed")
	}
	c.Set(fiber.HeaderAccessControlAllowMethods, "GET, POST, OPTIONS")
	c.Set(fiber.HeaderAccessControlAllowHeaders, "Authorization, Content-Type, Idempotency-Key, X-Request-Id, traceparent, tracestate")
	c.Set(fiber.HeaderAccessControlMaxAge, "600")
	return c.SendStatus(fiber.StatusNoContent)
}

var _ propagation.TextMapCarrier = headerCarrier{}

// peerAddr is the address of the connection's peer.
func peerAddr(c *fiber.Ctx) netip.Addr {
	if a, ok := c.Context().RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr()
	}
	a, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return a
}
