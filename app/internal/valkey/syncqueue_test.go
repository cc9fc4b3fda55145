package valkey

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store/pgtest"
	"github.com/warmpath/warmpath/app/internal/store/storetest"
	"github.com/warmpath/warmpath/app/internal/usagesync"
)

var (
	day1 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	day2 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
)

// ledger is what the tests need of a store.
type ledger interface {
	usagesync.Ledger
	Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error)
}

// env is one test's Valkey (random prefix) and ledger with users 1..n.
type env struct {
	client    valkey.Client
	newClient func(t testing.TB) valkey.Client // another connection to the same server
	prefix    string
	store     ledger
	users     int
	mr        *miniredis.Miniredis // nil on the real server
}

// realEnv needs VALKEY_URL and DATABASE_URL (fresh schema per test).
func realEnv(t testing.TB, users int) *env {
	t.Helper()
	url := os.Getenv("VALKEY_URL")
	if url == "" {
		t.Skip("VALKEY_URL not set: skipping test against a real Valkey (e.g. VALKEY_URL=redis://127.0.0.1:6379)")
	}
	if os.Getenv("DATABASE_URL") == "" {
		t.Skip("DATABASE_URL not set: skipping test against a real Postgres")
	}
	opt, err := valkey.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	dial := func(t testing.TB) valkey.Client {
		c, err := valkey.NewClient(opt)
		if err != nil {
			t.Fatalf("connect valkey: %v", err)
		}
		return c
	}
	client := dial(t)
	prefix := randomPrefix()
	t.Cleanup(func() {
		deletePrefix(t, client, prefix)
		client.Close()
	})
	st := pgtest.NewStore(t)
	ctx := context.Background()
	if err := st.UpsertPlans(ctx, []domain.Plan{{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10}}); err != nil {
		t.Fatal(err)
	}
	// Bulk: 50,000 CreateUser round trips would dominate the benchmark setup.
	// A fresh schema's identity starts at 1, so the users are 1..n.
	if _, err := st.Pool().Exec(ctx,
		`INSERT INTO users (name, plan) SELECT 'u' || g, 'free' FROM generate_series(1, $1) g`, users); err != nil {
		t.Fatalf("create users: %v", err)
	}
	newClient := func(t testing.TB) valkey.Client {
		c := dial(t)
		t.Cleanup(c.Close)
		return c
	}
	return &env{client: client, newClient: newClient, prefix: prefix, store: st, users: users}
}

