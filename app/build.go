package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/exaring/otelpgx"
	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/httpapi"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/memory"
	"github.com/warmpath/warmpath/app/internal/store/postgres"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/usagesync"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/warmup"
	"github.com/warmpath/warmpath/app/web"
	"github.com/warmpath/warmpath/internal/cli"
)

// The Valkey cache answers a warm query's has-not lookup inside its count
// (one round trip); usage.Service finds that out by this interface.
var _ usage.HasNotCounter = (*valkey.Cache)(nil)

// host is what build gets from the process around it.
type host struct {
	tel        *telemetry.Telemetry
	log        *slog.Logger
	stdout     io.Writer // demo users are printed here
	publicAddr net.Addr  // GET /demo/users only on a loopback listener
	// wrapStore, when set, wraps the opened store (a test seam).
	wrapStore func(store.Store) store.Store
	// interceptValkey, when set, sees every Valkey command (a test seam:
	// valkey.Config.Intercept).
	interceptValkey func(vk.Client) vk.Client
}

// application is everything build made: what serve starts and stops, and
// what close releases.
type application struct {
	cfg config.Config
	log *slog.Logger

	// Backends, opened by build and closed by close.
	store    store.Store
	pg       *postgres.Store // nil in embedded mode
	cache    *valkey.Cache
	queue    *valkey.SyncQueue
	closers  []func()
	embedded []string // which backends are the embedded default

	// Components.
	public      *httpapi.Public
	admin       *http.Server
	warmup      *warmup.Manager
	syncer      *usagesync.Syncer
	invalidator *engine.Invalidator
	meter       *usage.Service
	jwt         *auth.JWTVerifier // nil unless AUTH_JWKS_URL is set

	demo       demo
	demoListed bool // GET /demo/users is served
}

