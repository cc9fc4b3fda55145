package valkey_test

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
)

func testPrincipal() domain.Principal {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	return domain.Principal{
		UserID:    12,
		TokenID:   34,
		Plan:      domain.Plan{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10000},
		ExpiresAt: &exp,
	}
}

func TestPrincipalRoundTrip(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		hash := domain.TokenHash(sha256.Sum256([]byte("wp_roundtrip")))
		if _, found, err := c.Principal(ctx, hash); err != nil || found {
			t.Fatalf("before put: found=%v err=%v", found, err)
		}
		want := testPrincipal()
		if err := c.PutPrincipal(ctx, hash, want, time.Hour); err != nil {
			t.Fatal(err)
		}
		// The miss above is cached locally too (on the real server), until the
		// server's invalidation push for the SET arrives: poll.
		got := waitPrincipal(t, c, hash, true, time.Now())
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("principal (-want +got):\n%s", diff)
		}
		if err := c.DropPrincipal(ctx, hash); err != nil {
			t.Fatal(err)
		}
		waitRevoked(t, c, hash, time.Now())
		// A lookup that read the token before it was revoked must not put it
		// back (it would be accepted again until the TTL).
		if err := c.PutPrincipal(ctx, hash, want, time.Hour); err != nil {
			t.Fatal(err)
		}
		if p, found, err := c.Principal(ctx, hash); err != nil || !found || p.RevokedAt == nil {
			t.Fatalf("after a racing put: %+v found=%v err=%v; want still revoked", p, found, err)
		}
	})
}

// waitRevoked polls c until the principal reads as revoked, failing when that
// takes longer than the local-cache bound (MaxLocalTTL) from since.
func waitRevoked(t *testing.T, c *valkey.Cache, hash domain.TokenHash, since time.Time) {
	t.Helper()
	for {
		p, found, err := c.Principal(t.Context(), hash)
		if err != nil {
			t.Fatal(err)
		}
		if found && p.RevokedAt != nil {
			return
		}
		if time.Since(since) > valkey.MaxLocalTTL {
			t.Fatalf("not revoked %v after the change: %+v found=%v", time.Since(since), p, found)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}

// countingClient records what DoCache served from the local cache.
type countingClient struct {
	valkeygo.Client
	mu      sync.Mutex
	calls   int
	hits    int
	maxPTTL int64
}

func (c *countingClient) DoCache(ctx context.Context, cmd valkeygo.Cacheable, ttl time.Duration) valkeygo.ValkeyResult {
	r := c.Client.DoCache(ctx, cmd, ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if r.IsCacheHit() {
		c.hits++
	}
	c.maxPTTL = max(c.maxPTTL, r.CachePTTL())
	return r
}

func (c *countingClient) stats() (calls, hits int, maxPTTL int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.hits, c.maxPTTL
}

// TestPrincipalRevocationAcrossClients: instance A serves a principal from its
// local cache without a round trip; instance B revokes it; A stops serving it
// within 1 s (the contract), through the server's invalidation push.
func TestPrincipalRevocationAcrossClients(t *testing.T) {
	prefix := valkeytest.Prefix()
	base := valkeytest.NewWith(t, valkey.Config{Prefix: prefix})
	counting := &countingClient{Client: base.Client()}
	a := valkey.NewFromClient(counting, valkey.Config{Prefix: prefix})
	b := valkeytest.NewWith(t, valkey.Config{Prefix: prefix})
	ctx := t.Context()

	hash := domain.TokenHash(sha256.Sum256([]byte("wp_revoked")))
	if err := b.PutPrincipal(ctx, hash, testPrincipal(), time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, found, err := a.Principal(ctx, hash); err != nil || !found {
			t.Fatalf("A: found=%v err=%v", found, err)
		}
	}
	calls, hits, maxPTTL := counting.stats()
	if calls != 3 || hits != 2 {
		t.Fatalf("A: %d DoCache calls, %d local hits; want 3 calls, 2 hits (the first fills the cache)", calls, hits)
	}
	if maxPTTL <= 0 || maxPTTL > valkey.MaxLocalTTL.Milliseconds() {
		t.Fatalf("local cache PTTL = %d ms, want in (0, %d]", maxPTTL, valkey.MaxLocalTTL.Milliseconds())
	}

	if err := b.DropPrincipal(ctx, hash); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, a, hash, time.Now())
}

// waitPrincipal polls c until the principal's presence is wantFound, failing
// when that takes longer than the local-cache bound (MaxLocalTTL) from since.
func waitPrincipal(t *testing.T, c *valkey.Cache, hash domain.TokenHash, wantFound bool, since time.Time) domain.Principal {
	t.Helper()
	deadline := since.Add(valkey.MaxLocalTTL)
	for {
		p, found, err := c.Principal(t.Context(), hash)
		if err != nil {
			t.Fatal(err)
		}
		if found == wantFound {
			t.Logf("found=%v visible after %v", found, time.Since(since))
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("found=%v still served %v after the change", found, time.Since(since))
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronisation
	}
}
