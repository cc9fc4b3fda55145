package auth

import (
	"context"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Cache is the shared principal cache. Implementations MUST be safe for
// concurrent use and SHOULD answer warm lookups without a network round trip.
type Cache interface {
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, bool, error)
	// PutPrincipal keeps p at most maxTTL, and only just past its expiry for
	// a token that expires sooner: the cache owns that lifetime rule.
	PutPrincipal(ctx context.Context, hash domain.TokenHash, p domain.Principal, maxTTL time.Duration) error
}

// Observer is told about every cache lookup (telemetry.Metrics implements it).
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
}

// CachedStore is a Store that answers from a Cache and, on a miss, from the
// Store it wraps, filling the cache. A cache that cannot answer degrades to
// the wrapped store: it never fails authentication.
type CachedStore struct {
	next  Store
	cache Cache
	obs   Observer // optional
	ttl   time.Duration
}

var _ Store = (*CachedStore)(nil)

// NewCachedStore wraps next with cache. ttl bounds how long a principal stays
// cached (10 minutes when zero); revocation also deletes it, so it only
// bounds the staleness of plan changes. obs may be nil.
func NewCachedStore(next Store, cache Cache, obs Observer, ttl time.Duration) *CachedStore {
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	return &CachedStore{next: next, cache: cache, obs: obs, ttl: ttl}
}

// Principal implements Store.
func (c *CachedStore) Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	p, ok, err := c.cache.Principal(ctx, hash)
	switch {
	case err != nil:
		c.observe(ctx, "error")
	case ok:
		c.observe(ctx, "hit")
		return p, nil
	default:
		c.observe(ctx, "miss")
	}
	p, err = c.next.Principal(ctx, hash)
	if err != nil {
		return p, err
	}
	// Best effort: a failed fill only costs the next request a store lookup.
	_ = c.cache.PutPrincipal(ctx, hash, p, c.ttl)
	return p, nil
}

func (c *CachedStore) observe(ctx context.Context, result string) {
	if c.obs != nil {
		c.obs.CacheRequest(ctx, "principal", result)
	}
}
