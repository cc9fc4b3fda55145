package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/exaring/otelpgx"

	vk "github.com/valkey-io/valkey-go"
	"github.com/valkey-io/valkey-go/valkeyotel"
	noopmetric "go.opentelemetry.io/otel/metric/noop"

	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/httpapi"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/memory"
	"github.com/warmpath/warmpath/app/internal/store/postgres"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/usagesync"
	"github.com/warmpath/warmpath/app/internal/valkey"
)

// loadConfig reads the configuration; a bad value is a usage error (exit 2).
func loadConfig(getenv func(string) string) (config.Config, error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return cfg, &exitError{code: 2, err: err}
	}
	return cfg, nil
}

func migrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return &exitError{code: 2, err: errors.New("config: DATABASE_URL: required by migrate")}
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

// backends is what serve opened and must close.
type backends struct {
	store    store.Store
	pg       *postgres.Store // nil in embedded mode
	cache    *valkey.Cache
	queue    *valkey.SyncQueue
	closers  []func()
	embedded []string
}

func (b *backends) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

func openBackends(ctx context.Context, cfg config.Config, tel *telemetry.Telemetry, log *slog.Logger) (*backends, error) {
	b := &backends{}
	if cfg.EmbeddedStore() {
		b.store = memory.New()
		b.embedded = append(b.embedded, "store")
	} else {
		if cfg.AutoMigrate {
			applied, err := postgres.Migrate(ctx, cfg.DatabaseURL)
			if err != nil {
				return b, fmt.Errorf("migrate: %w", err)
			}
			log.Info("migrations applied", "count", len(applied))
		}
		pg, err := postgres.Open(ctx, postgres.Config{
			URL: cfg.DatabaseURL, MaxConns: cfg.DBMaxConns, MinConns: cfg.DBMinConns, OpTimeout: cfg.DBTimeout,
			Tracer: otelpgx.NewTracer(otelpgx.WithTracerProvider(tel.TracerProvider), otelpgx.WithMeterProvider(tel.MeterProvider), otelpgx.WithDisableAcquireTracer(), otelpgx.WithTrimSQLInSpanName()),
		})
		if err != nil {
			return b, fmt.Errorf("open postgres: %w", err)
		}
		b.pg, b.store = pg, pg
		b.closers = append(b.closers, pg.Close)
	}
	vcfg := valkey.Config{URL: cfg.ValkeyURL, Prefix: cfg.ValkeyPrefix, OpTimeout: cfg.ValkeyTimeout,
		// valkey-go spans under the request's spans. Span names are command
		// names only: statements (which hold token hashes in keys) are never
		// recorded.
		Wrap: func(c vk.Client) vk.Client {
			return valkeyotel.WithClient(c, valkeyotel.WithTracerProvider(tel.TracerProvider), valkeyotel.WithMeterProvider(noopmetric.NewMeterProvider()))
		},
	}
	if cfg.EmbeddedCache() {
		url, stop, err := valkey.StartEmbedded()
		if err != nil {
			return b, fmt.Errorf("start embedded valkey: %w", err)
		}
		b.closers = append(b.closers, stop)
		vcfg.URL, vcfg.DisableClientCache = url, true
		b.embedded = append(b.embedded, "valkey")
	}
	c, err := valkey.New(ctx, vcfg)
	if err != nil {
		return b, fmt.Errorf("open valkey: %w", err)
	}
	b.cache = c
	b.queue = c.SyncQueue(valkey.SyncQueueConfig{Lease: usagesync.DefaultLease(cfg.SyncInterval)})
	b.closers = append(b.closers, c.Close)
	return b, nil
}

// listen opens both listeners first, so the ports are bound (and printed)
// before anything else starts: serving never waits for warmup.
func listen(cfg config.Config) (pub, adm net.Listener, err error) {
	pub, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, nil, &exitError{code: 1, err: fmt.Errorf("listen HTTP_ADDR %s: %w", cfg.HTTPAddr, err)}
	}
	adm, err = net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		pub.Close()
		return nil, nil, &exitError{code: 1, err: fmt.Errorf("listen ADMIN_ADDR %s: %w", cfg.AdminAddr, err)}
	}
	return pub, adm, nil
}

func newUsage(cfg config.Config, b *backends, tel *telemetry.Telemetry, local *usage.Local) *usage.Service {
	return usage.New(usage.Config{
		Counter: b.cache, Ledger: b.store, Observer: tel.Metrics,
		FailOpen: cfg.UsageFailureMode == config.FailOpen, Local: local,
	})
}

func newEngine(b *backends, tel *telemetry.Telemetry, log *slog.Logger) *engine.Engine {
	return engine.New(engine.Config{
		Store: b.store, Cache: b.cache, Observer: tel.Metrics,
		OnCacheFailure: func(userID, version int64) {
			log.Error("item cache could not be updated nor invalidated; retrying in background", "user_id", userID, "version", version)
			go retryInvalidate(b.cache, userID, version, log)
		},
	})
}

// retryInvalidate keeps trying to invalidate a user's cached set after a
// committed change could not be mirrored, with capped backoff.
func retryInvalidate(c *valkey.Cache, userID, version int64, log *slog.Logger) {
	delay := 100 * time.Millisecond
	for attempt := 1; attempt <= 20; attempt++ {
		time.Sleep(delay)
		if err := c.InvalidateItems(context.Background(), userID, version); err == nil {
			log.Info("item cache invalidated after retry", "user_id", userID, "attempt", attempt)
			return
		}
		delay = min(delay*2, 5*time.Second)
	}
	log.Error("gave up invalidating item cache", "user_id", userID)
}

func serveHTTP(pub *httpapi.Public, ln net.Listener, errc chan<- error) {
	if err := pub.Serve(ln); err != nil {
		errc <- fmt.Errorf("public listener: %w", err)
	}
}

func serveAdmin(srv *http.Server, ln net.Listener, errc chan<- error) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errc <- fmt.Errorf("admin listener: %w", err)
	}
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
