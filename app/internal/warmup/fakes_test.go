package warmup_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/clocktest"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/waittest"
	"github.com/warmpath/warmpath/app/internal/warmup"
	"github.com/warmpath/warmpath/app/internal/warmup/warmuptest"
)

func newClock() *clocktest.Clock { return clocktest.New(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)) }

// fakeStore is an in-memory system of record whose LoadItems can be gated.
type fakeStore struct {
	mu         sync.Mutex
	principals map[domain.TokenHash]domain.Principal
	users      map[int64]domain.User
	plans      []domain.Plan
	usage      map[int64]int64
	items      map[int64][]string
	version    map[int64]int64
	hot        []int64
	hotErrs    int // RecentlyActiveUsers fails this many times first
	gates      map[int64]chan struct{}
	loadErr    map[int64]error
	loads      []int64    // user ids, in LoadItems call order
	started    chan int64 // receives the user id when LoadItems starts
	planCalls  int
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		principals: map[domain.TokenHash]domain.Principal{},
		users:      map[int64]domain.User{},
		plans: []domain.Plan{
			{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10000},
			{Name: "pro", Quota: 1000000, Period: domain.PeriodMonth, MaxItems: 1000000},
		},
		usage:   map[int64]int64{},
		items:   map[int64][]string{},
		version: map[int64]int64{},
		gates:   map[int64]chan struct{}{},
		loadErr: map[int64]error{},
		started: make(chan int64, 1000),
	}
}

// addUser creates a user with n items and returns a token hash for it.
func (s *fakeStore) addUser(id int64, plan string, n int) domain.TokenHash {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = domain.User{ID: id, Name: fmt.Sprint("u", id), Plan: plan}
	var p domain.Plan
	for _, pl := range s.plans {
		if pl.Name == plan {
			p = pl
		}
	}
	var h domain.TokenHash
	h[0], h[1] = byte(id), byte(id>>8)
	s.principals[h] = domain.Principal{UserID: id, TokenID: id * 10, Plan: p}
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("item-%d", i)
	}
	s.items[id] = items
	s.version[id] = int64(n)
	return h
}

// gate makes LoadItems of id block until the returned func is called.
func (s *fakeStore) gate(id int64) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.gates[id] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (s *fakeStore) loadOrder() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.loads...)
}

func (s *fakeStore) loadCount(id int64) int {
	n := 0
	for _, l := range s.loadOrder() {
		if l == id {
			n++
		}
	}
	return n
}

// lookup is m[k] read under mu, or ErrNotFound, as a store answers.
func lookup[K comparable, V any](mu *sync.Mutex, m map[K]V, k K) (V, error) {
	mu.Lock()
	defer mu.Unlock()
	v, ok := m[k]
	if !ok {
		return v, domain.ErrNotFound
	}
	return v, nil
}

func (s *fakeStore) Principal(_ context.Context, h domain.TokenHash) (domain.Principal, error) {
	return lookup(&s.mu, s.principals, h)
}

func (s *fakeStore) User(_ context.Context, id int64) (domain.User, error) {
	return lookup(&s.mu, s.users, id)
}

func (s *fakeStore) Plans(context.Context) ([]domain.Plan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.planCalls++
	return append([]domain.Plan(nil), s.plans...), nil
}

func (s *fakeStore) Usage(_ context.Context, id int64, _ time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage[id], nil
}

func (s *fakeStore) LoadItems(ctx context.Context, id int64, chunkSize int, fn func([]string) error) (int64, error) {
	s.mu.Lock()
	s.loads = append(s.loads, id)
	gate, err := s.gates[id], s.loadErr[id]
	items, version := append([]string(nil), s.items[id]...), s.version[id]
	s.mu.Unlock()
	s.started <- id
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(items); i += chunkSize {
		if err := fn(items[i:min(i+chunkSize, len(items))]); err != nil {
			return 0, err
		}
	}
	return version, nil
}

func (s *fakeStore) RecentlyActiveUsers(_ context.Context, limit int) ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hotErrs > 0 {
		s.hotErrs--
		return nil, domain.ErrUnavailable
	}
	return append([]int64(nil), s.hot[:min(limit, len(s.hot))]...), nil
}

// fakeCache implements the session, usage and item caches.
type fakeCache struct {
	mu         sync.Mutex
	principals map[domain.TokenHash]domain.Principal
	usage      map[int64]int64
	sets       map[int64][]string
	versions   map[int64]int64
	stale      int // Finish fails with ErrStaleSnapshot this many times first
	aborts     int
}

