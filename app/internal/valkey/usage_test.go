package valkey_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

func TestCheckAndCount(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 42
		counter, pending := c.Keys().Counter(user, day), c.Keys().Pending(user)

		got, err := c.CheckAndCount(ctx, user, day, reset(day), 7)
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

		if err := c.SeedUsage(ctx, user, day, reset(day), 5); err != nil {
			t.Fatal(err)
		}
		steps := []valkey.UsageResult{
			{Outcome: valkey.Allowed, Used: 6},
			{Outcome: valkey.Allowed, Used: 7},
			{Outcome: valkey.Denied, Used: 7},
			{Outcome: valkey.Denied, Used: 7},
		}
		for i, want := range steps {
			got, err := c.CheckAndCount(ctx, user, day, reset(day), 7)
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
		if ttl := rawPTTL(t, c, counter); ttl <= (counterTTL-time.Minute).Milliseconds() || ttl > counterTTL.Milliseconds() {
			t.Fatalf("counter PTTL = %d, want in (%v - 1m, %v]: until the period's reset plus slack", ttl, counterTTL, counterTTL)
		}
		if ttl := rawPTTL(t, c, pending); ttl != -1 {
			t.Fatalf("pending PTTL = %d, want -1: pending deltas must never expire", ttl)
		}

		// Another period is another counter.
		got, err = c.CheckAndCount(ctx, user, day.AddDate(0, 0, 1), reset(day.AddDate(0, 0, 1)), 7)
		if err != nil || got.Outcome != valkey.Cold {
			t.Fatalf("next period: got %+v, %v; want cold", got, err)
		}
	})
}

func TestCheckAndCountReappliesMissingTTL(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		counter := c.Keys().Counter(1, day)
		// A counter without TTL (e.g. left by a PERSIST) gets one on the next count.
		if err := c.Client().Do(ctx, c.Client().B().Set().Key(counter).Value("3").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CheckAndCount(ctx, 1, day, reset(day), 10); err != nil {
			t.Fatal(err)
		}
		if ttl := rawPTTL(t, c, counter); ttl <= (counterTTL-time.Minute).Milliseconds() || ttl > counterTTL.Milliseconds() {
			t.Fatalf("PTTL = %d, want in (%v - 1m, %v]", ttl, counterTTL, counterTTL)
		}
	})
}

