package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/usagesync"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// newWarmup wires the warmup manager: status and locks in Valkey (so every
// instance agrees), data from the store into the cache; the usage counter is
// seeded by the request path's own usage.Service.Seed.
func newWarmup(cfg config.Config, b *backends, us *usage.Service, tel *telemetry.Telemetry, log *slog.Logger) (*warmup.Manager, error) {
	ws := b.cache.WarmState()
	steps := []warmup.Step{}
	if b.pg != nil {
		// Pool connections opened to DB_MIN_CONNS, hot statements prepared.
		steps = append(steps, warmup.Step{Name: "pool", Run: b.pg.Warm})
	}
	steps = append(steps,
		warmup.Step{Name: "scripts", Run: b.cache.LoadScripts},
		warmup.Step{Name: "plans", Run: func(ctx context.Context) error {
			_, err := b.store.Plans(ctx)
			return err
		}},
	)
	hot := cfg.SystemWarmupHotUsers
	if cfg.WarmupStrategy == config.StrategyOff {
		hot = 0 // "off" means no user warmup at all, for A/B runs
	}
	return warmup.New(warmup.Config{
		QueueSize: cfg.WarmupQueueSize, Workers: cfg.WarmupWorkers,
		TTL: cfg.WarmupTTL, CacheTTL: cfg.CacheTTL,
		SystemDelay: cfg.SystemWarmupDelay, HotUsers: hot, SystemSteps: steps,
		Store: b.store, Items: warmup.ItemsOf(b.cache.BeginItemsLoad, b.cache.ItemsWarm),
		Usage: us, Sessions: b.cache, Status: ws, Locks: ws,
		Observer: tel.Metrics, Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/warmup"),
		Logger: log,
	})
}

// newSyncer wires the usage sync (write-behind) loop: pending deltas claimed
// from Valkey (b.queue), applied to the store under an idempotency key, then
// acknowledged; plus the in-process counts of fail-open mode through the
// same path.
func newSyncer(cfg config.Config, b *backends, tel *telemetry.Telemetry, log *slog.Logger, local *usage.Local) (*usagesync.Syncer, error) {
	host, _ := os.Hostname()
	return usagesync.New(usagesync.Config{
		Interval: cfg.SyncInterval, Store: b.store, Queue: b.queue, Local: local, Pace: pace(cfg.SyncPace),
		Observer: tel.Metrics, Logger: log, Tracer: tel.TracerProvider.Tracer("github.com/warmpath/warmpath/app/internal/usagesync"), InstanceID: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randSuffix()),
	})
}

// sweepEvery runs the sync queue's safety net (it scans the keyspace, so it
// runs rarely and never on the request path).
func sweepEvery(ctx context.Context, q *valkey.SyncQueue, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if res, err := q.Sweep(ctx); err != nil && ctx.Err() == nil {
			log.Warn("usage sync sweep failed", "err", err.Error())
		} else if res.Marked+res.Reverted > 0 {
			log.Warn("usage sync sweep repaired entries", "marked", res.Marked, "reverted", res.Reverted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
