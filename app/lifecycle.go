package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/httpapi"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/web"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// options are seams for tests that the environment cannot express.
type options struct {
	// spanExporter, when set, receives every span (tests record them).
	spanExporter sdktrace.SpanExporter
}

// serve runs the service until ctx is done, then shuts down in order:
// stop accepting, drain in-flight requests, stop warmup, flush usage, close.
func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, opts options) error {
	started := time.Now()
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	log.Info("starting warmpath", "version", version, "config", cfg)

	// Listeners first: the ports are bound before any dependency is touched.
	pubLn, admLn, err := listen(cfg)
	if err != nil {
		return err
	}
	// Closed on every early return; a second Close after a drain is harmless.
	defer pubLn.Close()
	defer admLn.Close()

	tel, err := telemetry.New(ctx, telemetry.Config{
		ServiceName: "warmpath", ServiceVersion: version, Getenv: getenv, Logger: log, SpanExporter: opts.spanExporter,
		Thresholds: telemetry.Thresholds{Total: cfg.ThresholdTotal, Auth: cfg.ThresholdAuth, DB: cfg.ThresholdDB, UsageCheck: cfg.ThresholdUsageCheck},
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	if cfg.PyroscopeServerAddress != "" {
		profCfg, err := telemetry.ProfilingConfigFromEnv(getenv, "warmpath", log)
		if err == nil {
			var stopProf func() error
			stopProf, err = telemetry.StartProfiling(profCfg)
			if err == nil {
				defer func() { _ = stopProf() }()
				// Span ids on CPU samples: profiles link to traces.
				tel.TracerProvider = telemetry.WrapTracerProvider(tel.TracerProvider)
			}
		}
		if err != nil {
			log.Warn("profiling disabled", "err", err.Error())
		}
	}
	tel.SetGlobal()

	b, err := openBackends(ctx, cfg, tel, log)
	defer b.close()
	if err != nil {
		return err
	}
	if len(b.embedded) > 0 {
		log.Warn("EMBEDDED MODE: data is NOT persisted and is lost when the process exits; set DATABASE_URL and VALKEY_URL for real use", "embedded", b.embedded)
	}
	if err := b.store.UpsertPlans(ctx, cfg.Plans); err != nil {
		return fmt.Errorf("load plans: %w", err)
	}
	var demoSet demo
	var demoRoute []httpapi.DemoUser // GET /demo/users: embedded store on a loopback listener only
	if cfg.EmbeddedStore() {
		if demoSet, err = createDemoUsers(ctx, cfg.DemoUsersFile, b.store, stdout); err != nil {
			return &exitError{code: 2, err: err}
		}
		if httpapi.IsLoopback(pubLn.Addr()) {
			demoRoute = demoSet.users
		}
	}
	if b.pg != nil {
		tel.Metrics.ObservePool(poolStats(b.pg))
	}

	local := usage.NewLocal()
	authn := auth.New(auth.Config{Store: b.store, Cache: b.cache, Observer: tel.Metrics, CacheTTL: cfg.CacheTTL})
	eng := newEngine(b, tel, log)
	wm, err := newWarmup(cfg, b, tel, log)
	if err != nil {
		return err
	}
	syncer, err := newSyncer(cfg, b, tel, log, local)
	if err != nil {
		return err
	}

	app, err := httpapi.NewServer(httpapi.Config{
		Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Metrics: tel.Metrics,
		Auth: authn, Usage: newUsage(cfg, b, tel, local), Engine: eng, Warmup: wm,
		Strategy: cfg.WarmupStrategy, Checks: checks(b), CORSOrigins: cfg.CORSOrigins,
		Web: web.Files, DemoUsers: demoRoute,
	})
	if err != nil {
		return err
	}
	admSrv := &http.Server{
		Handler: httpapi.NewAdmin(httpapi.AdminConfig{
			Logger: log, Store: b.store, Cache: b.cache, Sync: syncer, Warmup: wm,
			MetricsHandler: tel.MetricsHandler(), Token: cfg.AdminToken,
			Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/httpapi"),
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}

	errc := make(chan error, 2)
	go serveHTTP(app, pubLn, errc)
	go serveAdmin(admSrv, admLn, errc)
	fmt.Fprintf(stdout, "warmpath: serving http://%s admin http://%s (pid %d, started in %s)\n",
		pubLn.Addr(), admLn.Addr(), os.Getpid(), time.Since(started).Round(time.Microsecond))
	printNext(stdout, pubLn.Addr(), admLn.Addr(), demoSet, len(b.embedded) > 0, demoRoute != nil)

	// Background work starts after the listeners: nothing here delays serving.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	wm.Start(bg)
	syncDone := make(chan error, 1)
	go func() { syncDone <- syncer.Run(bg) }()
	go sweepEvery(bg, b.queue, 5*time.Minute, log)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", "signal")
	case err := <-errc:
		log.Error("listener failed; shutting down", "err", err.Error())
	}

	startedStop := time.Now()
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	step := time.Now()
	// 1. Stop accepting and drain in-flight requests.
	if err := app.Shutdown(deadline); err != nil {
		log.Warn("public listener did not drain in time", "err", err.Error())
	}
	_ = admSrv.Shutdown(deadline)
	drained := time.Since(step)
	step = time.Now()
	// 2. Drop queued warmups, cancel running ones, release their locks.
	if err := wm.Stop(deadline); err != nil {
		log.Warn("warmup stop", "err", err.Error())
	}
	warmStopped := time.Since(step)
	step = time.Now()
	// 3. Stop the sync loop and flush what is pending. The flush keeps a
	// floor of its own even if a slow drain used the whole deadline: counts
	// are money.
	stopBG()
	<-syncDone
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(startedStop.Add(cfg.ShutdownTimeout)), cfg.ShutdownTimeout/4))
	defer cancelFlush()
	if err := syncer.Flush(flushCtx); err != nil {
		log.Error("final usage flush incomplete; pending deltas stay in Valkey for the next instance", "err", err.Error())
	}
	log.Info("stopped", "drain", drained, "warmup_stop", warmStopped, "flush", time.Since(step))
	return nil
}

func checks(b *backends) []httpapi.Check {
	return []httpapi.Check{
		{Name: "store", Run: b.store.Ping},
		{Name: "valkey", Run: b.cache.Ping},
	}
}
