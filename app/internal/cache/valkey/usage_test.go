package valkey_test

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/cache/valkey"
)

func TestCheckAndCount(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 42
		counter, pending := c.Key(user, "use", "20250314"), c.Key(user, "pending")

		got, err := c.CheckAndCount(ctx, user, day, 7, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := (valkey.UsageResult{Outcome: valkey.Cold}); got != want {
			t.Fatalf("cold: got %+v, want %+v", got, want)
		}
		if _, found, err := c.Usage(ctx, user, day); err != nil || found {
			t.Fatalf("cold check must not create the counter: found=%v err=%v", found, err)
		}
		if p := rawHGet(t, c, pending, "20250314"); p != "" {
			t.Fatalf("cold check must not count pending, got %q", p)
		}

		if err := c.SeedUsage(ctx, user, day, 5, time.Hour); err != nil {
			t.Fatal(err)
		}
		steps := []valkey.UsageResult{
			{Outcome: valkey.Allowed, Used: 6},
			{Outcome: valkey.Allowed, Used: 7},
			{Outcome: valkey.Denied, Used: 7},
			{Outcome: valkey.Denied, Used: 7},
		}
		for i, want := range steps {
			got, err := c.CheckAndCount(ctx, user, day, 7, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("step %d: got %+v, want %+v", i, got, want)
			}
		}
		if used, found, err := c.Usage(ctx, user, day); err != nil || !found || used != 7 {
			t.Fatalf("Usage = %d, %v, %v; want 7, true, nil", used, found, err)
		}
		if p := rawHGet(t, c, pending, "20250314"); p != "2" {
			t.Fatalf("pending = %q, want 2 (only allowed requests count)", p)
		}
		if ttl := rawPTTL(t, c, counter); ttl <= 0 || ttl > time.Hour.Milliseconds() {
			t.Fatalf("counter PTTL = %d, want in (0, 1h]", ttl)
		}
		if ttl := rawPTTL(t, c, pending); ttl != -1 {
			t.Fatalf("pending PTTL = %d, want -1: pending deltas must never expire", ttl)
		}

		// Another period is another counter.
		got, err = c.CheckAndCount(ctx, user, day.AddDate(0, 0, 1), 7, time.Hour)
		if err != nil || got.Outcome != valkey.Cold {
			t.Fatalf("next period: got %+v, %v; want cold", got, err)
		}
	})
}

func TestCheckAndCountReappliesMissingTTL(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		counter := c.Key(1, "use", valkey.PeriodField(day))
		// A counter without TTL (e.g. left by a PERSIST) gets one on the next count.
		if err := c.Client().Do(ctx, c.Client().B().Set().Key(counter).Value("3").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CheckAndCount(ctx, 1, day, 10, time.Minute); err != nil {
			t.Fatal(err)
		}
		if ttl := rawPTTL(t, c, counter); ttl <= 0 || ttl > time.Minute.Milliseconds() {
			t.Fatalf("PTTL = %d, want in (0, 1m]", ttl)
		}
	})
}

func TestSeedUsage(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 7
		pending := c.Key(user, "pending")
		// Three requests counted earlier are not yet in Postgres.
		if err := c.Client().Do(ctx, c.Client().B().Hset().Key(pending).FieldValue().FieldValue(valkey.PeriodField(day), "3").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if err := c.SeedUsage(ctx, user, day, 10, time.Hour); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 13 {
			t.Fatalf("seeded usage = %d, want persisted 10 + pending 3", used)
		}
		// A second seeding (another instance, or a stale Postgres read) loses.
		if err := c.SeedUsage(ctx, user, day, 0, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := c.SeedUsage(ctx, user, day, 10, time.Hour); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 13 {
			t.Fatalf("usage after reseeding = %d, want 13 unchanged", used)
		}
		if ttl := rawPTTL(t, c, c.Key(user, "use", valkey.PeriodField(day))); ttl <= 0 {
			t.Fatalf("seeded counter PTTL = %d, want > 0", ttl)
		}
	})
}