// close releases the backends, last opened first.
func (a *application) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// build opens the backends and constructs every component: the only place
// where concrete types meet. On error the application returned still holds
// what was opened, for close.
func build(ctx context.Context, cfg config.Config, h host) (*application, error) {
	tel, log := h.tel, h.log
	a := &application{cfg: cfg, log: log}
	if err := a.openBackends(ctx, tel, h.interceptValkey); err != nil {
		return a, err
	}
	if h.wrapStore != nil {
		a.store = h.wrapStore(a.store)
	}
	if len(a.embedded) > 0 {
		log.Warn("EMBEDDED MODE: data is NOT persisted and is lost when the process exits; set DATABASE_URL and VALKEY_URL for real use", "embedded", a.embedded)
	}
	if err := a.store.UpsertPlans(ctx, cfg.Plans); err != nil {
		return a, fmt.Errorf("load plans: %w", err)
	}
	var demoRoute []httpapi.DemoUser // GET /demo/users: embedded store on a loopback listener only
	if cfg.EmbeddedStore() {
		var err error
		if a.demo, err = createDemoUsers(ctx, cfg.DemoUsersFile, a.store, h.stdout); err != nil {
			return a, cli.Usage(err)
		}
		if httpapi.IsLoopback(h.publicAddr) {
			demoRoute, a.demoListed = a.demo.users, true
		}
	}
	if a.pg != nil {
		tel.Metrics.ObservePool(poolStats(a.pg))
	}

	// The request path reads the store through the DB timer, so the time of
	// every store call lands in the request's "db" phase.
	db := dbTimed{a.store}
	local := usage.NewLocal()
	a.jwt = newJWT(a, db, tel)
	principals := auth.NewCachedStore(db, a.cache, tel.Metrics, cfg.CacheTTL)
	authn := auth.New(auth.Config{Store: principals, JWT: a.jwt, Observer: tel.Metrics})
	a.invalidator = engine.NewInvalidator(engine.InvalidatorConfig{Cache: a.cache, Logger: log})
	eng := engine.New(engine.Config{Items: engine.NewCachedItems(engine.FromStore(db), a.cache, tel.Metrics, a.invalidator)})
	lease := idempotencyLease(cfg)
	meter := usage.New(usage.Config{
		Counter: a.cache, Ledger: db, Observer: tel.Metrics,
		FailOpen: cfg.UsageFailureMode == config.FailOpen, Local: local,
		IdemTTL: cfg.IdempotencyTTL, IdemLease: lease,
	})
	a.meter = meter
	var err error
	if a.warmup, err = newWarmup(cfg, a, meter, tel, log); err != nil {
		return a, err
	}
	a.queue = a.cache.SyncQueue(valkey.SyncQueueConfig{Lease: usagesync.DefaultLease(cfg.SyncInterval)})
	if a.syncer, err = newSyncer(cfg, a.store, a.queue, tel, log, local); err != nil {
		return a, err
	}
	queries := query.New(query.Config{
		Usage: meter, Items: eng, Warmup: a.warmup, Observer: tel.Metrics, Strategy: cfg.WarmupStrategy,
		Keys: a.cache, IdemTTL: cfg.IdempotencyTTL, IdemLease: lease,
		Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/query"), Logger: log,
	})

	if a.public, err = httpapi.NewServer(httpapi.Config{
		Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Metrics: tel.Metrics,
		Auth: authn, Query: queries, Items: eng, Warmup: a.warmup,
		Checks: readyChecks(cfg, a.store.Ping, a.cache.Ping), CORSOrigins: cfg.CORSOrigins,
		Web: web.Files, DemoUsers: demoRoute,
		AuthLimit: httpapi.AuthLimit{Rate: cfg.AuthFailureRate, Burst: cfg.AuthFailureBurst, TrustedProxies: cfg.TrustedProxyPrefixes()},
	}); err != nil {
		return a, err
	}
	a.admin = &http.Server{
		Handler: httpapi.NewAdmin(httpapi.AdminConfig{
			Logger: log, Store: a.store, Cache: a.cache, Principals: principals, Sync: a.syncer, Warmup: a.warmup,
			MetricsHandler: tel.MetricsHandler(), Token: cfg.AdminToken, JWTIssuer: cfg.AuthJWTIssuer,
			Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/httpapi"),
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return a, nil
}

// openBackends opens the store (Postgres, or the in-memory one) and Valkey
// (or an in-process server), each appended to closers as it opens.
func (a *application) openBackends(ctx context.Context, tel *telemetry.Telemetry, intercept func(vk.Client) vk.Client) error {
	cfg := a.cfg
	if cfg.EmbeddedStore() {
		a.store = memory.New()
		a.embedded = append(a.embedded, "store")
	} else {
		if cfg.AutoMigrate {
			applied, err := postgres.Migrate(ctx, cfg.DatabaseURL)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			a.log.Info("migrations applied", "count", len(applied))
		}
		pg, err := postgres.Open(ctx, postgres.Config{
			URL: cfg.DatabaseURL, MaxConns: cfg.DBMaxConns, MinConns: cfg.DBMinConns, OpTimeout: cfg.DBTimeout,
			Tracer: otelpgx.NewTracer(otelpgx.WithTracerProvider(tel.TracerProvider), otelpgx.WithMeterProvider(tel.MeterProvider), otelpgx.WithDisableAcquireTracer(), otelpgx.WithTrimSQLInSpanName()),
		})
		if err != nil {
			return fmt.Errorf("open postgres: %w", err)
		}
		a.pg, a.store = pg, pg
		a.closers = append(a.closers, pg.Close)
	}
	// Command latency and error metrics for every command, a span per
	// command only under a sampled-in span (valkey.Instrument).
	wrap, err := valkey.Instrument(tel.TracerProvider, tel.MeterProvider)
	if err != nil {
		return fmt.Errorf("valkey metrics: %w", err)
	}
	vcfg := valkey.Config{URL: cfg.ValkeyURL, Prefix: cfg.ValkeyPrefix, OpTimeout: cfg.ValkeyTimeout,
		Wrap: wrap, Intercept: intercept}
	if cfg.EmbeddedCache() {
		e, err := valkey.StartEmbedded()
		if err != nil {
			return fmt.Errorf("start embedded valkey: %w", err)
		}
		a.closers = append(a.closers, e.Close)
		vcfg.URL, vcfg.Dial, vcfg.DisableClientCache = e.URL, e.Dial, true
		a.embedded = append(a.embedded, "valkey")
	}
	c, err := valkey.New(ctx, vcfg)
	if err != nil {
		return fmt.Errorf("open valkey: %w", err)
	}
	a.cache = c
	a.closers = append(a.closers, c.Close)
	return nil
}

// newWarmup wires the warmup manager: status and locks in Valkey (so every
// instance agrees), data from the store into the cache.
func newWarmup(cfg config.Config, a *application, us *usage.Service, tel *telemetry.Telemetry, log *slog.Logger) (*warmup.Manager, error) {
	ws := a.cache.WarmState()
	steps := []warmup.Step{}
	if a.pg != nil {
		// Pool connections opened to DB_MIN_CONNS, hot statements prepared.
		steps = append(steps, warmup.Step{Name: "pool", Run: a.pg.Warm})
	}
	steps = append(steps,
		warmup.Step{Name: "scripts", Run: a.cache.LoadScripts},
		warmup.Step{Name: "plans", Run: func(ctx context.Context) error {
			_, err := a.store.Plans(ctx)
			return err
		}},
	)
	var sessions warmup.Store = a.store
	if a.jwt != nil {
		steps = append(steps, jwksStep(a.jwt))
		sessions = sessionStore{a.store, a.jwt}
	}
	return warmup.New(warmup.Config{
		QueueSize: cfg.WarmupQueueSize, Workers: cfg.WarmupWorkers,
		TTL: cfg.WarmupTTL, CacheTTL: cfg.CacheTTL,
		SystemDelay: cfg.SystemWarmupDelay, HotUsers: query.SystemHotUsers(cfg.WarmupStrategy, cfg.SystemWarmupHotUsers), SystemSteps: steps,
		Store: sessions, Items: warmup.ItemsOf(a.cache.BeginItemsLoad, a.cache.ItemsWarm),
		Usage: us, Sessions: a.cache, Status: ws, Locks: ws,
		Observer: tel.Metrics, Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/warmup"),
		Logger: log,
	})
}

// idempotencyLease is how long the first request with an idempotency key
// holds it: longer than any request can take (each of its Valkey and
// Postgres calls is bounded), so a retry while it runs gets 409, and a retry
// after its process died is answered afresh once the lease is over.
func idempotencyLease(cfg config.Config) time.Duration {
	return max(3*(cfg.ValkeyTimeout+cfg.DBTimeout), time.Second)
}

// newSyncer wires the write-behind loop: pending deltas claimed from the
// queue, applied to the store under an idempotency key, then acknowledged;
// plus the in-process counts of fail-open mode through the same path. The
// queue is also the roster of live instances, so the last graceful stop
// finishes what killed instances left (after a sweep for lost marks).
func newSyncer(cfg config.Config, st store.Store, q *valkey.SyncQueue, tel *telemetry.Telemetry, log *slog.Logger, local *usage.Local) (*usagesync.Syncer, error) {
	hostname, _ := os.Hostname()
	return usagesync.New(usagesync.Config{
		Interval: cfg.SyncInterval, Store: st, Queue: q, Local: local, Pace: pace(cfg.SyncPace),
		Liveness: q, Sweep: func(ctx context.Context) (int, error) {
			r, err := q.Sweep(ctx)
			return r.Marked + r.Reverted, err
		},
		Observer: tel.Metrics, Logger: log, Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/usagesync"), InstanceID: fmt.Sprintf("%s-%d-%s", hostname, os.Getpid(), randSuffix()),
	})
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pace maps SYNC_PACE to usagesync.Config.Pace (0 there means the default).
func pace(p float64) float64 {
	if p == 0 {
		return -1 // no rest: flush backlogs at full speed
	}
	return p
}

// poolStats adapts pgxpool's statistics for the pool gauges.
func poolStats(pg *postgres.Store) func() telemetry.PoolStats {
	return func() telemetry.PoolStats {
		s := pg.Pool().Stat()
		return telemetry.PoolStats{
			AcquiredConns: int64(s.AcquiredConns()), IdleConns: int64(s.IdleConns()), TotalConns: int64(s.TotalConns()),
			MaxConns: int64(s.MaxConns()), ConstructingConns: int64(s.ConstructingConns()),
			AcquireCount: s.AcquireCount(), EmptyAcquireCount: s.EmptyAcquireCount(), CanceledAcquireCount: s.CanceledAcquireCount(),
			AcquireDuration: s.AcquireDuration(), EmptyAcquireWaitTime: s.EmptyAcquireWaitTime(),
		}
	}
}

// dbTimed is the store as the request path reads it: the duration of each
// call is added to the request's "db" phase (telemetry.Timings in the
// context), wherever it is spent: auth, the usage check, the query.
type dbTimed struct{ store.Store }

func (d dbTimed) Principal(ctx context.Context, h domain.TokenHash) (domain.Principal, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	return d.Store.Principal(ctx, h)
}

func (d dbTimed) ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	return d.Store.ItemsHaving(ctx, userID, items)
}

func (d dbTimed) UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	return d.Store.UpdateItems(ctx, userID, add, remove, maxItems)
}

func (d dbTimed) Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	return d.Store.Usage(ctx, userID, periodStart)
}

// readyChecks are /readyz's checks and what a failure of each means:
//   - valkey down: in USAGE_FAILURE_MODE=open the instance still answers
//     (principals and items from Postgres, counts in process) → degraded; in
//     closed mode every metered query is a 503 → down.
//   - store down: warm users are still answered from Valkey (principal,
//     items and count all cached), only cold users fail → degraded. Taking
//     every instance out of the load balancer for a shared Postgres outage
//     would turn a partial outage into a full one.
//   - both down: nothing is left to answer from → down (httpapi's rule).
func readyChecks(cfg config.Config, storePing, cachePing func(context.Context) error) []httpapi.Check {
	valkeyFailure := httpapi.CheckDown
	if cfg.UsageFailureMode == config.FailOpen {
		valkeyFailure = httpapi.CheckDegraded
	}
	return []httpapi.Check{
		{Name: "store", Run: storePing, Failure: httpapi.CheckDegraded},
		{Name: "valkey", Run: cachePing, Failure: valkeyFailure},
	}
}
