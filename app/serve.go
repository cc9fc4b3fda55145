package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/internal/ctxtime"
)

// serve runs the application on its listeners until ctx is done or a
// listener fails, then shuts down in order: stop accepting and drain
// in-flight requests, stop warmup, stop the sync loop and flush usage, stop
// the other background tasks. Every background task is started here and has
// stopped when serve returns; run then closes the backends.
func (a *application) serve(ctx context.Context, pubLn, admLn net.Listener, stdout io.Writer, started time.Time) error {
	cfg, log := a.cfg, a.log
	errc := make(chan error, 2)
	go func() {
		if err := a.public.Serve(pubLn); err != nil {
			errc <- fmt.Errorf("public listener: %w", err)
		}
	}()
	go func() {
		if err := a.admin.Serve(admLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	fmt.Fprintf(stdout, "warmpath: serving http://%s admin http://%s (pid %d, started in %s)\n",
		pubLn.Addr(), admLn.Addr(), os.Getpid(), time.Since(started).Round(time.Microsecond))
	printNext(stdout, pubLn.Addr(), admLn.Addr(), a.demo, len(a.embedded) > 0, a.demoListed)

	// Background work starts after the listeners: nothing here delays
	// serving. bg outlives ctx: shutdown stops each task in its turn.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	a.warmup.Start(bg)
	syncDone := make(chan error, 1)
	go func() { syncDone <- a.syncer.Run(bg) }()
	var tasks sync.WaitGroup // the background tasks that only need stopping
	tasks.Go(func() { sweepEvery(bg, a.queue, 5*time.Minute, log) })
	tasks.Go(func() { a.invalidator.Run(bg) })
	tasks.Go(func() {
		// Settle counts of unknown outcome once Valkey can tell (cheap while
		// there are none).
		ctxtime.Every(bg, time.Second, func() {
			if err := a.meter.Reconcile(bg); err != nil && bg.Err() == nil {
				log.Debug("usage reconcile", "err", err.Error())
			}
		})
	})

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
	if err := a.public.Shutdown(deadline); err != nil {
		log.Warn("public listener did not drain in time", "err", err.Error())
	}
	_ = a.admin.Shutdown(deadline)
	drained := time.Since(step)
	step = time.Now()
	// 2. Drop queued warmups, cancel running ones, release their locks.
	if err := a.warmup.Stop(deadline); err != nil {
		log.Warn("warmup stop", "err", err.Error())
	}
	warmStopped := time.Since(step)
	step = time.Now()
	// 3. Stop the sync loop (and the other background tasks) and flush what
	// is pending. The flush keeps a floor of its own even if a slow drain
	// used the whole deadline: counts are money.
	stopBG()
	<-syncDone
	tasks.Wait()
	if n := a.invalidator.Pending(); n > 0 {
		log.Warn("item cache invalidations still pending at shutdown; those sets live until CACHE_TTL", "users", n)
	}
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(startedStop.Add(cfg.ShutdownTimeout)), cfg.ShutdownTimeout/4))
	defer cancelFlush()
	// Settle counts of unknown outcome first: their corrections join the
	// in-process counts the flush persists.
	if err := settleAll(flushCtx, a.meter, a.cache); err != nil {
		log.Error("counts of unknown outcome left unsettled at shutdown; their served requests are persisted as counted", "err", err.Error(), "epochs", a.cache.Unsettled())
		a.meter.Abandon(flushCtx)
	}
	if err := a.syncer.Flush(flushCtx); err != nil {
		log.Error("final usage flush incomplete; pending deltas stay in Valkey for the next instance", "err", err.Error())
	}
	log.Info("stopped", "drain", drained, "warmup_stop", warmStopped, "flush", time.Since(step))
	return nil
}

// settleAll reconciles until no count of unknown outcome is left (their
// fences pass within a few Valkey timeouts), or ctx ends.
func settleAll(ctx context.Context, m *usage.Service, c *valkey.Cache) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := m.Reconcile(ctx)
		if c.Unsettled() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// sweepEvery runs the sync queue's safety net (it scans the keyspace, so it
// runs rarely and never on the request path).
func sweepEvery(ctx context.Context, q *valkey.SyncQueue, d time.Duration, log *slog.Logger) {
	sweep := func() {
		if res, err := q.Sweep(ctx); err != nil && ctx.Err() == nil {
			log.Warn("usage sync sweep failed", "err", err.Error())
		} else if res.Marked+res.Reverted > 0 {
			log.Warn("usage sync sweep repaired entries", "marked", res.Marked, "reverted", res.Reverted)
		}
	}
	sweep()
	ctxtime.Every(ctx, d, sweep)
}