func TestCheckAndCountConcurrent(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const (
			user    = 99
			workers = 400
			limit   = 100
		)
		if err := c.SeedUsage(ctx, user, day, 0, time.Hour); err != nil {
			t.Fatal(err)
		}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			allowed []int64
			denied  int
		)
		start := make(chan struct{})
		for range workers {
			wg.Go(func() {
				<-start
				r, err := c.CheckAndCount(ctx, user, day, limit, time.Hour)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Error(err)
				case r.Outcome == valkey.Allowed:
					allowed = append(allowed, r.Used)
				case r.Outcome == valkey.Denied && r.Used == limit:
					denied++
				default:
					t.Errorf("unexpected result %+v", r)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(allowed) != limit || denied != workers-limit {
			t.Fatalf("allowed %d, denied %d; want exactly %d allowed, %d denied", len(allowed), denied, limit, workers-limit)
		}
		slices.Sort(allowed)
		for i, u := range allowed {
			if u != int64(i+1) {
				t.Fatalf("allowed Used values are not 1..%d: %v", limit, allowed)
			}
		}
		if p := rawHGet(t, c, c.Key(user, "pending"), valkey.PeriodField(day)); p != "100" {
			t.Fatalf("pending = %q, want 100", p)
		}
	})
}

func TestSeedUsageCountsInFlightDeltas(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 8
		b := c.Client().B()
		for _, cmd := range []valkeygo.Completed{
			b.Hset().Key(c.Key(user, "pending")).FieldValue().FieldValue("20250314", "3").FieldValue("20250315", "100").Build(),
			// Claimed by sync batches, maybe not yet in Postgres.
			b.Hset().Key(c.Key(user, "inflight")).FieldValue().FieldValue("b1|20250314", "2").FieldValue("b2|20250314", "4").FieldValue("b2|20250315", "50").Build(),
		} {
			if err := c.Client().Do(ctx, cmd).Error(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.SeedUsage(ctx, user, day, 10, time.Hour); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 19 {
			t.Fatalf("seeded usage = %d, want persisted 10 + pending 3 + in flight 2+4", used)
		}
	})
}

// TestAfterCount: the follow-up command is pipelined after the count, also
// when the script is not yet loaded (a fresh miniredis answers NOSCRIPT
// first), and the count still happens exactly once.
func TestAfterCount(t *testing.T) {
	m := miniredis.RunT(t)
	var calls atomic.Int64
	c, err := valkey.New(t.Context(), valkey.Config{
		URL:                "redis://" + m.Addr(),
		DisableClientCache: true,
		AfterCount: func(client valkeygo.Client, userID int64) valkeygo.Completed {
			calls.Add(1)
			return client.B().Zadd().Key("wp:{sync}:dirty").Nx().ScoreMember().ScoreMember(1, strconv.FormatInt(userID, 10)).Build()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if err := c.SeedUsage(ctx, 5, day, 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	for i := range int64(3) {
		r, err := c.CheckAndCount(ctx, 5, day, 2, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		want := valkey.UsageResult{Outcome: valkey.Allowed, Used: i + 1}
		if i == 2 {
			want = valkey.UsageResult{Outcome: valkey.Denied, Used: 2}
		}
		if r != want {
			t.Fatalf("call %d: %+v, want %+v", i, r, want)
		}
	}
	// 3 calls + 1 resend after the first call's NOSCRIPT (EVAL caches the
	// script, so later EVALSHAs succeed).
	if n := calls.Load(); n != 4 {
		t.Fatalf("AfterCount built %d commands, want 4", n)
	}
	members, err := m.ZMembers("wp:{sync}:dirty")
	if err != nil || !slices.Equal(members, []string{"5"}) {
		t.Fatalf("dirty index = %v, %v; want [5]", members, err)
	}
	if p := m.HGet("wp:{u:5}:pending", "20250314"); p != "2" {
		t.Fatalf("pending = %q, want 2", p)
	}
}
