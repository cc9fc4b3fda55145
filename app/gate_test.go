package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/warmpath/warmpath/app/internal/domain"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/store"
)

// gate holds callers while it is closed: a fault a test places on any
// backend (the embedded one too) and lifts when it chooses, instead of a
// latency it would have to guess.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // non-nil while held
}

// hold makes later callers wait until release.
func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

// release lets every waiting and later caller through.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatedStore is the service's store with gates on the calls tests hold:
// items answers a cold query (ItemsHaving), usage reads a persisted counter
// (what a usage seed, and so every warmup job, waits on), load reads a whole
// item set (warmup only, never a query).
type gatedStore struct {
	store.Store
	items, usage, load *gate
	// failItems makes ItemsHaving fail as an unreachable database does.
	failItems *atomic.Bool
}

func (s gatedStore) LoadItems(ctx context.Context, userID int64, chunkSize int, fn func(chunk []string) error) (int64, error) {
	if err := s.load.wait(ctx); err != nil {
		return 0, err
	}
	return s.Store.LoadItems(ctx, userID, chunkSize, fn)
}

func (s gatedStore) ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error) {
	if err := s.items.wait(ctx); err != nil {
		return nil, err
	}
	if s.failItems.Load() {
		return nil, fmt.Errorf("gated store: %w", domain.ErrUnavailable)
	}
	return s.Store.ItemsHaving(ctx, userID, items)
}

func (s gatedStore) Usage(ctx context.Context, userID int64, start time.Time) (int64, error) {
	if err := s.usage.wait(ctx); err != nil {
		return 0, err
	}
	return s.Store.Usage(ctx, userID, start)
}

// startGated starts the service with its store behind gates (all open); the
// gates are released before the service stops, so a held call never delays
// the shutdown.
func startGated(t *testing.T, env map[string]string) (*instance, *gatedStore) {
	t.Helper()
	gs := &gatedStore{items: &gate{}, usage: &gate{}, load: &gate{}, failItems: &atomic.Bool{}}
	in := startWith(t, env, options{wrapStore: func(s store.Store) store.Store {
		gs.Store = s
		return *gs
	}})
	t.Cleanup(func() { gs.items.release(); gs.usage.release(); gs.load.release() })
	return in, gs
}
