// Package httpapi is warmpath's HTTP surface: the public API on Fiber and the
// admin API on net/http. It is the only package that knows HTTP: it parses
// requests, calls the feature packages with a context.Context, and maps their
// errors to statuses in exactly one place (errors.go).
package httpapi

import (
	"context"
	"io/fs"
	"log/slog"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// encodeJSON renders every JSON answer of the public API. Map keys are
// sorted, as encoding/json did (the warmup status's parts). Invalid UTF-8
// is written as U+FFFD, as encoding/json did, instead of failing the
// answer: an error message can quote the request (a path of raw bytes that
// are not UTF-8), and must still be sent in the error shape.
func encodeJSON(v any) ([]byte, error) {
	return json.Marshal(v, json.Deterministic(true), jsontext.AllowInvalidUTF8(true))
}

// MaxBodyBytes is the largest request body accepted (1 MiB).
const MaxBodyBytes = 1 << 20

// Authenticator resolves the Authorization header to the caller
// (auth.Authenticator).
type Authenticator interface {
	Authenticate(ctx context.Context, header string) (domain.Principal, domain.TokenHash, error)
}

// Querier runs metered queries and login warmups (query.Service).
type Querier interface {
	Query(ctx context.Context, c query.Caller, items []string, k domain.IdemKey) (query.Answer, error)
	Remember(ctx context.Context, c query.Caller, k domain.IdemKey, a domain.StoredAnswer)
	Keyed(ctx context.Context, c query.Caller, k domain.IdemKey, do func(ctx context.Context) (domain.StoredAnswer, error)) (query.Answer, error)
	Warm(ctx context.Context, c query.Caller) (warmup.Status, error)
	WarmupStatus(ctx context.Context, userID int64) (warmup.Status, error)
}

// ItemUpdater changes a user's item set (engine.Engine).
type ItemUpdater interface {
	Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error)
}

// SystemWarmup reports the system warmup (warmup.Manager).
type SystemWarmup interface {
	System() warmup.SystemStatus
}

// CheckState is the state of a readiness check, or of the instance.
type CheckState string

// The states /readyz reports.
const (
	CheckOK       CheckState = "ok"       // the dependency answers
	CheckDegraded CheckState = "degraded" // it does not, and the instance still answers requests without it
	CheckDown     CheckState = "down"     // it does not, and the instance cannot answer requests
)

// Check is a named readiness check.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
	// Failure is the state while Run fails: CheckDegraded for a dependency
	// the instance answers without (from the other dependencies), CheckDown
	// (the default) for one without which it answers nothing. When every
	// check fails the instance is down whatever their Failure: there is
	// nothing left to answer from.
	Failure CheckState
}

// Config is everything the public server needs.
type Config struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Metrics        *telemetry.Metrics
	Auth           Authenticator
	Query          Querier
	Items          ItemUpdater
	Warmup         SystemWarmup // readyz?verbose
	Checks         []Check
	CORSOrigins    []string // exact origins; "*" allows any (answered "*", never with credentials)
	CheckTimeout   time.Duration
	// Web holds the frontend (app/web's Files): index.html, app.js,
	// style.css, openapi.json and client/dist/index.js, served at /,
	// /assets/{app.js,style.css,client.js} and /openapi.json. nil: no such
	// routes.
	Web fs.FS
	// DemoUsers are answered at GET /demo/users; nil: no such route. The
	// caller passes them only in embedded mode on a loopback listener.
	DemoUsers []DemoUser
	// AuthLimit limits failed authentications per client address.
	AuthLimit AuthLimit
}

// Server is the public API.
type Server struct {
	cfg         Config
	log         *slog.Logger
	tracer      trace.Tracer
	prop        propagation.TextMapPropagator
	metrics     *telemetry.Metrics
	reqDuration metric.Float64Histogram
	conns       *connTracker
	assets      map[string]*asset // nil without Config.Web
	corsAny     bool              // CORS_ORIGINS has "*"
	corsExact   map[string]bool
	authLimit   *authLimiter
}