// miniEnv runs on an in-process miniredis and the in-memory store.
func miniEnv(t testing.TB, users int) *env {
	t.Helper()
	mr := miniredis.RunT(t)
	newClient := func(t testing.TB) valkey.Client {
		c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	client := newClient(t)
	st, _ := storetest.Memory(t, users)
	return &env{client: client, newClient: newClient, prefix: randomPrefix(), store: st, users: users, mr: mr}
}

// backends runs fn on the real servers and on miniredis + memory.
func backends(t *testing.T, users int, fn func(t *testing.T, e *env)) {
	t.Run("real", func(t *testing.T) { fn(t, realEnv(t, users)) })
	t.Run("miniredis", func(t *testing.T) { fn(t, miniEnv(t, users)) })
}

func randomPrefix() string {
	var b [6]byte
	_, _ = crand.Read(b[:])
	return "wpt" + hex.EncodeToString(b[:])
}

func deletePrefix(t testing.TB, c valkey.Client, prefix string) {
	ctx := context.Background()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			t.Logf("cleanup scan: %v", err)
			return
		}
		if len(e.Elements) > 0 {
			_ = c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build()).Error()
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

// cache is a Cache on client with the env's prefix and the clock now (nil:
// the wall clock); the SyncQueue is made from it, as the wiring does.
func (e *env) cache(client valkey.Client, now func() time.Time) *Cache {
	return NewFromClient(client, Config{Prefix: e.prefix, DisableClientCache: true, OpTimeout: 5 * time.Second, Now: now})
}

func (e *env) keys() Keys { return NewKeys(e.prefix) }

// markAt is the dirty mark CheckAndCount sends, made at time at.
func (e *env) markAt(user int64, at time.Time) valkey.Completed {
	return e.cache(e.client, func() time.Time { return at }).markDirtyCmd(user)
}

// countEach counts one use in period for each of the users 1..n, and adds
// them to want, which it returns.
func (e *env) countEach(t testing.TB, n int64, period time.Time, want map[uk]int64) map[uk]int64 {
	t.Helper()
	for u := int64(1); u <= n; u++ {
		e.count(t, u, period)
		want[uk{u, period}]++
	}
	return want
}

// count does what the usage path does for one allowed request: the count
// (as the count script: INCR counter, HINCRBY pending) and, after it in the
// same pipeline, the dirty mark.
func (e *env) count(t testing.TB, user int64, period time.Time) {
	t.Helper()
	ctx := context.Background()
	p := PeriodField(period)
	res := e.client.DoMulti(ctx,
		e.client.B().Hincrby().Key(e.keys().Pending(user)).Field(p).Increment(1).Build(),
		e.markAt(user, time.Now()))
	for _, r := range res {
		if err := r.Error(); err != nil {
			t.Fatalf("count: %v", err)
		}
	}
}

// clock is a settable Now.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// claimAs claims a batch of up to limit users as owner, which beats first
// (alive for a minute), and checks that it holds users users.
func claimAs(t *testing.T, q *SyncQueue, owner string, limit, users int) usagesync.Batch {
	t.Helper()
	ctx := context.Background()
	if err := q.Beat(ctx, owner, "run:1", time.Minute); err != nil {
		t.Fatal(err)
	}
	b, err := q.Claim(ctx, owner, limit)
	if err != nil || b.Users != users {
		t.Fatalf("claim as %s = %d users, %v; want %d", owner, b.Users, err, users)
	}
	return b
}

// halfClaim replays Claim's first steps only, as an owner that dies there:
// it begins a batch of up to max users at now, then claims users first to
// last (their pending deltas become in-flight) and stops.
func (e *env) halfClaim(t *testing.T, q *SyncQueue, owner string, now time.Time, max int, first, last int64) {
	t.Helper()
	ctx := context.Background()
	id := newBatchID(now)
	if err := q.scripts.syncBegin.Exec(ctx, e.client, []string{q.keys.SyncDirty(), q.keys.SyncBatches(), q.keys.SyncBatch(id), q.keys.SyncBatchInfo()},
		[]string{strconv.Itoa(max), id, owner, ms(now), ms(now.Add(q.lease))}).Error(); err != nil {
		t.Fatal(err)
	}
	for u := first; u <= last; u++ {
		if err := q.scripts.syncClaim.Exec(ctx, e.client, []string{q.keys.Pending(u), q.keys.Inflight(u)}, []string{id}).Error(); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) queue(c *clock) *SyncQueue {
	cfg := SyncQueueConfig{Lease: 5 * time.Second}
	if c != nil {
		cfg.Now = c.Now
	}
	return e.cache(e.client, nil).SyncQueue(cfg)
}

func (e *env) syncer(t testing.TB, q *SyncQueue, id string, batch int) *usagesync.Syncer {
	t.Helper()
	s, err := usagesync.New(usagesync.Config{
		Interval: 5 * time.Millisecond, BatchSize: batch, Store: e.store, Queue: q,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InstanceID: id, Now: q.now,
		MaxBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func flush(t testing.TB, s *usagesync.Syncer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

type uk struct {
	user int64
	day  time.Time
}

// check compares the ledger with want and asserts Valkey holds nothing
// pending, in flight or claimed.
func (e *env) check(t testing.TB, want map[uk]int64) {
	t.Helper()
	ctx := context.Background()
	got := map[uk]int64{}
	for u := int64(1); u <= int64(e.users); u++ {
		for _, d := range []time.Time{day1, day2} {
			n, err := e.store.Usage(ctx, u, d)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				got[uk{u, d}] = n
			}
		}
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(uk{})); diff != "" {
		t.Errorf("ledger counts (-want +got):\n%s", diff)
	}
	st, err := e.cache(e.client, nil).SyncQueue(SyncQueueConfig{}).Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingUsers != 0 {
		t.Errorf("still pending: %+v", st)
	}
	keys, err := e.client.Do(ctx, e.client.B().Keys().Pattern(e.prefix+":*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("keys left behind: %v", keys)
	}
}

func TestSyncExact(t *testing.T) {
	backends(t, 300, func(t *testing.T, e *env) {
		rnd := rand.New(rand.NewPCG(1, 2))
		want := map[uk]int64{}
		for u := int64(1); u <= 300; u++ {
			for _, d := range []time.Time{day1, day2} {
				for range rnd.IntN(4) {
					e.count(t, u, d)
					want[uk{u, d}]++
				}
			}
		}
		s := e.syncer(t, e.queue(nil), "a", 64)
		st, err := s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingUsers == 0 || st.OldestPendingAgeSeconds < 0 {
			t.Errorf("status before sync = %+v, want pending users", st)
		}
		flush(t, s)
		e.check(t, want)
		st, err = s.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingUsers != 0 || st.LastBatch == nil || st.LastBatch.Result != usagesync.ResultApplied {
			t.Errorf("status after sync = %+v", st)
		}
	})
}

func TestSameBatchAppliedTwiceCountsOnce(t *testing.T) {
	backends(t, 10, func(t *testing.T, e *env) {
		ctx := context.Background()
		for u := int64(1); u <= 10; u++ {
			e.count(t, u, day1)
			e.count(t, u, day1)
		}
		q := e.queue(nil)
		b, err := q.Claim(ctx, "a", 100)
		if err != nil {
			t.Fatal(err)
		}
		if b.Users != 10 || len(b.Deltas) != 10 {
			t.Fatalf("claimed %d users, %d deltas; want 10, 10", b.Users, len(b.Deltas))
		}
		for i, wantApplied := range []bool{true, false} {
			applied, err := e.store.ApplyUsageBatch(ctx, domain.UsageBatch{Key: b.Key, Deltas: b.Deltas})
			if err != nil || applied != wantApplied {
				t.Fatalf("apply #%d = %v, %v; want %v", i+1, applied, err, wantApplied)
			}
		}
		if err := q.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, b); err != nil {
			t.Fatalf("second ack: %v", err)
		}
		want := map[uk]int64{}
		for u := int64(1); u <= 10; u++ {
			want[uk{u, day1}] = 2
		}
		e.check(t, want)
	})
}

func TestDeadOwnerBatchAppliedOnceByAnother(t *testing.T) {
	backends(t, 50, func(t *testing.T, e *env) {
		ctx := context.Background()
		want := e.countEach(t, 50, day1, map[uk]int64{})
		clk := &clock{}
		dead := e.queue(clk)
		// Killed moments ago: its liveness key has not lapsed yet, so only
		// the lease tells the others when to take over.
		b := claimAs(t, dead, "dead", 1000, 50) // then the owner "dies": no apply, no ack
		// Counts after the claim go to the next batch.
		e.countEach(t, 5, day2, want)

		s := e.syncer(t, e.queue(clk), "b", 1000)
		flush(t, s) // the lease is live: b syncs only the new counts
		if n, _ := e.store.Usage(ctx, 1, day1); n != 0 {
			t.Fatalf("a live lease was taken over: usage %d", n)
		}
		clk.Advance(6 * time.Second)
		flush(t, s)
		if err := dead.Leave(ctx, "dead"); err != nil {
			t.Fatal(err)
		}
		e.check(t, want)

		// The dead owner comes back and finishes its batch: a no-op.
		applied, err := e.store.ApplyUsageBatch(ctx, domain.UsageBatch{Key: b.Key, Deltas: b.Deltas})
		if err != nil || applied {
			t.Fatalf("late apply by the old owner = %v, %v; want false, nil", applied, err)
		}
		if ok, err := dead.Renew(ctx, b.Key, "dead"); err != nil || ok {
			t.Fatalf("old owner's renew = %v, %v; want false", ok, err)
		}
		if err := dead.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		e.check(t, want)
	})
}

func TestOwnerDiesMidClaimIsReverted(t *testing.T) {
	backends(t, 20, func(t *testing.T, e *env) {
		ctx := context.Background()
		want := e.countEach(t, 20, day1, map[uk]int64{})
		clk := &clock{}
		q := e.queue(clk)
		// Replay Claim's first steps only: begin, then claim half the users.
		e.halfClaim(t, q, "dead", clk.Now(), 100, 1, 10)
		if st, _ := q.Stats(ctx); st.PendingUsers != 20 {
			t.Errorf("pending users during the claim = %d, want 20", st.PendingUsers)
		}
		// The usage path's seed (Cache.SeedUsage) in this state sees
		// pending + in-flight. Its clock is in day1, so the counter lives
		// until day1's reset.
		vc := e.cache(e.client, func() time.Time { return day1.Add(time.Hour) })
		if err := vc.SeedUsage(ctx, 3, day1, day1.AddDate(0, 0, 1), 100); err != nil {
			t.Fatalf("seed: %v", err)
		}
		if n, err := e.client.Do(ctx, e.client.B().Get().Key(q.keys.Counter(3, day1)).Build()).AsInt64(); err != nil || n != 101 {
			t.Errorf("seeded counter = %d, %v; want 101 (persisted 100 + 1 in flight)", n, err)
		}
		_ = e.client.Do(ctx, e.client.B().Del().Key(q.keys.Counter(3, day1)).Build())

		clk.Advance(6 * time.Second)
		flush(t, e.syncer(t, e.queue(clk), "b", 7))
		e.check(t, want)
	})
}

func TestCrashBetweenApplyAndAckIsNoOpOnReapply(t *testing.T) {
	backends(t, 30, func(t *testing.T, e *env) {
		ctx := context.Background()
		want := map[uk]int64{}
		for u := int64(1); u <= 30; u++ {
			for range int(u % 3) {
				e.count(t, u, day2)
				want[uk{u, day2}]++
			}
		}
		clk := &clock{}
		b, err := e.queue(clk).Claim(ctx, "dead", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if applied, err := e.store.ApplyUsageBatch(ctx, domain.UsageBatch{Key: b.Key, Deltas: b.Deltas}); err != nil || !applied {
			t.Fatalf("apply = %v, %v", applied, err)
		}
		// Crash before the ack: another instance takes over after the lease.
		clk.Advance(6 * time.Second)
		s := e.syncer(t, e.queue(clk), "b", 1000)
		flush(t, s)
		e.check(t, want)
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastBatch == nil || st.LastBatch.Key != b.Key || st.LastBatch.Result != usagesync.ResultDuplicate {
			t.Errorf("last batch = %+v, want the dead owner's batch as a duplicate", st.LastBatch)
		}
	})
}

func TestConcurrentSyncersNeverDoubleCount(t *testing.T) {
	backends(t, 200, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		var run sync.WaitGroup
		syncers := make([]*usagesync.Syncer, 3)
		// Hot users (20 of them) so claims race with counts of the same user.
		for i := range syncers {
			// Each syncer is an "instance" with its own connection, so its
			// claims interleave with the writers' commands on the server.
			q := e.cache(e.newClient(t), nil).SyncQueue(SyncQueueConfig{})
			syncers[i] = e.syncer(t, q, "s"+strconv.Itoa(i), 16)
			run.Go(func() { _ = syncers[i].Run(ctx) })
		}
		var mu sync.Mutex
		want := map[uk]int64{}
		var writers sync.WaitGroup
		for w := range 8 {
			wc := &env{client: e.newClient(t), prefix: e.prefix}
			writers.Go(func() {
				rnd := rand.New(rand.NewPCG(uint64(w), 7))
				for range 400 {
					u := int64(rnd.IntN(20) + 1)
					d := []time.Time{day1, day2}[rnd.IntN(2)]
					wc.count(t, u, d)
					mu.Lock()
					want[uk{u, d}]++
					mu.Unlock()
					if rnd.IntN(50) == 0 {
						syncers[rnd.IntN(3)].Trigger()
					}
				}
			})
		}
		writers.Wait()
		cancel()
		run.Wait()
		for _, s := range syncers {
			flush(t, s)
		}
		e.check(t, want)
	})
}

// flakyLedger fails its first n calls as an unreachable Postgres would.
type flakyLedger struct {
	ledger
	n atomic.Int64
}

func (f *flakyLedger) ApplyUsageBatch(ctx context.Context, b domain.UsageBatch) (bool, error) {
	if f.n.Add(-1) >= 0 {
		return false, fmt.Errorf("apply: %w", domain.ErrUnavailable)
	}
	return f.ledger.ApplyUsageBatch(ctx, b)
}

func TestLedgerOutageKeepsDeltasClaimedThenDrains(t *testing.T) {
	backends(t, 40, func(t *testing.T, e *env) {
		ctx := context.Background()
		want := e.countEach(t, 40, day1, map[uk]int64{})
		fl := &flakyLedger{ledger: e.store}
		fl.n.Store(1 << 30)
		real := e.store
		e.store = fl
		s := e.syncer(t, e.queue(nil), "a", 16)
		e.store = real
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := s.Flush(short); err == nil {
			t.Fatal("Flush while the ledger is down: want error")
		}
		st, err := s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// One batch (16 users) is claimed and held; nothing more is claimed
		// during the outage; all 40 users are still pending.
		if st.PendingUsers != 40 || st.HeldBatches != 1 || st.LastBatch == nil || st.LastBatch.Result != usagesync.ResultError {
			t.Errorf("during the outage: %+v; want 40 pending users, 1 held batch, last result error", st)
		}
		fl.n.Store(2) // the outage ends after two more failures
		flush(t, s)
		e.check(t, want)
	})
}

func TestSweep(t *testing.T) {
	backends(t, 3, func(t *testing.T, e *env) {
		ctx := context.Background()
		q := e.queue(nil)
		// A count whose mark was lost, and an in-flight entry of a batch that
		// no longer exists (an overtaken owner's late claim).
		if err := e.client.Do(ctx, e.client.B().Hincrby().Key(q.keys.Pending(1)).Field(PeriodField(day1)).Increment(4).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		if err := e.client.Do(ctx, e.client.B().Hset().Key(q.keys.Inflight(2)).FieldValue().FieldValue(inflightField("gone", PeriodField(day2)), "3").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		res, err := q.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(SweepResult{Marked: 2, Reverted: 1}, res); diff != "" {
			t.Errorf("Sweep (-want +got):\n%s", diff)
		}
		flush(t, e.syncer(t, q, "a", 10))
		e.check(t, map[uk]int64{{1, day1}: 4, {2, day2}: 3})
	})
}

func TestMarkDirtyKeepsFirstTime(t *testing.T) {
	e := miniEnv(t, 0)
	ctx := context.Background()
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := range 3 {
		if err := e.client.Do(ctx, e.markAt(7, t0.Add(time.Duration(i)*time.Second))).Error(); err != nil {
			t.Fatal(err)
		}
	}
	score, err := e.client.Do(ctx, e.client.B().Zscore().Key(e.keys().SyncDirty()).Member("7").Build()).AsFloat64()
	if err != nil || int64(score) != t0.UnixMilli() {
		t.Errorf("dirty score = %v, %v; want the first mark's time %d", score, err, t0.UnixMilli())
	}
}

func TestDeltaEncoding(t *testing.T) {
	ds := []domain.UsageDelta{{UserID: 1, PeriodStart: day1, Delta: 3}, {UserID: 99999999, PeriodStart: day2, Delta: 1}}
	got, err := decodeDeltas(encodeDeltas(ds))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ds, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if got, err := decodeDeltas(""); err != nil || len(got) != 0 {
		t.Errorf("decode empty = %v, %v", got, err)
	}
	if _, err := decodeDeltas("1:2026:x"); err == nil {
		t.Error("decode garbage: want error")
	}
}

// BenchmarkSync50k flushes 50,000 pending users (one delta each) on the
// real servers, and reports, per user flushed, the CPU of this process
// (the sync's client side: getrusage) and of the Valkey server (INFO cpu)
// over the timed flushes only. SYNC_BENCH_BATCH sets the batch size
// (default: Flush's, usagesync.DefaultFlushBatchSize; the periodic sync's
// is usagesync.DefaultBatchSize).
func BenchmarkSync50k(b *testing.B) {
	const users = 50_000
	e := realEnv(b, users)
	ctx := context.Background()
	batch := usagesync.DefaultFlushBatchSize
	if v := os.Getenv("SYNC_BENCH_BATCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("SYNC_BENCH_BATCH=%q: want a positive integer", v)
		}
		batch = n
	}
	var total, self, server time.Duration
	for i := range b.N {
		b.StopTimer()
		day := day1.AddDate(0, 0, i)
		p := PeriodField(day)
		marks := e.cache(e.client, time.Now)
		cmds := make(valkey.Commands, 0, 2*users)
		for u := int64(1); u <= users; u++ {
			cmds = append(cmds,
				e.client.B().Hincrby().Key(e.keys().Pending(u)).Field(p).Increment(1).Build(),
				marks.markDirtyCmd(u))
		}
		for _, r := range e.client.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				b.Fatal(err)
			}
		}
		s := e.syncer(b, e.queue(nil), fmt.Sprintf("bench%d", i), batch)
		self0, server0 := processCPU(), serverCPU(b, e.client)
		b.StartTimer()
		start := time.Now()
		flush(b, s)
		total += time.Since(start)
		b.StopTimer()
		self += processCPU() - self0
		server += serverCPU(b, e.client) - server0
		if n, err := e.store.Usage(ctx, users, day); err != nil || n != 1 {
			b.Fatalf("usage of the last user = %d, %v; want 1", n, err)
		}
	}
	flushed := float64(users * b.N)
	b.ReportMetric(flushed/total.Seconds(), "users/s")
	b.ReportMetric(float64(self.Microseconds())/flushed, "client-cpu-µs/user")
	b.ReportMetric(float64(server.Microseconds())/flushed, "valkey-cpu-µs/user")
}

func TestTakeoverRefusesLiveLease(t *testing.T) {
	backends(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.count(t, 1, day1)
		clk := &clock{}
		q := e.queue(clk)
		b := claimAs(t, q, "a", 10, 1)
		// Listed as orphaned by a racing instance (it saw "a" without a
		// liveness key), but "a" beats: the takeover script itself must
		// refuse while the lease is live.
		now := clk.Now()
		takeover := func(seen string) error {
			return q.scripts.syncTakeover.Exec(ctx, e.client,
				[]string{q.keys.SyncBatch(b.Key), q.keys.SyncBatches(), q.keys.SyncBatchInfo(), q.keys.SyncAlive(seen)},
				[]string{b.Key, ms(now), "b", ms(now.Add(q.lease)), seen}).Error()
		}
		if err := takeover("a"); !valkey.IsValkeyNil(err) {
			t.Fatalf("takeover of a live owner's batch: err = %v, want nil reply", err)
		}
		// Nor when the caller saw another owner (the batch changed hands
		// since it was listed).
		if err := takeover("someone-else"); !valkey.IsValkeyNil(err) {
			t.Fatalf("takeover by a stale owner view: err = %v, want nil reply", err)
		}
		if ok, err := q.Renew(ctx, b.Key, "a"); err != nil || !ok {
			t.Fatalf("owner's renew = %v, %v; want true", ok, err)
		}
		if got, err := e.queue(clk).Recover(ctx, "b", 10); err != nil || len(got) != 0 {
			t.Fatalf("Recover by another instance = %v, %v; want nothing (the lease of a live owner holds)", got, err)
		}
	})
}

// TestTakeoverOfOwnerWithoutLiveness: a batch whose owner's liveness key is
// gone (deleted by a graceful stop, or lapsed after a kill) is taken over at
// once, its lease still live; sealed, it is applied once, unsealed it is
// reverted; the owner's own Renew then fails.
func TestTakeoverOfOwnerWithoutLiveness(t *testing.T) {
	backends(t, 4, func(t *testing.T, e *env) {
		ctx := context.Background()
		want := map[uk]int64{}
		for u := int64(1); u <= 2; u++ {
			e.count(t, u, day1)
			want[uk{u, day1}]++
		}
		clk := &clock{} // never advanced: every lease stays live
		dead := e.queue(clk)
		sealed := claimAs(t, dead, "dead", 1000, 2)
		// A second batch, left unsealed (the owner died mid-claim).
		for u := int64(3); u <= 4; u++ {
			e.count(t, u, day2)
			want[uk{u, day2}]++
		}
		e.halfClaim(t, dead, "dead", clk.Now(), 100, 3, 3)

		other := e.queue(clk)
		if got, err := other.Recover(ctx, "b", 10); err != nil || len(got) != 0 {
			t.Fatalf("Recover while the owner is alive = %v, %v; want nothing", got, err)
		}
		// Its liveness key goes (a kill lets it lapse; deleting it is the
		// same state, without waiting).
		if err := e.client.Do(ctx, e.client.B().Del().Key(e.keys().SyncAlive("dead")).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		got, err := other.Recover(ctx, "b", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Key != sealed.Key {
			t.Fatalf("Recover = %+v; want the sealed batch %s at once", got, sealed.Key)
		}
		if d := cmp.Diff(sealed.Deltas, got[0].Deltas); d != "" {
			t.Errorf("taken-over deltas (-claimed +taken):\n%s", d)
		}
		if ok, err := dead.Renew(ctx, sealed.Key, "dead"); err != nil || ok {
			t.Fatalf("dead owner's renew after the takeover = %v, %v; want false", ok, err)
		}
		// The unsealed one went back to pending: the next claim finds it.
		s := e.syncer(t, other, "b", 1000)
		if _, err := e.store.ApplyUsageBatch(ctx, domain.UsageBatch{Key: got[0].Key, Deltas: got[0].Deltas}); err != nil {
			t.Fatal(err)
		}
		if err := other.Ack(ctx, got[0]); err != nil {
			t.Fatal(err)
		}
		flush(t, s)
		// The instances set still names "dead": Others prunes it.
		if o, err := other.Others(ctx, "b"); err != nil || len(o) != 0 {
			t.Fatalf("Others = %v, %v; want none alive", o, err)
		}
		e.check(t, want)
	})
}

func TestCountDuringClaimIsReMarked(t *testing.T) {
	backends(t, 1, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.count(t, 1, day1)
		q := e.queue(nil)
		b, err := q.Claim(ctx, "a", 10) // takes user 1 out of the index
		if err != nil || b.Users != 1 {
			t.Fatalf("claim = %+v, %v", b, err)
		}
		e.count(t, 1, day1) // counted after the claim: its mark re-adds the user
		if st, _ := q.Stats(ctx); st.PendingUsers != 2 {
			t.Errorf("pending users = %d, want 2 (1 dirty + 1 in the batch)", st.PendingUsers)
		}
		if _, err := e.store.ApplyUsageBatch(ctx, domain.UsageBatch{Key: b.Key, Deltas: b.Deltas}); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, b); err != nil {
			t.Fatal(err)
		}
		flush(t, e.syncer(t, q, "a", 10))
		e.check(t, map[uk]int64{{1, day1}: 2})
	})
}

// tripLog records the commands of every round trip through a recorder.
type tripLog struct {
	mu    sync.Mutex
	trips [][]string
}

// recorder is a client that logs each Do and DoMulti as one round trip of
// the commands' names, its nodes' too (valkey-go's script helpers reach
// the nodes directly).
type recorder struct {
	valkey.Client
	log *tripLog
}

func (r recorder) add(cmds ...valkey.Completed) {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Commands()[0]
	}
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	r.log.trips = append(r.log.trips, names)
}

func (r recorder) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	r.add(cmd)
	return r.Client.Do(ctx, cmd)
}

func (r recorder) DoMulti(ctx context.Context, cmds ...valkey.Completed) []valkey.ValkeyResult {
	r.add(cmds...)
	return r.Client.DoMulti(ctx, cmds...)
}

func (r recorder) Nodes() map[string]valkey.Client {
	nodes := r.Client.Nodes()
	for addr, n := range nodes {
		nodes[addr] = recorder{Client: n, log: r.log}
	}
	return nodes
}

func (l *tripLog) take() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.trips
	l.trips = nil
	return t
}

