package auth

import (
	"context"
	"errors"
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
	now   func() time.Time
}

var _ Store = (*CachedStore)(nil)

// NewCachedStore wraps next with cache. ttl bounds how long a principal stays
// cached (10 minutes when zero); revocation also deletes it, so it only
// bounds the staleness of plan changes. obs may be nil.
func NewCachedStore(next Store, cache Cache, obs Observer, ttl time.Duration) *CachedStore {
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	return &CachedStore{next: next, cache: cache, obs: obs, ttl: ttl, now: time.Now}
}

// Principal implements Store.
//
// Only a principal that may be used now is answered from the cache. A
// revoked or expired one (the cache keeps a revoked token's tombstone) is
// looked up in the wrapped store like an unknown token, and never put back:
// every refused token costs exactly one cache lookup and one store lookup,
// whether it is unknown, revoked or expired, so the time of a refusal does
// not tell which it was. Only if the store cannot answer is the cached
// refusal used, so revoked tokens stay refused through a store outage.
func (c *CachedStore) Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	cached, ok, err := c.cache.Principal(ctx, hash)
	switch {
	case err != nil:
		c.observe(ctx, "error")
		ok = false
	case ok:
		c.observe(ctx, "hit")
		if usable(cached, c.now()) {
			return cached, nil
		}
	default:
		c.observe(ctx, "miss")
	}
	p, err := c.next.Principal(ctx, hash)
	if err != nil {
		if ok && !errors.Is(err, domain.ErrNotFound) {
			return cached, nil
		}
		return p, err
	}
	if !usable(p, c.now()) {
		return p, nil
	}
	// Best effort: a failed fill only costs the next request a store lookup.
	_ = c.cache.PutPrincipal(ctx, hash, p, c.ttl)
	return p, nil
}

// Prime puts the principal of a token just created into the cache, so that
// the token's first request (a login's warmup) is answered from the cache
// like every later one instead of from the store. The principal is read from
// the wrapped store, the one place that builds it. Best effort, as a fill
// on a miss: an error only leaves the first request to look it up.
func (c *CachedStore) Prime(ctx context.Context, hash domain.TokenHash) error {
	p, err := c.next.Principal(ctx, hash)
	if err != nil {
		return err
	}
	if !usable(p, c.now()) {
		return nil
	}
	return c.cache.PutPrincipal(ctx, hash, p, c.ttl)
}

// usable reports whether p is neither revoked nor expired at now.
func usable(p domain.Principal, now time.Time) bool {
	return (p.RevokedAt == nil || p.RevokedAt.After(now)) && (p.ExpiresAt == nil || p.ExpiresAt.After(now))
}

func (c *CachedStore) observe(ctx context.Context, result string) {
	if c.obs != nil {
		c.obs.CacheRequest(ctx, "principal", result)
	}
}