// NewServer returns the public API.
func NewServer(cfg Config) (*Public, error) {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = time.Second
	}
	meter := cfg.MeterProvider.Meter("github.com/warmpath/warmpath/app/internal/httpapi")
	reqDuration, err := meter.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests."))
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		tracer:      cfg.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/httpapi"),
		prop:        propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		metrics:     cfg.Metrics,
		reqDuration: reqDuration,
		conns:       newConnTracker(),
		corsExact:   map[string]bool{},
		authLimit:   newAuthLimiter(cfg.AuthLimit),
	}
	for _, o := range cfg.CORSOrigins {
		if o == "*" {
			s.corsAny = true
		} else if o != "" {
			s.corsExact[o] = true
		}
	}
	if cfg.Web != nil {
		if s.assets, err = loadAssets(cfg.Web); err != nil {
			return nil, err
		}
	}
	app := fiber.New(fiber.Config{
		BodyLimit:             MaxBodyBytes,
		DisableStartupMessage: true,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           60 * time.Second,
		ErrorHandler:          s.errorHandler,
		AppName:               "warmpath",
		// One JSON encoder for every answer (encodeJSON): a keyed request's
		// answer is stored as it renders, and must read byte for byte like
		// the same answer without a key.
		JSONEncoder: encodeJSON,
	})
	s.routes(app)
	srv := app.Server()
	srv.Handler = refuseUnknownMethods(srv.Handler)
	return newPublic(app, s.conns), nil
}

// caller authenticates the request as the auth phase. A client address
// that failed too often is refused first, before any lookup; a refused token
// draws from its bucket and is answered uniformly (uniformAuthError).
func (s *Server) caller(c *fiber.Ctx, ctx context.Context) (query.Caller, error) {
	var who query.Caller
	key := clientKey(s.authLimit.clientAddr(peerAddr(c), c.Request().Header.PeekAll(fiber.HeaderXForwardedFor)))
	if err := s.authLimit.refused(key); err != nil {
		state(c).authFailed = true
		return who, err
	}
	err := telemetry.RunPhase(ctx, s.tracer, telemetry.PhaseAuth, func(ctx context.Context) error {
		// Authorization is not a list: with two, a proxy and this server
		// could each believe another one. Refused like a malformed token.
		if len(c.Request().Header.PeekAll(fiber.HeaderAuthorization)) > 1 {
			return apperr.New(apperr.MalformedToken, "several Authorization headers")
		}
		var err error
		who.Principal, who.Hash, err = s.cfg.Auth.Authenticate(ctx, c.Get(fiber.HeaderAuthorization))
		return err
	})
	if countsAsAuthFailure(err) {
		s.authLimit.failed(key)
		state(c).authFailed = true
		err = uniformAuthError(err)
	}
	return who, err
}

// refuseUnknownMethods answers a request whose method Fiber does not know
// (it would answer a bare text "Invalid http method") with the error shape
// of every other answer: 400 invalid_request, a request id, Server-Timing.
func refuseUnknownMethods(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	known := map[string]bool{}
	for _, m := range fiber.DefaultMethods {
		known[m] = true
	}
	return func(ctx *fasthttp.RequestCtx) {
		if known[string(ctx.Method())] {
			next(ctx)
			return
		}
		id := newIDs.next()
		body, _ := encodeJSON(errorBody{Error: errorDetail{Code: apperr.InvalidRequest, Message: "unknown HTTP method"}, RequestID: id})
		ctx.Response.Header.Set(fiber.HeaderXRequestID, id)
		ctx.Response.Header.Set("Server-Timing", telemetry.ServerTiming(telemetry.Breakdown{}))
		ctx.SetStatusCode(fiber.StatusBadRequest)
		ctx.SetContentType(fiber.MIMEApplicationJSON)
		ctx.SetBody(body)
	}
}
