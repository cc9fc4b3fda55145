package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	vk "github.com/valkey-io/valkey-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/postgres"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/internal/cli"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

const usageText = `usage: warmpath [serve|migrate|help]

  serve    run the service (default)
  migrate  apply database migrations to DATABASE_URL and exit

Configuration is read from the environment; see README.md.`

// options are seams for tests that the environment cannot express.
type options struct {
	// spanExporter, when set, receives every span (tests record them).
	spanExporter sdktrace.SpanExporter
	// wrapStore, when set, wraps the store every component uses (tests
	// hold or fail store calls on any backend, the embedded one included).
	wrapStore func(store.Store) store.Store
	// interceptValkey, when set, wraps the Valkey client under everything
	// else (tests count the commands a request sends).
	interceptValkey func(vk.Client) vk.Client
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, getenv, stdout, stderr, options{})
}

// runWith is run with the test seams.
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts options) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	switch cmd {
	case "serve":
		return runServe(ctx, getenv, stdout, stderr, opts)
	case "migrate":
		return migrate(ctx, getenv, stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usageText)
		return nil
	default:
		return cli.Usage(fmt.Errorf("unknown command %q\n%s", cmd, usageText))
	}
}

// runServe starts in order (configuration, listeners, telemetry, build,
// serve) and stops in the reverse order: serve returns once it has drained,
// stopped the background work and flushed usage; then the app's backends
// close, then telemetry.
func runServe(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, opts options) error {
	started := time.Now()
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	logOut, flushLog := telemetry.BufferStderr(stderr)
	defer flushLog() // the first deferred, the last to run: every line is out before run returns
	log, err := telemetry.NewLogger(logOut, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return cli.Usage(err)
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

	tel, stopTelemetry, err := startTelemetry(ctx, getenv, cfg, log, opts)
	if err != nil {
		return err
	}
	defer stopTelemetry()

	a, err := build(ctx, cfg, host{tel: tel, log: log, stdout: stdout, publicAddr: pubLn.Addr(), wrapStore: opts.wrapStore, interceptValkey: opts.interceptValkey})
	defer a.close()
	if err != nil {
		return err
	}
	return a.serve(ctx, pubLn, admLn, stdout, started)
}

// loadConfig reads the configuration; a bad value is a usage error (exit 2).
func loadConfig(getenv func(string) string) (config.Config, error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return cfg, cli.Usage(err)
	}
	return cfg, nil
}

// listen opens both listeners first, so the ports are bound (and printed)
// before anything else starts: serving never waits for warmup.
func listen(cfg config.Config) (pub, adm net.Listener, err error) {
	pub, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	adm, err = net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		pub.Close()
		return nil, nil, fmt.Errorf("listen ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	return pub, adm, nil
}

// startTelemetry sets up traces, metrics and (when configured) profiling;
// stop flushes and shuts them down, last of all.
func startTelemetry(ctx context.Context, getenv func(string) string, cfg config.Config, log *slog.Logger, opts options) (*telemetry.Telemetry, func(), error) {
	tel, err := telemetry.New(ctx, telemetry.Config{
		ServiceName: "warmpath", ServiceVersion: version, Getenv: getenv, Logger: log, SpanExporter: opts.spanExporter,
		Thresholds: telemetry.Thresholds{Total: cfg.ThresholdTotal, Auth: cfg.ThresholdAuth, DB: cfg.ThresholdDB, UsageCheck: cfg.ThresholdUsageCheck},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: %w", err)
	}
	stopProf := func() error { return nil }
	if cfg.PyroscopeServerAddress != "" {
		profCfg, err := telemetry.ProfilingConfigFromEnv(getenv, "warmpath", log)
		if err == nil {
			var stop func() error
			if stop, err = telemetry.StartProfiling(profCfg); err == nil {
				stopProf = stop
				// Span ids on CPU samples: profiles link to traces.
				tel.TracerProvider = telemetry.WrapTracerProvider(tel.TracerProvider)
			}
		}
		if err != nil {
			log.Warn("profiling disabled", "err", err.Error())
		}
	}
	tel.SetGlobal()
	return tel, func() {
		_ = stopProf()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}, nil
}

func migrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return cli.Usage(errors.New("config: DATABASE_URL: required by migrate"))
	}
	applied, err := postgres.Migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "warmpath: %d migration(s) applied\n", len(applied))
	for _, a := range applied {
		fmt.Fprintln(stdout, "  ", a)
	}
	return nil
}
