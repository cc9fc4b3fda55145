package valkey_test

import (
	"errors"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
)

// keyed is a count of user 7 in period day (limit 100) under key k.
func keyed(k, fp string, lease time.Duration) valkey.CountRequest {
	return valkey.CountRequest{
		UserID: 7, Start: day, Reset: reset(day), Limit: 100,
		Idem: domain.IdemKey{Key: k, Fingerprint: fp}, IdemTTL: time.Hour, IdemLease: lease,
	}
}

func TestCountIdempotencyKey(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		if err := c.SeedUsage(ctx, 7, day, reset(day), 0); err != nil {
			t.Fatal(err)
		}
		count := func(r valkey.CountRequest) valkey.UsageResult {
			t.Helper()
			res, err := c.Count(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		used := func() int64 {
			t.Helper()
			n, _, err := c.Usage(ctx, 7, day)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}

		if got := count(keyed("k1", "f1", time.Hour)); got.Outcome != valkey.Allowed || got.Used != 1 {
			t.Fatalf("first use of a key: got %+v, want allowed, used 1", got)
		}
		// While the first request holds the key (no answer stored yet).
		got := count(keyed("k1", "f1", time.Hour))
		if got.Outcome != domain.UsageInUse || got.RetryAfter <= 0 || got.RetryAfter > time.Hour {
			t.Fatalf("repeat while in flight: got %+v, want in use with a retry within the lease", got)
		}
		if got := count(keyed("k1", "other body", time.Hour)); got.Outcome != domain.UsageReused {
			t.Fatalf("key with another request: got %+v, want reused", got)
		}
		answer := domain.StoredAnswer{Status: 200, Body: `{"missing":["a"]}`}
		if err := c.IdemStore(ctx, 7, domain.IdemKey{Key: "k1", Fingerprint: "f1"}, answer); err != nil {
			t.Fatal(err)
		}
		if got := count(keyed("k1", "f1", time.Hour)); got.Outcome != domain.UsageReplay || got.Answer != answer {
			t.Fatalf("repeat after the answer: got %+v, want replay of %+v", got, answer)
		}
		if got := count(keyed("k1", "other body", time.Hour)); got.Outcome != domain.UsageReused {
			t.Fatalf("stored key with another request: got %+v, want reused", got)
		}
		if n := used(); n != 1 {
			t.Fatalf("counter after replays and refusals = %d, want 1 (counted once)", n)
		}

		// A key whose first request died (its lease runs out, no answer):
		// the retry is answered afresh and not counted again.
		if got := count(keyed("k2", "f2", time.Millisecond)); got.Outcome != valkey.Allowed || got.Used != 2 {
			t.Fatalf("k2 first use: got %+v, want allowed, used 2", got)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			got = count(keyed("k2", "f2", time.Hour))
			if got.Outcome != domain.UsageInUse || time.Now().After(deadline) {
				break
			}
		}
		if got.Outcome != domain.UsageNotCounted || got.Used != 2 {
			t.Fatalf("retry after a lost answer: got %+v, want not counted, used 2", got)
		}
		if got := count(keyed("k2", "f2", time.Hour)); got.Outcome != domain.UsageInUse {
			t.Fatalf("the retry holds the key again: got %+v, want in use", got)
		}

		// A refunded keyed count forgets its key: a retry counts afresh.
		if got := count(keyed("k3", "f3", time.Hour)); got.Outcome != valkey.Allowed || got.Used != 3 {
			t.Fatalf("k3: got %+v, want allowed, used 3", got)
		}
		if err := c.RefundIdem(ctx, 7, day, domain.IdemKey{Key: "k3", Fingerprint: "f3"}); err != nil {
			t.Fatal(err)
		}
		if got := count(keyed("k3", "f3", time.Hour)); got.Outcome != valkey.Allowed || got.Used != 3 {
			t.Fatalf("k3 after its refund: got %+v, want allowed, used 3", got)
		}
		if p := rawHGet(t, c, c.Keys().Pending(7), valkey.PeriodField(day)); p != "3" {
			t.Fatalf("pending delta = %q, want 3 (one per counted request)", p)
		}

		// Over quota, a key is not taken: a retry after the reset may count.
		full := keyed("k4", "f4", time.Hour)
		full.Limit = 3
		if got := count(full); got.Outcome != valkey.Denied {
			t.Fatalf("over quota: got %+v, want denied", got)
		}
		if got := count(keyed("k4", "f4", time.Hour)); got.Outcome != valkey.Allowed {
			t.Fatalf("the key of a denied request stays free: got %+v, want allowed", got)
		}

		// Keys are per user.
		other := keyed("k1", "f1", time.Hour)
		other.UserID = 8
		if err := c.SeedUsage(ctx, 8, day, reset(day), 0); err != nil {
			t.Fatal(err)
		}
		if got := count(other); got.Outcome != valkey.Allowed || got.Used != 1 {
			t.Fatalf("another user's key of the same name: got %+v, want its own count", got)
		}
	})
}

func TestIdemBegin(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		k := domain.IdemKey{Key: "items-1", Fingerprint: "f"}
		begin := func(k domain.IdemKey) domain.UsageOutcome {
			t.Helper()
			res, err := c.IdemBegin(ctx, 7, k, time.Hour, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return res.Outcome
		}
		if o := begin(k); o != valkey.Allowed {
			t.Fatalf("new key: %v, want allowed", o)
		}
		if o := begin(k); o != domain.UsageInUse {
			t.Fatalf("held key: %v, want in use", o)
		}
		if o := begin(domain.IdemKey{Key: k.Key, Fingerprint: "g"}); o != domain.UsageReused {
			t.Fatalf("held key, other request: %v, want reused", o)
		}
		if err := c.IdemForget(ctx, 7, k); err != nil {
			t.Fatal(err)
		}
		if o := begin(k); o != valkey.Allowed {
			t.Fatalf("forgotten key: %v, want allowed again", o)
		}
		a := domain.StoredAnswer{Status: 200, Body: `{"added":1,"removed":0,"total":1}`}
		if err := c.IdemStore(ctx, 7, k, a); err != nil {
			t.Fatal(err)
		}
		res, err := c.IdemBegin(ctx, 7, k, time.Hour, time.Hour)
		if err != nil || res.Outcome != domain.UsageReplay || res.Answer != a {
			t.Fatalf("stored key: %+v %v, want replay of %+v", res, err, a)
		}
		if ttl := rawPTTL(t, c, c.Keys().Idem(7, k.Key)); ttl <= 0 || ttl > time.Hour.Milliseconds() {
			t.Fatalf("key record TTL = %d ms, want within IdemTTL", ttl)
		}
	})
}

// A count that reaches the server after its fence changes nothing and says
// so (not an unknown outcome).
func TestCountFenced(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		if err := c.SeedUsage(ctx, 9, day, reset(day), 4); err != nil {
			t.Fatal(err)
		}
		valkey.SkewFences(c, -time.Hour)
		_, err := c.CheckAndCount(ctx, 9, day, reset(day), 100)
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("fenced count: err = %v, want an unavailable error", err)
		}
		var s interface{ Settle(bool) }
		if errors.As(err, &s) {
			t.Fatalf("a fenced count is known not applied, got an unknown outcome: %v", err)
		}
		if n, _, _ := c.Usage(ctx, 9, day); n != 4 {
			t.Fatalf("counter after a fenced count = %d, want 4 (unchanged)", n)
		}
		if c.Unsettled() != 0 {
			t.Fatalf("unsettled = %d, want 0", c.Unsettled())
		}
	})
}