func newFakeCache() *fakeCache {
	return &fakeCache{
		principals: map[domain.TokenHash]domain.Principal{},
		usage:      map[int64]int64{},
		sets:       map[int64][]string{},
		versions:   map[int64]int64{},
	}
}

func (c *fakeCache) PutPrincipal(_ context.Context, h domain.TokenHash, p domain.Principal, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.principals[h] = p
	return nil
}

func (c *fakeCache) SeedUsage(_ context.Context, id int64, _, _ time.Time, persisted int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.usage[id]; !ok {
		c.usage[id] = persisted
	}
	return nil
}

// CheckAndCount and Refund complete usage.Counter; warmup only seeds.
func (c *fakeCache) Count(context.Context, domain.CountRequest) (domain.UsageResult, error) {
	return domain.UsageResult{}, fmt.Errorf("fakeCache: Count is not used by warmup")
}

func (c *fakeCache) RefundIdem(context.Context, int64, time.Time, domain.IdemKey) error {
	return fmt.Errorf("fakeCache: Refund is not used by warmup")
}

func (c *fakeCache) ItemsWarm(_ context.Context, id int64) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.versions[id]
	return v, ok, nil
}

func (c *fakeCache) evict(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sets, id)
	delete(c.versions, id)
}

func (c *fakeCache) set(id int64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sets[id]
}

func (c *fakeCache) BeginItemsLoad(id int64) *fakeLoad { return &fakeLoad{c: c, id: id} }

type fakeLoad struct {
	c     *fakeCache
	id    int64
	items []string
}

func (l *fakeLoad) Add(_ context.Context, chunk []string) error {
	l.items = append(l.items, chunk...)
	return nil
}

func (l *fakeLoad) Finish(_ context.Context, version int64, _ time.Duration) error {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.c.stale > 0 {
		l.c.stale--
		return fmt.Errorf("fake finish: %w", domain.ErrStaleSnapshot)
	}
	l.c.sets[l.id] = l.items
	l.c.versions[l.id] = version
	return nil
}

func (l *fakeLoad) Abort(context.Context) error {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.c.aborts++
	return nil
}

// memState is an in-memory StatusStore and Locker (TTLs ignored), recording
// the states each user's status went through.
type memState struct {
	mu      sync.Mutex
	status  map[int64]warmup.Status
	history map[int64][]warmup.State
	locks   map[int64]string
	// Calls of Admit, Get, Acquire and Put.
	admits, gets, acquires, puts int
}

func newMemState() *memState {
	return &memState{status: map[int64]warmup.Status{}, history: map[int64][]warmup.State{}, locks: map[int64]string{}}
}

func (s *memState) Get(_ context.Context, id int64) (warmup.Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	st, ok := s.status[id]
	return st, ok, nil
}

func (s *memState) Put(_ context.Context, id int64, st warmup.Status, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	s.status[id] = st
	if h := s.history[id]; len(h) == 0 || h[len(h)-1] != st.State {
		s.history[id] = append(h, st.State)
	}
	return nil
}

func (s *memState) Delete(_ context.Context, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.status, id)
	s.history[id] = append(s.history[id], warmup.StateIdle)
	return nil
}

// calls returns the counts of Admit, Get, Acquire and Put calls so far.
func (s *memState) calls() [4]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return [4]int{s.admits, s.gets, s.acquires, s.puts}
}

func (s *memState) states(id int64) []warmup.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]warmup.State(nil), s.history[id]...)
}

func (s *memState) locked(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.locks[id]
	return ok
}

func (s *memState) Acquire(_ context.Context, id int64, token string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acquires++
	if _, held := s.locks[id]; held {
		return false, nil
	}
	s.locks[id] = token
	return true, nil
}

func (s *memState) Admit(_ context.Context, id int64, token string, st warmup.Status, _ time.Duration) (bool, warmup.Status, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admits++
	if cur, ok := s.status[id]; ok {
		return false, cur, true, nil
	}
	if _, held := s.locks[id]; held {
		return false, warmup.Status{}, false, nil
	}
	s.locks[id] = token
	s.status[id] = st
	s.history[id] = append(s.history[id], st.State)
	return true, warmup.Status{}, false, nil
}

func (s *memState) Extend(_ context.Context, id int64, token string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.locks[id] == token, nil
}