func TestSeedUsage(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 7
		pending := c.Keys().Pending(user)
		// Three requests counted earlier are not yet in Postgres.
		if err := c.Client().Do(ctx, c.Client().B().Hset().Key(pending).FieldValue().FieldValue(valkey.PeriodField(day), "3").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if err := c.SeedUsage(ctx, user, day, reset(day), 10); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 13 {
			t.Fatalf("seeded usage = %d, want persisted 10 + pending 3", used)
		}
		// A second seeding (another instance, or a stale Postgres read) loses.
		if err := c.SeedUsage(ctx, user, day, reset(day), 0); err != nil {
			t.Fatal(err)
		}
		if err := c.SeedUsage(ctx, user, day, reset(day), 10); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 13 {
			t.Fatalf("usage after reseeding = %d, want 13 unchanged", used)
		}
		if ttl := rawPTTL(t, c, c.Keys().Counter(user, day)); ttl <= (counterTTL-time.Minute).Milliseconds() || ttl > counterTTL.Milliseconds() {
			t.Fatalf("seeded counter PTTL = %d, want in (%v - 1m, %v]: until the period's reset plus slack", ttl, counterTTL, counterTTL)
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
		if err := c.SeedUsage(ctx, user, day, reset(day), 0); err != nil {
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
				r, err := c.CheckAndCount(ctx, user, day, reset(day), limit)
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
		if p := rawHGet(t, c, c.Keys().Pending(user), valkey.PeriodField(day)); p != "100" {
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
			b.Hset().Key(c.Keys().Pending(user)).FieldValue().FieldValue("20250314", "3").FieldValue("20250315", "100").Build(),
			// Claimed by sync batches, maybe not yet in Postgres.
			b.Hset().Key(c.Keys().Inflight(user)).FieldValue().FieldValue("b1|20250314", "2").FieldValue("b2|20250314", "4").FieldValue("b2|20250315", "50").Build(),
		} {
			if err := c.Client().Do(ctx, cmd).Error(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.SeedUsage(ctx, user, day, reset(day), 10); err != nil {
			t.Fatal(err)
		}
		if used, _, _ := c.Usage(ctx, user, day); used != 19 {
			t.Fatalf("seeded usage = %d, want persisted 10 + pending 3 + in flight 2+4", used)
		}
	})
}

// TestCountMarksDirty: the count that starts a user's pending delta marks the
// user dirty for the usage sync, after the count, also when the script is
// not yet loaded (a fresh miniredis answers NOSCRIPT first and the source is
// resent), and the count still happens exactly once. A count that finds a
// delta waiting sends no mark (a claim removes users from the index before it
// moves their deltas, so the waiting delta is either marked or about to be
// claimed); the next delta after a claim marks again. The mark keeps the
// first time (the adapter's clock) and a refund marks again.
func TestCountMarksDirty(t *testing.T) {
	m, c := onMiniredis(t)
	ctx := t.Context()
	k := c.Keys()
	if err := c.SeedUsage(ctx, 5, day, reset(day), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.ZMembers(k.SyncDirty()); len(n) != 0 {
		t.Fatalf("dirty index after a seed = %v, want empty (only counts mark)", n)
	}
	for i := range int64(3) {
		r, err := c.CheckAndCount(ctx, 5, day, reset(day), 2)
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
	members, err := m.ZMembers(k.SyncDirty())
	if err != nil || !slices.Equal(members, []string{"5"}) {
		t.Fatalf("dirty index = %v, %v; want [5]", members, err)
	}
	if score, err := m.ZScore(k.SyncDirty(), "5"); err != nil || int64(score) != testNow.UnixMilli() {
		t.Fatalf("dirty score = %v, %v; want the adapter clock's %d", score, err, testNow.UnixMilli())
	}
	if p := m.HGet(k.Pending(5), "20250314"); p != "2" {
		t.Fatalf("pending = %q, want 2", p)
	}
	// A refund marks the user again (the sync must carry the -1).
	if _, err := m.ZRem(k.SyncDirty(), "5"); err != nil {
		t.Fatal(err)
	}
	if err := c.Refund(ctx, 5, day); err != nil {
		t.Fatal(err)
	}
	if members, _ := m.ZMembers(k.SyncDirty()); !slices.Equal(members, []string{"5"}) {
		t.Fatalf("dirty index after a refund = %v, want [5]", members)
	}
	if p := m.HGet(k.Pending(5), "20250314"); p != "1" {
		t.Fatalf("pending after a refund = %q, want 1", p)
	}

	// A delta already waiting: no mark per count.
	u := int64(6)
	if err := c.SeedUsage(ctx, u, day, reset(day), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckAndCount(ctx, u, day, reset(day), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ZRem(k.SyncDirty(), "6"); err != nil { // as a claim does first
		t.Fatal(err)
	}
	if _, err := c.CheckAndCount(ctx, u, day, reset(day), 100); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.ZScore(k.SyncDirty(), "6"); ok != 0 {
		t.Fatalf("a count that found a waiting delta marked the user (score %v)", ok)
	}
	// The claim then moves the delta (pending back to 0): the next count marks.
	m.HDel(k.Pending(u), "20250314")
	if _, err := c.CheckAndCount(ctx, u, day, reset(day), 100); err != nil {
		t.Fatal(err)
	}
	if members, _ := m.ZMembers(k.SyncDirty()); !slices.Contains(members, "6") {
		t.Fatalf("the first delta after a claim did not mark: dirty index %v", members)
	}
}

// TestCountKeepsTTLs: the count that starts a pending delta (the first
// after a sync claim, the first of a period) gives the counter back a TTL
// it lost and sets the applied hash's, both to the period's reset plus
// slack; counts inside a delta leave TTLs alone (two commands fewer each),
// so a key that lost its TTL mid-delta gets it back at the next delta.
func TestCountKeepsTTLs(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 43
		counter, pending, applied := c.Keys().Counter(user, day), c.Keys().Pending(user), c.Keys().Applied(user)
		persist := func(keys ...string) {
			t.Helper()
			for _, k := range keys {
				if err := c.Client().Do(ctx, c.Client().B().Persist().Key(k).Build()).Error(); err != nil {
					t.Fatalf("PERSIST %s: %v", k, err)
				}
			}
		}
		count := func() {
			t.Helper()
			if r, err := c.CheckAndCount(ctx, user, day, reset(day), 100); err != nil || r.Outcome != valkey.Allowed {
				t.Fatalf("count = %+v, %v", r, err)
			}
		}
		ttls := func() (int64, int64) { return rawPTTL(t, c, counter), rawPTTL(t, c, applied) }
		if err := c.SeedUsage(ctx, user, day, reset(day), 0); err != nil {
			t.Fatal(err)
		}
		count() // starts the delta
		if a, b := ttls(); a <= 0 || a > counterTTL.Milliseconds() || b <= 0 || b > counterTTL.Milliseconds() {
			t.Fatalf("after the first count: PTTL counter %d, applied %d; want both in (0, %d]", a, b, counterTTL.Milliseconds())
		}
		persist(counter, applied)
		count() // inside the delta
		if a, b := ttls(); a != -1 || b != -1 {
			t.Fatalf("a count inside a delta changed TTLs: counter %d, applied %d; want both left at -1", a, b)
		}
		rawDel(t, c, pending) // what a sync claim leaves
		count()               // starts the next delta
		if a, b := ttls(); a <= 0 || a > counterTTL.Milliseconds() || b <= 0 || b > counterTTL.Milliseconds() {
			t.Fatalf("after the next delta's first count: PTTL counter %d, applied %d; want both in (0, %d]", a, b, counterTTL.Milliseconds())
		}
		if got := appliedCounts(t, c, user); !slices.Equal(got, []string{"3"}) {
			t.Fatalf("applied counts %v, want [3]: every count is counted for settlement, TTL or not", got)
		}
	})
}
