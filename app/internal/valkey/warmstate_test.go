package valkey_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
	"github.com/warmpath/warmpath/app/internal/warmup"
	"github.com/warmpath/warmpath/app/internal/warmup/warmuptest"
)

// newClient is a connection to VALKEY_URL (skipping without it) whose
// prefix's keys are removed at the end.
func newClient(t *testing.T, prefix string) valkeygo.Client {
	t.Helper()
	return valkeytest.NewWith(t, valkey.Config{Prefix: prefix, DisableClientCache: true}).Client()
}

// newWarmState is the WarmState of a Cache on client with prefix, as the
// wiring makes it.
// wantRoundTrip puts st for user through put (with a minute's TTL) and fails
// unless get then reads st back.
func wantRoundTrip(t *testing.T, put, get *valkey.WarmState, user int64, st warmup.Status) {
	t.Helper()
	ctx := context.Background()
	if err := put.Put(ctx, user, st, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, found, err := get.Get(ctx, user)
	if err != nil || !found {
		t.Fatalf("get = %v, %v", found, err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func newWarmState(client valkeygo.Client, prefix string) *valkey.WarmState {
	return valkey.NewFromClient(client, valkey.Config{Prefix: prefix, DisableClientCache: true}).WarmState()
}

func newPrefix() string { return "wptest-warmstate-" + rand.Text()[:10] }

func TestLockExclusiveAndOwnedRelease(t *testing.T) {
	prefix := newPrefix()
	testLockExclusive(t, newWarmState(newClient(t, prefix), prefix), newWarmState(newClient(t, prefix), prefix))
}

// TestEmbedded runs the lock and status semantics on miniredis, the
// embedded default, so they hold without VALKEY_URL too.
func TestEmbedded(t *testing.T) {
	mr := miniredis.RunT(t)
	newMini := func() valkeygo.Client {
		c, err := valkeygo.NewClient(valkeygo.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	a, b := newWarmState(newMini(), "wp"), newWarmState(newMini(), "wp")
	testLockExclusive(t, a, b)
	st := warmup.Status{State: warmup.StateReady, Parts: map[string]warmup.PartStatus{warmup.PartItems: {State: warmup.StateReady}}}
	wantRoundTrip(t, a, b, 9, st)
	if k := valkey.NewKeys("wp"); !mr.Exists(k.WarmupStatus(9)) || !mr.Exists(k.WarmupLock(1)) {
		t.Errorf("keys = %v; want the documented scheme", mr.Keys())
	}
}

func testLockExclusive(t *testing.T, a, b *valkey.WarmState) {
	t.Helper()
	ctx := context.Background()

	if ok, err := a.Acquire(ctx, 1, "A", time.Minute); err != nil || !ok {
		t.Fatalf("A acquire = %v, %v; want true", ok, err)
	}
	if ok, err := b.Acquire(ctx, 1, "B", time.Minute); err != nil || ok {
		t.Fatalf("B acquire while A holds = %v, %v; want false", ok, err)
	}
	if ok, err := b.Release(ctx, 1, "B"); err != nil || ok {
		t.Fatalf("B release of A's lock = %v, %v; want false", ok, err)
	}
	if ok, err := b.Extend(ctx, 1, "B", time.Minute); err != nil || ok {
		t.Fatalf("B extend of A's lock = %v, %v; want false", ok, err)
	}
	if ok, err := b.Acquire(ctx, 1, "B", time.Minute); err != nil || ok {
		t.Fatalf("B acquire after its failed release = %v, %v; want false (A still holds)", ok, err)
	}
	// Another user's lock is independent.
	if ok, err := b.Acquire(ctx, 2, "B", time.Minute); err != nil || !ok {
		t.Fatalf("B acquire of user 2 = %v, %v; want true", ok, err)
	}
	if ok, err := a.Extend(ctx, 1, "A", time.Minute); err != nil || !ok {
		t.Fatalf("A extend = %v, %v; want true", ok, err)
	}
	if ok, err := a.Release(ctx, 1, "A"); err != nil || !ok {
		t.Fatalf("A release = %v, %v; want true", ok, err)
	}
	if ok, err := a.Release(ctx, 1, "A"); err != nil || ok {
		t.Fatalf("A release twice = %v, %v; want false", ok, err)
	}
	if ok, err := b.Acquire(ctx, 1, "B", time.Minute); err != nil || !ok {
		t.Fatalf("B acquire after A released = %v, %v; want true", ok, err)
	}
}

func TestLockKeyAndExpiry(t *testing.T) {
	prefix := newPrefix()
	c := newClient(t, prefix)
	s := newWarmState(c, prefix)
	ctx := context.Background()
	k := valkey.NewKeys(prefix)
	if got, want := k.WarmupLock(7), prefix+":{u:7}:warmup:lock"; got != want {
		t.Fatalf("lock key = %q; want %q", got, want)
	}
	if ok, err := s.Acquire(ctx, 7, "A", 200*time.Millisecond); err != nil || !ok {
		t.Fatalf("acquire = %v, %v", ok, err)
	}
	pttl, err := c.Do(ctx, c.B().Pttl().Key(k.WarmupLock(7)).Build()).AsInt64()
	if err != nil || pttl <= 0 || pttl > 200 {
		t.Fatalf("lock PTTL = %d, %v; want in (0, 200] ms", pttl, err)
	}
	if ok, _ := s.Extend(ctx, 7, "A", 10*time.Second); !ok {
		t.Fatal("extend by the owner failed")
	}
	if pttl, _ := c.Do(ctx, c.B().Pttl().Key(k.WarmupLock(7)).Build()).AsInt64(); pttl <= 200 {
		t.Fatalf("PTTL after extend = %d; want > 200 ms", pttl)
	}
	if ok, _ := s.Extend(ctx, 7, "A", 50*time.Millisecond); !ok {
		t.Fatal("extend by the owner failed")
	}
	// Expiry: someone else can take the lock once it lapses (poll).
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := s.Acquire(ctx, 7, "B", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lock did not expire within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ok, _ := s.Release(ctx, 7, "A"); ok {
		t.Fatal("the expired holder released the new holder's lock")
	}
}

func TestStatusRoundTrip(t *testing.T) {
	prefix := newPrefix()
	c := newClient(t, prefix)
	s := newWarmState(c, prefix)
	ctx := context.Background()

	if _, found, err := s.Get(ctx, 3); err != nil || found {
		t.Fatalf("get of none = %v, %v; want not found", found, err)
	}
	t0 := time.Date(2026, 3, 14, 12, 0, 0, 123456789, time.UTC)
	t1, t2 := t0.Add(time.Millisecond), t0.Add(40*time.Millisecond)
	d, pd := 39.5, 12.25
	want := warmup.Status{
		State: warmup.StateFailed, RequestedAt: &t0, StartedAt: &t1, FinishedAt: &t2, DurationMs: &d,
		Error: "items: load items: boom",
		Parts: map[string]warmup.PartStatus{
			warmup.PartSession: {State: warmup.StateSkipped},
			warmup.PartUsage:   {State: warmup.StateReady, DurationMs: &pd},
			warmup.PartItems:   {State: warmup.StateFailed, DurationMs: &pd, Error: "load items: boom"},
		},
	}
	wantRoundTrip(t, s, s, 3, want)
	if pttl, _ := c.Do(ctx, c.B().Pttl().Key(valkey.NewKeys(prefix).WarmupStatus(3)).Build()).AsInt64(); pttl <= 0 || pttl > 60000 {
		t.Errorf("status PTTL = %d; want in (0, 60000] ms", pttl)
	}
	if err := s.Delete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Get(ctx, 3); found {
		t.Error("status found after delete")
	}
}

// TestTwoManagersShareStatusAndLock runs two Managers (two instances) on one
// Valkey: only one warms a user, and both answer the same status.
func TestTwoManagersShareStatusAndLock(t *testing.T) {
	prefix := newPrefix()
	ctx := context.Background()
	release := make(chan struct{})
	storeA, storeB := &gatedStore{gate: release, started: make(chan struct{}, 10)}, &gatedStore{started: make(chan struct{}, 10)}
	doneA, doneB := make(chan string, 10), make(chan string, 10)
	warm := &warmSet{m: map[int64]bool{}}
	ma := newManager(t, newWarmState(newClient(t, prefix), prefix), storeA, warm, doneA)
	mb := newManager(t, newWarmState(newClient(t, prefix), prefix), storeB, warm, doneB)
	ma.Start(ctx)
	mb.Start(ctx)

	if st, err := ma.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateQueued {
		t.Fatalf("enqueue on A = %+v, %v; want queued", st, err)
	}
	<-storeA.started
	st, err := mb.Enqueue(ctx, warmup.Job{UserID: 1})
	if err != nil || st.State != warmup.StateRunning {
		t.Fatalf("enqueue on B while A runs = %+v, %v; want running", st, err)
	}
	if got := mb.System().Queue.Depth; got != 0 {
		t.Fatalf("B queued %d jobs; want 0", got)
	}
	stA, _ := ma.Status(ctx, 1)
	stB, _ := mb.Status(ctx, 1)
	if stA.State != warmup.StateRunning || !stA.StartedAt.Equal(*stB.StartedAt) {
		t.Fatalf("status A = %+v, B = %+v; want the same running status", stA, stB)
	}
	close(release)
	if r := <-doneA; r != "ready" {
		t.Fatalf("A's job = %q; want ready", r)
	}
	stA, _ = ma.Status(ctx, 1)
	stB, _ = mb.Status(ctx, 1)
	if diff := cmp.Diff(stA, stB); diff != "" || stB.State != warmup.StateReady {
		t.Fatalf("status A vs B after the job (-A +B):\n%s (state %q)", diff, stB.State)
	}
	// Ready within TTL on every instance: B does not warm again.
	if st, err := mb.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateReady {
		t.Fatalf("enqueue on B after ready = %+v, %v; want ready", st, err)
	}
	storeB.mu.Lock()
	defer storeB.mu.Unlock()
	if storeB.loads != 0 {
		t.Errorf("B loaded %d times; want 0", storeB.loads)
	}
	select {
	case r := <-doneB:
		t.Errorf("B ran a job (%s)", r)
	default:
	}
}

func newManager(t *testing.T, s *valkey.WarmState, store *gatedStore, warm *warmSet, done chan string) *warmup.Manager {
	t.Helper()
	c := &memCache{warm: warm}
	return warmuptest.New(t, warmup.Config{
		Workers: 1, QueueSize: 10,
		Store: store, Items: warmup.ItemsOf(c.BeginItemsLoad, c.ItemsWarm), Usage: c, Sessions: c,
		Status: s, Locks: s,
		Observer: observer(done),
	})
}

// warmSet is the users whose item set is cached, shared by both instances'
// fake caches as one Valkey would be.
type warmSet struct {
	mu sync.Mutex
	m  map[int64]bool
}

func (w *warmSet) set(id int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.m[id] = true
}

func (w *warmSet) has(id int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[id]
}

type observer chan string

func (o observer) WarmupJob(_ context.Context, _, result string, _ time.Duration) { o <- result }
func (o observer) ObserveQueueDepth(func() int64)                                 {}

// gatedStore is a system of record whose LoadItems waits for gate (if set).
type gatedStore struct {
	gate    chan struct{}
	started chan struct{}
	mu      sync.Mutex
	loads   int
}

func (s *gatedStore) Principal(context.Context, domain.TokenHash) (domain.Principal, error) {
	return domain.Principal{}, domain.ErrNotFound
}
func (s *gatedStore) User(_ context.Context, id int64) (domain.User, error) {
	return domain.User{ID: id, Plan: "free"}, nil
}
func (s *gatedStore) Plans(context.Context) ([]domain.Plan, error) {
	return []domain.Plan{{Name: "free", Quota: 10, Period: domain.PeriodDay, MaxItems: 10}}, nil
}
func (s *gatedStore) Usage(context.Context, int64, time.Time) (int64, error) { return 0, nil }
func (s *gatedStore) RecentlyActiveUsers(context.Context, int) ([]int64, error) {
	return nil, nil
}
func (s *gatedStore) LoadItems(ctx context.Context, _ int64, _ int, fn func([]string) error) (int64, error) {
	s.mu.Lock()
	s.loads++
	s.mu.Unlock()
	s.started <- struct{}{}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 1, fn([]string{"a", "b"})
}

// memCache is a minimal session, usage and item cache.
type memCache struct{ warm *warmSet }

func (c *memCache) PutPrincipal(context.Context, domain.TokenHash, domain.Principal, time.Duration) error {
	return nil
}
func (c *memCache) Seed(context.Context, int64, domain.Period) error {
	return nil
}
func (c *memCache) ItemsWarm(_ context.Context, id int64) (int64, bool, error) {
	return 1, c.warm.has(id), nil
}
func (c *memCache) BeginItemsLoad(id int64) *memLoad { return &memLoad{c: c, id: id} }

type memLoad struct {
	c  *memCache
	id int64
}

func (l *memLoad) Add(context.Context, []string) error { return nil }
func (l *memLoad) Finish(context.Context, int64, time.Duration) error {
	l.c.warm.set(l.id)
	return nil
}
func (l *memLoad) Abort(context.Context) error { return nil }

func TestLockSwapIsCompareAndSwap(t *testing.T) {
	prefix := newPrefix()
	s := newWarmState(newClient(t, prefix), prefix)
	ctx := context.Background()
	if _, held, err := s.Holder(ctx, 9); err != nil || held {
		t.Fatalf("holder of a free lock = %v, %v", held, err)
	}
	if ok, err := s.Acquire(ctx, 9, "sq:x", time.Minute); err != nil || !ok {
		t.Fatalf("acquire = %v, %v", ok, err)
	}
	if tok, held, err := s.Holder(ctx, 9); err != nil || !held || tok != "sq:x" {
		t.Fatalf("holder = %q %v %v", tok, held, err)
	}
	if ok, _ := s.Swap(ctx, 9, "other", "L", time.Minute); ok {
		t.Fatal("swap from a token that does not hold the lock must fail")
	}
	if ok, err := s.Swap(ctx, 9, "sq:x", "L", time.Minute); err != nil || !ok {
		t.Fatalf("swap by the holder = %v, %v", ok, err)
	}
	// The loser of the race (the queued job starting) now fails.
	if ok, _ := s.Swap(ctx, 9, "sq:x", "sr:x", time.Minute); ok {
		t.Fatal("a second swap from the old token must fail")
	}
	if ok, _ := s.Extend(ctx, 9, "L", time.Minute); !ok {
		t.Fatal("the new holder owns the lock")
	}
}

// TestAdmit: the first admission writes the status and takes the lock, both
// with the TTL; with a status there, or with the lock held, it changes
// nothing and says what it saw.
func TestAdmit(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := context.Background()
		s, k, raw := c.WarmState(), c.Keys(), c.Client()
		now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		queued := warmup.Status{State: warmup.StateQueued, RequestedAt: &now, Parts: map[string]warmup.PartStatus{warmup.PartItems: {State: warmup.StateIdle}}}

		ok, _, found, err := s.Admit(ctx, 5, "A", queued, time.Minute)
		if err != nil || !ok || found {
			t.Fatalf("first admit = %v, found %v, %v; want admitted", ok, found, err)
		}
		if tok, held, _ := s.Holder(ctx, 5); !held || tok != "A" {
			t.Fatalf("lock after admit = %q, %v; want A", tok, held)
		}
		for _, key := range []string{k.WarmupStatus(5), k.WarmupLock(5)} {
			if pttl, err := raw.Do(ctx, raw.B().Pttl().Key(key).Build()).AsInt64(); err != nil || pttl <= 0 || pttl > 60_000 {
				t.Fatalf("PTTL %s = %d, %v; want in (0, 60 s]", key, pttl, err)
			}
		}
		if got, _, _ := s.Get(ctx, 5); !cmp.Equal(got, queued) {
			t.Fatalf("status after admit = %+v; want %+v", got, queued)
		}

		// A second admission (another instance) sees the status, takes nothing.
		ok, cur, found, err := s.Admit(ctx, 5, "B", warmup.Status{State: warmup.StateQueued}, time.Minute)
		if err != nil || ok || !found || !cmp.Equal(cur, queued) {
			t.Fatalf("second admit = %v, %+v found %v, %v; want not admitted, the first status", ok, cur, found, err)
		}
		if tok, _, _ := s.Holder(ctx, 5); tok != "A" {
			t.Fatalf("lock after the second admit = %q; want A", tok)
		}

		// No status but the lock held: not admitted, nothing written.
		if ok, err := s.Acquire(ctx, 6, "C", time.Minute); err != nil || !ok {
			t.Fatal(ok, err)
		}
		ok, _, found, err = s.Admit(ctx, 6, "D", queued, time.Minute)
		if err != nil || ok || found {
			t.Fatalf("admit with the lock held = %v, found %v, %v; want neither", ok, found, err)
		}
		if _, found, _ := s.Get(ctx, 6); found {
			t.Fatal("admit with the lock held wrote a status")
		}
	})
}