func (s *memState) Swap(_ context.Context, id int64, from, to string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[id] != from {
		return false, nil
	}
	s.locks[id] = to
	return true, nil
}

func (s *memState) Holder(_ context.Context, id int64) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.locks[id]
	return tok, ok, nil
}

func (s *memState) Release(_ context.Context, id int64, token string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[id] != token {
		return false, nil
	}
	delete(s.locks, id)
	return true, nil
}

// jobRecord is one Observer.WarmupJob call.
type jobRecord struct {
	kind, result string
}

type fakeObserver struct {
	jobs  chan jobRecord
	depth func() int64
	mu    sync.Mutex
}

func newFakeObserver() *fakeObserver { return &fakeObserver{jobs: make(chan jobRecord, 1000)} }

func (o *fakeObserver) WarmupJob(_ context.Context, kind, result string, _ time.Duration) {
	o.jobs <- jobRecord{kind, result}
}

func (o *fakeObserver) ObserveQueueDepth(f func() int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.depth = f
}

// next waits for the next finished job.
func (o *fakeObserver) next(t *testing.T) jobRecord {
	t.Helper()
	return receive(t, o.jobs, "warmup job finished")
}

// waitStarted waits until LoadItems starts for some user and returns it.
func waitStarted(t *testing.T, s *fakeStore) int64 {
	t.Helper()
	return receive(t, s.started, "items load started")
}

// receive waits up to 10s for a value from c; what names it in the failure.
func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		var zero T
		return zero
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waittest.Until(t, 10*time.Second, what, cond)
}

// rig is a Manager with fakes.
type rig struct {
	store *fakeStore
	cache *fakeCache
	state *memState
	obs   *fakeObserver
	clock *clocktest.Clock
	cfg   warmup.Config
}

func newRig() *rig {
	r := &rig{store: newFakeStore(), cache: newFakeCache(), state: newMemState(), obs: newFakeObserver(), clock: newClock()}
	r.cfg = warmup.Config{
		QueueSize: 10,
		Workers:   1,
		TTL:       10 * time.Minute,
		CacheTTL:  time.Hour,
		Store:     r.store,
		Items:     warmup.ItemsOf(r.cache.BeginItemsLoad, r.cache.ItemsWarm),
		// The request path's Seed, on the fake cache and store.
		Usage:    usage.New(usage.Config{Counter: r.cache, Ledger: r.store, Now: r.clock.Now}),
		Sessions: r.cache,
		Status:   r.state,
		Locks:    r.state,
		Observer: r.obs,
		Now:      r.clock.Now,
		// No sleeps: the system delay and backoffs return at once.
		Wait:      func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		ChunkSize: 3,
	}
	return r
}

// rigPair is two rigs, as two instances, on one shared warm state (one
// Valkey's status and locks).
func rigPair() (a, b *rig) {
	shared := newMemState()
	a, b = newRig(), newRig()
	a.state, b.state = shared, shared
	a.cfg.Status, a.cfg.Locks, b.cfg.Status, b.cfg.Locks = shared, shared, shared, shared
	return a, b
}

// startPair builds and starts the managers of a and b.
func startPair(t *testing.T, a, b *rig) (ma, mb *warmup.Manager) {
	t.Helper()
	ma, mb = a.manager(t), b.manager(t)
	ma.Start(context.Background())
	mb.Start(context.Background())
	return ma, mb
}

// mustEnqueue enqueues job on m, failing the test on an error.
func mustEnqueue(t *testing.T, m *warmup.Manager, job warmup.Job) {
	t.Helper()
	if _, err := m.Enqueue(context.Background(), job); err != nil {
		t.Fatal(err)
	}
}

// wantLoads fails the test unless the store loaded user's items want times.
func (r *rig) wantLoads(t *testing.T, user int64, want int) {
	t.Helper()
	if n := r.store.loadCount(user); n != want {
		t.Errorf("loads of user %d = %d; want %d", user, n, want)
	}
}

// wantDepth fails the test unless m's queue holds want jobs.
func wantDepth(t *testing.T, m *warmup.Manager, want int) {
	t.Helper()
	if got := m.System().Queue.Depth; got != want {
		t.Fatalf("queue depth = %d; want %d", got, want)
	}
}

func (r *rig) manager(t *testing.T) *warmup.Manager {
	t.Helper()
	return warmuptest.New(t, r.cfg)
}