// TestClaimRoundTrips: a claim of n users is the begin script, one pipeline
// of EVALSHAs per claimChunk users and the seal — no SCRIPT LOAD on the way
// — once the scripts are loaded; where the server lacks them (a fresh
// miniredis; a flushed script cache), the users answered NOSCRIPT are
// claimed by source in one more round trip per pipeline, and every delta
// arrives exactly once.
func TestClaimRoundTrips(t *testing.T) {
	const users = 2*claimChunk + 5
	backends(t, users, func(t *testing.T, e *env) {
		ctx := context.Background()
		log := &tripLog{}
		q := e.cache(recorder{Client: e.client, log: log}, nil).SyncQueue(SyncQueueConfig{Lease: 5 * time.Second})
		round := func(t *testing.T) [][]string {
			t.Helper()
			want := e.countEach(t, users, day1, map[uk]int64{})
			if err := q.Beat(ctx, "a", "run:1", time.Minute); err != nil {
				t.Fatal(err)
			}
			_ = log.take()
			b, err := q.Claim(ctx, "a", users)
			trips := log.take()
			if err != nil || b.Users != users {
				t.Fatalf("claim = %d users, %v; want %d", b.Users, err, users)
			}
			got := map[uk]int64{}
			for _, d := range b.Deltas {
				got[uk{d.UserID, d.PeriodStart}] += d.Delta
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("claimed deltas (-want +got):\n%s", diff)
			}
			if err := q.Ack(ctx, b); err != nil {
				t.Fatal(err)
			}
			return trips
		}
		chunks := (users + claimChunk - 1) / claimChunk
		if e.mr != nil {
			// Nothing loaded: the EVALSHAs answered NOSCRIPT are sent again
			// as EVALs (which load the script for the next pipelines).
			trips := round(t)
			if len(trips) <= 2+chunks || !slices.Contains(slices.Concat(trips...), "EVAL") {
				t.Errorf("claim without loaded scripts: round trips %v, want the claims resent by source", trips)
			}
		}
		if err := e.cache(e.client, nil).LoadScripts(ctx); err != nil {
			t.Fatal(err)
		}
		trips := round(t)
		// The begin script, the claim pipelines, the seal.
		if len(trips) != 2+chunks {
			t.Fatalf("claim: %d round trips %v, want %d", len(trips), trips, 2+chunks)
		}
		claimed := 0
		for _, trip := range trips[1 : 1+chunks] {
			for _, name := range trip {
				if name != "EVALSHA" {
					t.Fatalf("claim pipeline %v: want only EVALSHA", trip)
				}
			}
			if len(trip) > claimChunk {
				t.Fatalf("claim pipeline of %d, want at most %d", len(trip), claimChunk)
			}
			claimed += len(trip)
		}
		if claimed != users {
			t.Fatalf("%d users claimed in the pipelines, want %d", claimed, users)
		}
	})
}
