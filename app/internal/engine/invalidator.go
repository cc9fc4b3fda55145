package engine

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// ItemInvalidator is what the Invalidator needs from the item cache.
type ItemInvalidator interface {
	InvalidateItems(ctx context.Context, userID int64, atLeastVersion int64) error
}

// InvalidatorConfig configures an Invalidator; zero fields take defaults.
type InvalidatorConfig struct {
	Cache  ItemInvalidator
	Logger *slog.Logger
	// Pending bounds the users waiting for a retry (10,000). A retry asked
	// for past it is dropped and logged: the set then lives until CACHE_TTL.
	Pending int
	// Attempts per user before giving up (20).
	Attempts int
	// First and Max bound the capped exponential backoff between rounds
	// (100 ms, 5 s).
	First, Max time.Duration
}

// Invalidator retries, in the background, the invalidation of cached item
// sets that a committed change could not reach. One worker (Run) works a
// bounded set of pending users, the highest version asked for per user,
// with capped backoff; it stops when Run's context is done, so shutdown
// owns it.
type Invalidator struct {
	cfg  InvalidatorConfig
	wake chan struct{}

	mu      sync.Mutex
	pending map[int64]*retry
}

type retry struct {
	version  int64
	attempts int
}

var _ Retrier = (*Invalidator)(nil)

// NewInvalidator returns an Invalidator; start its Run.
func NewInvalidator(cfg InvalidatorConfig) *Invalidator {
	if cfg.Pending <= 0 {
		cfg.Pending = 10_000
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 20
	}
	if cfg.First <= 0 {
		cfg.First = 100 * time.Millisecond
	}
	if cfg.Max <= 0 {
		cfg.Max = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Invalidator{cfg: cfg, wake: make(chan struct{}, 1), pending: map[int64]*retry{}}
}

// Retry implements Retrier: it never blocks.
func (v *Invalidator) Retry(userID, version int64) {
	v.mu.Lock()
	r, ok := v.pending[userID]
	switch {
	case ok:
		r.version = max(r.version, version)
	case len(v.pending) >= v.cfg.Pending:
		v.mu.Unlock()
		v.cfg.Logger.Error("item cache invalidation dropped: too many pending", "user_id", userID, "version", version)
		return
	default:
		v.pending[userID] = &retry{version: version}
	}
	v.mu.Unlock()
	v.cfg.Logger.Error("item cache could not be updated nor invalidated; retrying in background", "user_id", userID, "version", version)
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// Pending returns the number of users waiting for a retry.
func (v *Invalidator) Pending() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.pending)
}

// Run retries pending invalidations until ctx is done.
func (v *Invalidator) Run(ctx context.Context) {
	delay := v.cfg.First
	t := time.NewTimer(0)
	<-t.C
	for {
		if v.Pending() == 0 {
			delay = v.cfg.First
			select {
			case <-ctx.Done():
				return
			case <-v.wake:
			}
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		v.round(ctx)
		delay = min(delay*2, v.cfg.Max)
	}
}

// round tries every pending user once.
func (v *Invalidator) round(ctx context.Context) {
	v.mu.Lock()
	batch := make(map[int64]retry, len(v.pending))
	for u, r := range v.pending {
		r.attempts++
		batch[u] = *r
	}
	v.mu.Unlock()
	for u, r := range batch {
		if ctx.Err() != nil {
			return
		}
		err := v.cfg.Cache.InvalidateItems(ctx, u, r.version)
		v.mu.Lock()
		cur := v.pending[u]
		done := err == nil && cur != nil && cur.version <= r.version
		gaveUp := err != nil && r.attempts >= v.cfg.Attempts
		if done || gaveUp {
			delete(v.pending, u)
		}
		v.mu.Unlock()
		switch {
		case done:
			v.cfg.Logger.Info("item cache invalidated after retry", "user_id", u, "attempt", r.attempts)
		case gaveUp:
			v.cfg.Logger.Error("gave up invalidating item cache", "user_id", u)
		}
	}
}
