package valkey

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Principal returns the principal cached for a token hash. With client-side
// caching on, the value is kept in process for at most LocalTTL and Valkey
// pushes an invalidation when the key changes (RESP3 tracking), so a warm call
// does not touch the network. A miss is cached locally as well, so a
// principal put by this instance may read as not found for a moment, until
// the invalidation push arrives (bounded by LocalTTL); callers that just put
// a principal already hold it.
func (c *Cache) Principal(ctx context.Context, hash domain.TokenHash) (p domain.Principal, found bool, err error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	key := c.keys.Token(hash)
	var b []byte
	if c.clientCache {
		b, err = c.lookup.DoCache(ctx, c.lookup.B().Get().Key(key).Cache(), c.localTTL).AsBytes()
	} else {
		b, err = c.client.Do(ctx, c.client.B().Get().Key(key).Build()).AsBytes()
	}
	switch {
	case errNil(err):
		return domain.Principal{}, false, nil
	case err != nil:
		return domain.Principal{}, false, wrapErr("get principal", err)
	}
	if string(b) == tombstone {
		return domain.Principal{RevokedAt: &revokedSentinel}, true, nil
	}
	if p, ok := c.principals.get(b); ok {
		return p, true, nil
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return domain.Principal{}, false, fmt.Errorf("valkey get principal: decode: %w", err)
	}
	c.principals.put(b, p)
	return p, true, nil
}

// principalMemo maps cached principal bytes to their decoding, so a warm
// lookup costs a map read instead of a JSON decode. Keys are the exact bytes,
// so an entry can never be stale; the map is cleared when it grows past
// memoMax, which bounds memory without bookkeeping.
type principalMemo struct {
	mu sync.RWMutex
	m  map[string]domain.Principal
}

const memoMax = 100_000

func (pm *principalMemo) get(b []byte) (domain.Principal, bool) {
	pm.mu.RLock()
	p, ok := pm.m[string(b)] // no allocation: the compiler keys by the bytes
	pm.mu.RUnlock()
	return p, ok
}

func (pm *principalMemo) put(b []byte, p domain.Principal) {
	pm.mu.Lock()
	if pm.m == nil || len(pm.m) >= memoMax {
		pm.m = make(map[string]domain.Principal, 1024)
	}
	pm.m[string(b)] = p
	pm.mu.Unlock()
}

// tombstone is what a revoked token's key holds, for tombstoneTTL: lookups
// answer "revoked" without a round trip to Postgres, and PutPrincipal never
// overwrites it.
const (
	tombstone    = "revoked"
	tombstoneTTL = 72 * time.Hour // longer than any principal TTL in flight
)

// revokedSentinel is the RevokedAt of a tombstone's principal (the store has
// the real time; the cache only needs to say "revoked").
var revokedSentinel = time.Unix(0, 0).UTC()

// PrincipalTTL is how long a principal may stay in the shared cache: maxTTL
// (CACHE_TTL), or, for a token that expires sooner, just long enough past its
// expiry to answer "expired" from the cache. It is the one lifetime rule of
// cached principals (PutPrincipal applies it).
func PrincipalTTL(p domain.Principal, maxTTL time.Duration, now time.Time) time.Duration {
	if p.ExpiresAt != nil {
		if until := p.ExpiresAt.Sub(now); until > 0 && until < maxTTL {
			return until + time.Second
		}
	}
	return maxTTL
}

// PutPrincipal caches the principal of a token hash for PrincipalTTL(p,
// maxTTL, now), unless the token was revoked meanwhile (see putPrincipalLua).
func (c *Cache) PutPrincipal(ctx context.Context, hash domain.TokenHash, p domain.Principal, maxTTL time.Duration) error {
	ttl := PrincipalTTL(p, maxTTL, c.now())
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("valkey put principal: encode: %w", err)
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	err = c.scripts.putPrincipal.Exec(ctx, c.client, []string{c.keys.Token(hash)},
		[]string{string(b), strconv.FormatInt(ttlMillis(ttl), 10), tombstone}).Error()
	if err != nil {
		return wrapErr("put principal", err)
	}
	return nil
}

// DropPrincipal marks a token hash revoked (a tombstone, not a delete, so a
// lookup racing the revocation cannot put the principal back). Valkey's
// tracking pushes an invalidation to every client that cached the key.
func (c *Cache) DropPrincipal(ctx context.Context, hash domain.TokenHash) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	cmd := c.client.B().Set().Key(c.keys.Token(hash)).Value(tombstone).PxMilliseconds(tombstoneTTL.Milliseconds()).Build()
	if err := c.client.Do(ctx, cmd).Error(); err != nil {
		return wrapErr("drop principal", err)
	}
	return nil
}
