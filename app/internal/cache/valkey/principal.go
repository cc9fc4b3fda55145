package valkey

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	key := c.tokenKey(hash)
	var b []byte
	if c.clientCache {
		b, err = c.client.DoCache(ctx, c.client.B().Get().Key(key).Cache(), c.localTTL).AsBytes()
	} else {
		b, err = c.client.Do(ctx, c.client.B().Get().Key(key).Build()).AsBytes()
	}
	switch {
	case errNil(err):
		return domain.Principal{}, false, nil
	case err != nil:
		return domain.Principal{}, false, wrapErr("get principal", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return domain.Principal{}, false, fmt.Errorf("valkey get principal: decode: %w", err)
	}
	return p, true, nil
}

// PutPrincipal caches the principal of a token hash for ttl.
func (c *Cache) PutPrincipal(ctx context.Context, hash domain.TokenHash, p domain.Principal, ttl time.Duration) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("valkey put principal: encode: %w", err)
	}
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	cmd := c.client.B().Set().Key(c.tokenKey(hash)).Value(string(b)).PxMilliseconds(ttlMillis(ttl)).Build()
	if err := c.client.Do(ctx, cmd).Error(); err != nil {
		return wrapErr("put principal", err)
	}
	return nil
}

// DropPrincipal removes the principal of a token hash (revocation). Valkey's
// tracking then pushes an invalidation to every client that cached it.
func (c *Cache) DropPrincipal(ctx context.Context, hash domain.TokenHash) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	if err := c.client.Do(ctx, c.client.B().Del().Key(c.tokenKey(hash)).Build()).Error(); err != nil {
		return wrapErr("drop principal", err)
	}
	return nil
}

func (c *Cache) tokenKey(hash domain.TokenHash) string {
	const tok = ":tok:"
	b := make([]byte, len(c.prefix)+len(tok)+hex.EncodedLen(len(hash)))
	n := copy(b, c.prefix)
	n += copy(b[n:], tok)
	hex.Encode(b[n:], hash[:])
	return string(b)
}
