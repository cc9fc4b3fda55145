package main

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// countingValkey counts, by name, the Valkey commands that requests send
// (calls whose context carries a request's telemetry.Timings: background
// work is not counted). A lookup the client-side cache answers sends
// nothing and is not counted; a principal lookup (GET of a token key) is
// counted apart, as auth's.
type countingValkey struct {
	vk.Client
	prefix string
	mu     sync.Mutex
	n      map[string]int
}

func (c *countingValkey) wrap(cl vk.Client) vk.Client { c.Client = cl; return c }

// name is the counted name of a command: its own, or "GET token" for a
// principal lookup. It must be read before the command is sent (valkey-go
// recycles sent commands).
func (c *countingValkey) name(cmd []string) string {
	n := strings.ToUpper(cmd[0])
	if n == "GET" && len(cmd) > 1 && strings.HasPrefix(cmd[1], c.prefix+":tok:") {
		return "GET token"
	}
	return n
}

func (c *countingValkey) add(ctx context.Context, names ...string) {
	if telemetry.TimingsFrom(ctx) == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		c.n[n]++
	}
}

func (c *countingValkey) Do(ctx context.Context, cmd vk.Completed) vk.ValkeyResult {
	c.add(ctx, c.name(cmd.Commands()))
	return c.Client.Do(ctx, cmd)
}

func (c *countingValkey) DoMulti(ctx context.Context, cmds ...vk.Completed) []vk.ValkeyResult {
	names := make([]string, len(cmds))
	for i, cmd := range cmds {
		names[i] = c.name(cmd.Commands())
	}
	c.add(ctx, names...)
	return c.Client.DoMulti(ctx, cmds...)
}

func (c *countingValkey) DoCache(ctx context.Context, cmd vk.Cacheable, ttl time.Duration) vk.ValkeyResult {
	n := c.name(cmd.Commands())
	r := c.Client.DoCache(ctx, cmd, ttl)
	if !r.IsCacheHit() {
		c.add(ctx, n)
	}
	return r
}

func (c *countingValkey) DoMultiCache(ctx context.Context, multi ...vk.CacheableTTL) []vk.ValkeyResult {
	names := make([]string, len(multi))
	for i, m := range multi {
		names[i] = c.name(m.Cmd.Commands())
	}
	rs := c.Client.DoMultiCache(ctx, multi...)
	for i, r := range rs {
		if !r.IsCacheHit() {
			c.add(ctx, names[i])
		}
	}
	return rs
}

// take returns the counts so far and starts again.
func (c *countingValkey) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := maps.Clone(c.n)
	clear(c.n)
	return n
}

// TestWarmQueryIsOneRoundTrip: a warm metered query (the principal in the
// client-side cache, the counter and the item set in Valkey) sends exactly
// one command to Valkey, the count script that also answers the has-not
// lookup, and nothing else; its answer is the item cache's (a hit), and its
// Server-Timing still tells auth, usage and query apart. On the embedded
// default (no client-side cache: miniredis has no CLIENT TRACKING) each
// query's principal lookup is a GET of its own, which is auth's, not the
// query's; on a real server it is served locally almost always.
func TestWarmQueryIsOneRoundTrip(t *testing.T) {
	env := backendEnv(t)
	// No sync claims between the queries: only the first count starts a
	// pending delta (and sends the one dirty mark).
	env["SYNC_INTERVAL"] = "1h"
	prefix := env["VALKEY_PREFIX"]
	if prefix == "" {
		prefix = "wp"
	}
	cv := &countingValkey{prefix: prefix, n: map[string]int{}}
	in := startWith(t, env, options{interceptValkey: cv.wrap})
	u := in.newUser(t, "pro", nil)
	if r := in.items(t, u.token, []string{"a", "b", "c"}, nil); r.status != 200 {
		t.Fatalf("items: %d %s", r.status, r.raw)
	}
	if r := postWarmup(t, in, u.token); r.status != 202 {
		t.Fatalf("warmup: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, u.token, "ready")
	// The first query counts the first pending unit (and marks the user
	// dirty), and fills the client-side cache with the principal.
	in.query(t, u.token, "a", "x").wantMissing(t, "first query", "x")
	hits := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit")
	cv.take()

	const n = 20
	began := time.Now()
	for i := range n {
		r := in.query(t, u.token, "a", "x", "b", "y", "x")
		r.wantMissing(t, "warm query", "x", "y")
		st := r.header.Get("Server-Timing")
		for _, phase := range []string{"auth;dur=", "usage;dur=", "query;dur=", "total;dur="} {
			if !strings.Contains(st, phase) {
				t.Fatalf("query %d: Server-Timing %q lacks %s", i, st, phase)
			}
		}
	}
	elapsed := time.Since(began)
	got := cv.take()
	if evals := got["EVALSHA"] + got["EVAL"]; evals != n {
		t.Errorf("%d warm queries sent %d count scripts (EVALSHA %d, EVAL %d), want exactly one each", n, evals, got["EVALSHA"], got["EVAL"])
	}
	auth := got["GET token"]
	delete(got, "EVALSHA")
	delete(got, "EVAL")
	delete(got, "GET token")
	if len(got) != 0 {
		t.Errorf("warm queries sent other commands too: %v", got)
	}
	if env["VALKEY_URL"] == "" {
		if auth != n {
			t.Errorf("embedded default: %d principal GETs for %d queries, want one each (no client-side cache)", auth, n)
		}
	} else if limit := int(elapsed/time.Second) + 1; auth > limit {
		// The local copy lives at most 1 s (revocations must be seen within
		// 1 s): at most one lookup per second of the run.
		t.Errorf("%d principal lookups reached the server in %v, want at most %d (served from the client-side cache)", auth, elapsed, limit)
	}
	if d := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit") - hits; d != n {
		t.Errorf("item-cache hits went up by %v, want %d (one per warm query, answered in the count)", d, n)
	}
}
