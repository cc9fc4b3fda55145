package engine

import (
	"context"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Cache is the item-set cache; see the valkey package for the versioned
// protocol that keeps it exact under concurrent writes. Implementations MUST
// be safe for concurrent use.
type Cache interface {
	HasNot(ctx context.Context, userID int64, items []string) (missing []string, warm bool, err error)
	ApplyItems(ctx context.Context, userID int64, version int64, add, remove []string) error
	InvalidateItems(ctx context.Context, userID int64, atLeastVersion int64) error
}

// Observer is told about item-set cache lookups (telemetry.Metrics).
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
}

// Retrier takes over an invalidation that failed after a committed change
// (Invalidator implements it).
type Retrier interface {
	Retry(userID, version int64)
}

// CachedItems is an Items that answers from a Cache when the user's set is
// warm and from the Items it wraps otherwise, and mirrors every committed
// change into the cache.
type CachedItems struct {
	next  Items
	cache Cache
	obs   Observer // optional
	retry Retrier  // optional
}

var _ Items = (*CachedItems)(nil)

// NewCachedItems wraps next with cache. obs and retry may be nil.
func NewCachedItems(next Items, cache Cache, obs Observer, retry Retrier) *CachedItems {
	return &CachedItems{next: next, cache: cache, obs: obs, retry: retry}
}

// HasNot implements Items: a cache that is cold or down degrades to next.
func (c *CachedItems) HasNot(ctx context.Context, userID int64, items []string) (Result, error) {
	missing, warm, err := c.cache.HasNot(ctx, userID, items)
	switch {
	case err != nil:
		c.observe(ctx, "error")
	case warm:
		c.observe(ctx, "hit")
		return Result{Missing: missing, Source: SourceCache}, nil
	default:
		c.observe(ctx, "miss")
	}
	return c.next.HasNot(ctx, userID, items)
}

// Answered is the Result of a lookup the cache answered ahead of HasNot
// (Engine.Answered): a hit, like one HasNot got from the cache itself.
func (c *CachedItems) Answered(ctx context.Context, missing []string) Result {
	c.observe(ctx, "hit")
	return Result{Missing: missing, Source: SourceCache}
}

// Update implements Items. next commits first; then the change is mirrored
// into the cache under the set's version.
func (c *CachedItems) Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	ch, err := c.next.Update(ctx, userID, add, remove, maxItems)
	if err != nil {
		return ch, err
	}
	if err := c.cache.ApplyItems(ctx, userID, ch.Version, add, remove); err != nil {
		// The change is committed; a cache that missed it must not answer
		// for this user. Invalidate (also versioned), and if even that
		// fails, hand it to the background retrier.
		if ierr := c.cache.InvalidateItems(context.WithoutCancel(ctx), userID, ch.Version); ierr != nil && c.retry != nil {
			c.retry.Retry(userID, ch.Version)
		}
	}
	return ch, nil
}

func (c *CachedItems) observe(ctx context.Context, result string) {
	if c.obs != nil {
		c.obs.CacheRequest(ctx, "items", result)
	}
}
