package warmup_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

func TestJobTransitionsAndParts(t *testing.T) {
	r := newRig()
	tok := r.store.addUser(1, "pro", 10)
	r.store.usage[1] = 42
	release := r.store.gate(1)
	m := r.manager(t)
	ctx := context.Background()

	st, err := m.Status(ctx, 1)
	if err != nil || st.State != warmup.StateIdle {
		t.Fatalf("status before = %+v, %v; want idle", st, err)
	}
	st, err = m.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok, Cause: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != warmup.StateQueued || st.RequestedAt == nil || st.StartedAt != nil {
		t.Fatalf("enqueue = %+v; want queued with requestedAt only", st)
	}
	if got, _ := m.Status(ctx, 1); got.State != warmup.StateQueued {
		t.Fatalf("status after enqueue = %q; want queued", got.State)
	}

	m.Start(ctx)
	waitStarted(t, r.store)
	st, _ = m.Status(ctx, 1)
	if st.State != warmup.StateRunning || st.StartedAt == nil {
		t.Fatalf("status while loading = %+v; want running", st)
	}
	if st.Parts[warmup.PartItems].State != warmup.StateRunning {
		t.Fatalf("items part while loading = %+v; want running", st.Parts[warmup.PartItems])
	}
	// The running status is in the shared store too.
	if stored, _, _ := r.state.Get(ctx, 1); stored.State != warmup.StateRunning {
		t.Fatalf("stored status while loading = %q; want running", stored.State)
	}
	release()
	if rec := r.obs.next(t); rec != (jobRecord{"login", "ready"}) {
		t.Fatalf("job = %+v; want login ready", rec)
	}

	st, err = m.Status(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != warmup.StateReady || st.FinishedAt == nil || st.DurationMs == nil || st.Error != "" {
		t.Fatalf("final status = %+v; want ready with finishedAt and durationMs", st)
	}
	for _, p := range []string{warmup.PartSession, warmup.PartUsage, warmup.PartItems} {
		if ps := st.Parts[p]; ps.State != warmup.StateReady || ps.DurationMs == nil {
			t.Errorf("part %s = %+v; want ready with a duration", p, ps)
		}
	}
	if diff := cmp.Diff([]warmup.State{warmup.StateQueued, warmup.StateRunning, warmup.StateReady}, r.state.states(1)); diff != "" {
		t.Errorf("stored transitions (-want +got):\n%s", diff)
	}
	if p, ok := r.cache.principals[tok]; !ok || p.UserID != 1 {
		t.Errorf("principal not cached: %+v", p)
	}
	if got := r.cache.usage[1]; got != 42 {
		t.Errorf("seeded usage = %d; want 42", got)
	}
	if got := len(r.cache.set(1)); got != 10 {
		t.Errorf("cached items = %d; want 10", got)
	}
	if r.state.locked(1) {
		t.Error("lock still held after the job")
	}

	// The JSON shape of the public contract.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"state":"ready"`, `"requestedAt":"2026-`, `"startedAt":`, `"finishedAt":`, `"durationMs":`, `"parts":{`, `"session":{"state":"ready"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("json %s lacks %s", b, key)
		}
	}
}

func TestSystemJobSkipsSessionAndReadsPlan(t *testing.T) {
	r := newRig()
	r.store.addUser(2, "free", 1)
	r.store.usage[2] = 7
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	mustEnqueue(t, m, warmup.Job{UserID: 2, Kind: warmup.KindSystem})
	if rec := r.obs.next(t); rec != (jobRecord{"system", "ready"}) {
		t.Fatalf("job = %+v; want system ready", rec)
	}
	st, _ := m.Status(ctx, 2)
	if got := st.Parts[warmup.PartSession].State; got != warmup.StateSkipped {
		t.Errorf("session part = %q; want skipped", got)
	}
	if got := r.cache.usage[2]; got != 7 {
		t.Errorf("seeded usage = %d; want 7", got)
	}
}

func TestFailedPartFailsJob(t *testing.T) {
	r := newRig()
	tok := r.store.addUser(1, "pro", 5)
	r.store.loadErr[1] = domain.ErrUnavailable
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	mustEnqueue(t, m, warmup.Job{UserID: 1, TokenHash: &tok})
	if rec := r.obs.next(t); rec.result != "failed" {
		t.Fatalf("job = %+v; want failed", rec)
	}
	st, _ := m.Status(ctx, 1)
	if st.State != warmup.StateFailed || !strings.Contains(st.Error, "items: load items: dependency unavailable") {
		t.Fatalf("status = %+v; want failed naming the items part", st)
	}
	if got := st.Parts[warmup.PartItems]; got.State != warmup.StateFailed || got.Error == "" {
		t.Errorf("items part = %+v; want failed with error", got)
	}
	if got := st.Parts[warmup.PartSession].State; got != warmup.StateReady {
		t.Errorf("session part = %q; want ready (parts are independent)", got)
	}
	if diff := cmp.Diff([]warmup.State{warmup.StateQueued, warmup.StateRunning, warmup.StateFailed}, r.state.states(1)); diff != "" {
		t.Errorf("stored transitions (-want +got):\n%s", diff)
	}
	if r.state.locked(1) {
		t.Error("lock still held after a failed job")
	}
	if r.cache.aborts != 1 {
		t.Errorf("aborts = %d; want 1", r.cache.aborts)
	}
	// A failed user can be warmed again.
	r.store.mu.Lock()
	delete(r.store.loadErr, 1)
	r.store.mu.Unlock()
	if st, err := m.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok}); err != nil || st.State != warmup.StateQueued {
		t.Fatalf("re-enqueue after failure = %+v, %v; want queued", st, err)
	}
	if rec := r.obs.next(t); rec.result != "ready" {
		t.Fatalf("second job = %+v; want ready", rec)
	}
}

func TestDedup(t *testing.T) {
	r := newRig()
	tok := r.store.addUser(1, "pro", 3)
	r.store.addUser(2, "pro", 3)
	release := r.store.gate(1)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)

	mustEnqueue(t, m, warmup.Job{UserID: 1, TokenHash: &tok})
	waitStarted(t, r.store) // user 1 runs, the only worker is busy
	first, err := m.Enqueue(ctx, warmup.Job{UserID: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		st, err := m.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok})
		if err != nil || st.State != warmup.StateRunning {
			t.Fatalf("enqueue of a running user = %+v, %v; want running", st, err)
		}
		st, err = m.Enqueue(ctx, warmup.Job{UserID: 2})
		if err != nil || st.State != warmup.StateQueued || !st.RequestedAt.Equal(*first.RequestedAt) {
			t.Fatalf("enqueue of a queued user = %+v, %v; want the same queued status", st, err)
		}
	}
	if got := m.System().Queue.Depth; got != 1 {
		t.Fatalf("queue depth = %d; want 1 (one job per user)", got)
	}
	release()
	r.obs.next(t)
	r.obs.next(t)
	if n1, n2 := r.store.loadCount(1), r.store.loadCount(2); n1 != 1 || n2 != 1 {
		t.Errorf("loads = %d, %d; want one per user", n1, n2)
	}
}

func TestConcurrentEnqueueOneJob(t *testing.T) {
	r := newRig()
	r.store.addUser(1, "pro", 3)
	m := r.manager(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := m.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	wantDepth(t, m, 1)
	m.Start(ctx)
	r.obs.next(t)
	r.wantLoads(t, 1, 1)
}

func TestCrossInstanceDedup(t *testing.T) {
	a, b := rigPair()
	a.store.addUser(1, "pro", 3)
	b.store.addUser(1, "pro", 3)
	release := a.store.gate(1)
	ma, mb := startPair(t, a, b)
	ctx := context.Background()

	mustEnqueue(t, ma, warmup.Job{UserID: 1})
	waitStarted(t, a.store)
	st, err := mb.Enqueue(ctx, warmup.Job{UserID: 1})
	if err != nil || st.State != warmup.StateRunning {
		t.Fatalf("enqueue on B while A runs = %+v, %v; want running", st, err)
	}
	if st, _ := mb.Status(ctx, 1); st.State != warmup.StateRunning {
		t.Fatalf("status on B = %q; want running", st.State)
	}
	if got := mb.System().Queue.Depth; got != 0 {
		t.Fatalf("B queued %d jobs; want 0", got)
	}
	release()
	a.obs.next(t)
	if st, _ := mb.Status(ctx, 1); st.State != warmup.StateReady {
		t.Fatalf("status on B after A finished = %q; want ready", st.State)
	}
	if n := b.store.loadCount(1); n != 0 {
		t.Errorf("B loaded %d times; want 0", n)
	}
}

func TestReadyUserNotWarmedAgainWithinTTL(t *testing.T) {
	r := newRig()
	r.store.addUser(1, "pro", 3)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	mustEnqueue(t, m, warmup.Job{UserID: 1})
	r.obs.next(t)

	r.clock.Advance(9 * time.Minute)
	st, err := m.Enqueue(ctx, warmup.Job{UserID: 1})
	if err != nil || st.State != warmup.StateReady {
		t.Fatalf("enqueue within TTL = %+v, %v; want ready", st, err)
	}
	if got := m.System().Queue.Depth; got != 0 || r.store.loadCount(1) != 1 {
		t.Fatalf("depth %d, loads %d; want nothing enqueued", got, r.store.loadCount(1))
	}
	if st, err := m.Run(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateReady || r.store.loadCount(1) != 1 {
		t.Fatalf("inline run within TTL = %+v, %v; want ready without a load", st, err)
	}

	// Within TTL but the item set was dropped from the cache: warm again.
	r.cache.evict(1)
	if st, err := m.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateQueued {
		t.Fatalf("enqueue of an evicted user = %+v, %v; want queued", st, err)
	}
	r.obs.next(t)

	r.clock.Advance(10*time.Minute + time.Second)
	if st, err := m.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateQueued {
		t.Fatalf("enqueue after TTL = %+v, %v; want queued", st, err)
	}
	r.obs.next(t)
	r.wantLoads(t, 1, 3)
}

// TestFirstLoginAdmission: with a lock store that can Admit, a user with no
// status is admitted by one Admit (status and lock in one round trip),
// nothing else, and a user with a status reuses what Admit saw instead of
// reading it again; without Admit the read, lock and write are separate.
// Both warm the user.
func TestFirstLoginAdmission(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hide  bool   // Config.Locks without Admit
		calls [4]int // Admit, Get, Acquire, Put calls of the first enqueue
	}{
		{"admit", false, [4]int{1, 0, 0, 0}},
		{"separate steps", true, [4]int{0, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig()
			r.store.addUser(1, "pro", 3)
			if tc.hide {
				r.cfg.Locks = struct{ warmup.Locker }{r.state}
			}
			m := r.manager(t)
			ctx := context.Background()
			if st, err := m.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateQueued {
				t.Fatalf("first enqueue = %+v, %v; want queued", st, err)
			}
			if got := r.state.calls(); got != tc.calls {
				t.Fatalf("calls (admit, get, acquire, put) = %v; want %v", got, tc.calls)
			}
			if got := r.state.states(1); !slices.Equal(got, []warmup.State{warmup.StateQueued}) {
				t.Fatalf("status history %v; want queued", got)
			}
			m.Start(ctx)
			if rec := r.obs.next(t); rec.result != "ready" {
				t.Fatalf("job result %q; want ready", rec.result)
			}
			before := r.state.calls()
			if st, err := m.Enqueue(ctx, warmup.Job{UserID: 1}); err != nil || st.State != warmup.StateReady {
				t.Fatalf("enqueue within TTL = %+v, %v; want ready", st, err)
			}
			if got := r.state.calls(); !tc.hide && (got[0] != before[0]+1 || got[1] != before[1] || got[2] != before[2]) {
				t.Fatalf("calls after a ready user's enqueue %v (before %v); want one more admit, no get, no acquire", got, before)
			}
		})
	}
}

func TestLoginBeforeSystem(t *testing.T) {
	r := newRig()
	for id := int64(1); id <= 5; id++ {
		r.store.addUser(id, "pro", 2)
	}
	release := r.store.gate(1)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)

	mustEnqueue := func(id int64, kind warmup.Kind) {
		t.Helper()
		if st, err := m.Enqueue(ctx, warmup.Job{UserID: id, Kind: kind}); err != nil || st.State != warmup.StateQueued {
			t.Fatalf("enqueue %d = %+v, %v", id, st, err)
		}
	}
	mustEnqueue(1, warmup.KindSystem)
	waitStarted(t, r.store) // the only worker is busy with user 1
	mustEnqueue(2, warmup.KindSystem)
	mustEnqueue(3, warmup.KindSystem)
	mustEnqueue(4, warmup.KindLogin)
	mustEnqueue(5, warmup.KindLogin)
	q := m.System().Queue
	if q.Login != 2 || q.System != 2 {
		t.Fatalf("queue = %+v; want 2 login, 2 system", q)
	}
	release()
	for range 5 {
		r.obs.next(t)
	}
	if diff := cmp.Diff([]int64{1, 4, 5, 2, 3}, r.store.loadOrder()); diff != "" {
		t.Errorf("run order (-want +got):\n%s", diff)
	}
}

func TestLoginPromotesQueuedSystemJob(t *testing.T) {
	r := newRig()
	tok := r.store.addUser(1, "pro", 2)
	m := r.manager(t)
	ctx := context.Background()
	mustEnqueue(t, m, warmup.Job{UserID: 1, Kind: warmup.KindSystem})
	st, err := m.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok})
	if err != nil || st.State != warmup.StateQueued {
		t.Fatalf("login enqueue = %+v, %v; want queued", st, err)
	}
	if q := m.System().Queue; q.Login != 1 || q.System != 0 || q.Depth != 1 {
		t.Fatalf("queue = %+v; want the job moved to the login queue", q)
	}
	m.Start(ctx)
	if rec := r.obs.next(t); rec.kind != "login" {
		t.Fatalf("job kind = %q; want login", rec.kind)
	}
	if st, _ := m.Status(ctx, 1); st.Parts[warmup.PartSession].State != warmup.StateReady {
		t.Errorf("session part = %+v; want ready (the login's token is used)", st.Parts[warmup.PartSession])
	}
	r.wantLoads(t, 1, 1)
}

func TestQueueFull(t *testing.T) {
	r := newRig()
	r.cfg.QueueSize, r.cfg.SystemQueueSize = 3, 1
	m := r.manager(t) // not started: nothing leaves the queue
	ctx := context.Background()

	enqueue := func(id int64, kind warmup.Kind) error {
		_, err := m.Enqueue(ctx, warmup.Job{UserID: id, Kind: kind})
		return err
	}
	if err := enqueue(10, warmup.KindSystem); err != nil {
		t.Fatal(err)
	}
	if err := enqueue(11, warmup.KindSystem); !errors.Is(err, warmup.ErrQueueFull) {
		t.Fatalf("system job beyond its share: err = %v; want ErrQueueFull", err)
	}
	if err := enqueue(1, warmup.KindLogin); err != nil {
		t.Fatal(err)
	}
	if err := enqueue(2, warmup.KindLogin); err != nil {
		t.Fatal(err)
	}
	st, err := m.Enqueue(ctx, warmup.Job{UserID: 3})
	if !errors.Is(err, warmup.ErrQueueFull) {
		t.Fatalf("login job on a full queue: err = %v; want ErrQueueFull", err)
	}
	if st.State != warmup.StateIdle {
		t.Errorf("status with ErrQueueFull = %q; want the current (idle)", st.State)
	}
	// A rejected job leaves no trace: no lock, no status.
	if r.state.locked(3) || r.state.locked(11) {
		t.Error("rejected job holds a lock")
	}
	if _, found, _ := r.state.Get(ctx, 3); found {
		t.Error("rejected job wrote a status")
	}
	if got := r.obs.depth(); got != 3 {
		t.Errorf("observed queue depth = %d; want 3", got)
	}
	sys := m.System().Queue
	if sys.Capacity != 3 || sys.SystemCapacity != 1 || sys.Depth != 3 {
		t.Errorf("queue status = %+v", sys)
	}
}

func TestStaleSnapshotRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stale  int
		result string
		loads  int
	}{
		{"two stale then ready", 2, "ready", 3},
		{"always stale", 10, "failed", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig()
			r.store.addUser(1, "pro", 4)
			r.cache.stale = tc.stale
			m := r.manager(t)
			ctx := context.Background()
			m.Start(ctx)
			mustEnqueue(t, m, warmup.Job{UserID: 1})
			if rec := r.obs.next(t); rec.result != tc.result {
				t.Fatalf("result = %q; want %q", rec.result, tc.result)
			}
			if n := r.store.loadCount(1); n != tc.loads {
				t.Errorf("loads = %d; want %d", n, tc.loads)
			}
			st, _ := m.Status(ctx, 1)
			if tc.result == "failed" {
				if e := st.Parts[warmup.PartItems].Error; !strings.Contains(e, "kept changing") || !strings.Contains(e, "3 attempts") {
					t.Errorf("items error = %q; want a clear stale-snapshot message", e)
				}
			} else if len(r.cache.set(1)) != 4 {
				t.Errorf("cached items = %d; want 4", len(r.cache.set(1)))
			}
		})
	}
}

func TestStopCancelsRunningDropsQueued(t *testing.T) {
	r := newRig()
	for id := int64(1); id <= 3; id++ {
		r.store.addUser(id, "pro", 2)
	}
	r.store.gate(1) // never released: only Stop ends it
	ctx := context.Background()
	// User 3 had failed before; dropping its job restores that.
	prev := warmup.Status{State: warmup.StateFailed, Error: "earlier", Parts: map[string]warmup.PartStatus{}}
	if err := r.state.Put(ctx, 3, prev, time.Hour); err != nil {
		t.Fatal(err)
	}
	m, err := warmup.New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(ctx)
	for id := int64(1); id <= 3; id++ {
		mustEnqueue(t, m, warmup.Job{UserID: id})
		if id == 1 {
			waitStarted(t, r.store)
		}
	}

	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	st, _, _ := r.state.Get(ctx, 1)
	if st.State != warmup.StateFailed || st.Error != "cancelled: shutting down" {
		t.Errorf("running job after stop = %+v; want failed, cancelled", st)
	}
	if _, found, _ := r.state.Get(ctx, 2); found {
		t.Error("dropped job of a new user left a status; want idle")
	}
	if st, _ := m.Status(ctx, 2); st.State != warmup.StateIdle {
		t.Errorf("status of dropped job = %q; want idle", st.State)
	}
	if st, _, _ := r.state.Get(ctx, 3); st.State != warmup.StateFailed || st.Error != "earlier" {
		t.Errorf("dropped job's status = %+v; want the previous one restored", st)
	}
	for id := int64(1); id <= 3; id++ {
		if r.state.locked(id) {
			t.Errorf("user %d still locked after stop", id)
		}
	}
	if n := r.store.loadCount(2) + r.store.loadCount(3); n != 0 {
		t.Errorf("dropped jobs ran %d loads", n)
	}
	if _, err := m.Enqueue(ctx, warmup.Job{UserID: 2}); !errors.Is(err, warmup.ErrStopped) {
		t.Errorf("enqueue after stop: err = %v; want ErrStopped", err)
	}
}

func TestRunInline(t *testing.T) {
	r := newRig()
	tok := r.store.addUser(1, "pro", 5)
	r.store.addUser(2, "pro", 5)
	m := r.manager(t) // not started: no workers
	ctx := context.Background()

	st, err := m.Run(ctx, warmup.Job{UserID: 1, TokenHash: &tok})
	if err != nil || st.State != warmup.StateReady {
		t.Fatalf("run = %+v, %v; want ready", st, err)
	}
	if rec := r.obs.next(t); rec != (jobRecord{"inline", "ready"}) {
		t.Errorf("job = %+v; want inline ready", rec)
	}
	if len(r.cache.set(1)) != 5 || r.state.locked(1) {
		t.Error("inline run did not warm the items or kept the lock")
	}

	// A job queued in this process is taken over, not run twice.
	mustEnqueue(t, m, warmup.Job{UserID: 2})
	st, err = m.Run(ctx, warmup.Job{UserID: 2})
	if err != nil || st.State != warmup.StateReady {
		t.Fatalf("run of a queued user = %+v, %v; want ready", st, err)
	}
	wantDepth(t, m, 0)
	m.Start(ctx)
	r.obs.next(t)
	r.wantLoads(t, 2, 1)
}

func TestRunWaitsForRunningJob(t *testing.T) {
	r := newRig()
	r.store.addUser(1, "pro", 5)
	release := r.store.gate(1)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	mustEnqueue(t, m, warmup.Job{UserID: 1})
	waitStarted(t, r.store)
	done := make(chan warmup.Status)
	go func() {
		st, err := m.Run(ctx, warmup.Job{UserID: 1})
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	select {
	case st := <-done:
		t.Fatalf("Run returned %q before the running job finished", st.State)
	default:
	}
	release()
	if st := <-done; st.State != warmup.StateReady {
		t.Fatalf("run = %q; want ready", st.State)
	}
	r.wantLoads(t, 1, 1)
}

func TestNewRequiresDependencies(t *testing.T) {
	r := newRig()
	r.cfg.Locks = nil
	if _, err := warmup.New(r.cfg); err == nil {
		t.Fatal("New without Locks: want an error")
	}
}

func TestPlansCached(t *testing.T) {
	r := newRig()
	for id := int64(1); id <= 5; id++ {
		r.store.addUser(id, "free", 1)
	}
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	for id := int64(1); id <= 5; id++ {
		mustEnqueue(t, m, warmup.Job{UserID: id, Kind: warmup.KindSystem})
	}
	for range 5 {
		if rec := r.obs.next(t); rec.result != "ready" {
			t.Fatalf("job = %+v", rec)
		}
	}
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if r.store.planCalls != 1 {
		t.Errorf("Plans read %d times; want 1", r.store.planCalls)
	}
}

// A login warmup through instance A takes over a system job for the same
// user that is still queued on instance B: logins go before system jobs
// across instances too, and B's job skips when its turn comes.
func TestLoginTakesOverSystemJobQueuedElsewhere(t *testing.T) {
	a, b := rigPair()
	// One Valkey: B sees the set A warmed.
	b.cfg.Items, b.cfg.Usage, b.cfg.Sessions = a.cfg.Items, a.cfg.Usage, a.cfg.Sessions
	tok := a.store.addUser(1, "pro", 3)
	b.store.addUser(1, "pro", 3)
	b.store.addUser(2, "pro", 3)
	releaseB := b.store.gate(2) // B's only worker is stuck on user 2
	ma, mb := startPair(t, a, b)
	ctx := context.Background()

	mustEnqueue(t, mb, warmup.Job{UserID: 2, Kind: warmup.KindSystem})
	waitStarted(t, b.store)
	if st, err := mb.Enqueue(ctx, warmup.Job{UserID: 1, Kind: warmup.KindSystem}); err != nil || st.State != warmup.StateQueued {
		t.Fatalf("system enqueue on B = %+v, %v", st, err)
	}
	st, err := ma.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok})
	if err != nil || st.State != warmup.StateQueued {
		t.Fatalf("login enqueue on A = %+v, %v; want queued on A", st, err)
	}
	if rec := a.obs.next(t); rec.kind != "login" || rec.result != "ready" {
		t.Fatalf("A's job = %+v; want a ready login job", rec)
	}
	if st, _ := ma.Status(ctx, 1); st.Parts[warmup.PartSession].State != warmup.StateReady {
		t.Fatalf("session part = %+v; want ready (the login's token)", st.Parts[warmup.PartSession])
	}
	releaseB()
	b.obs.next(t) // user 2
	waitFor(t, "B's queue to drain", func() bool { q := mb.System().Queue; return q.Depth == 0 && q.Running == 0 })
	if n := b.store.loadCount(1); n != 0 {
		t.Fatalf("B loaded user 1 %d times; its queued job must skip after the takeover", n)
	}
	if n := a.store.loadCount(1); n != 1 {
		t.Fatalf("A loaded user 1 %d times; want 1", n)
	}
}

// A system job that has started running keeps its lock: a login elsewhere
// sees it running and does not start a second job.
func TestLoginDoesNotTakeOverRunningSystemJob(t *testing.T) {
	a, b := rigPair()
	tok := a.store.addUser(1, "pro", 3)
	b.store.addUser(1, "pro", 3)
	release := b.store.gate(1)
	ma, mb := startPair(t, a, b)
	ctx := context.Background()
	mustEnqueue(t, mb, warmup.Job{UserID: 1, Kind: warmup.KindSystem})
	waitStarted(t, b.store)
	st, err := ma.Enqueue(ctx, warmup.Job{UserID: 1, TokenHash: &tok})
	if err != nil || st.State != warmup.StateRunning {
		t.Fatalf("login enqueue on A = %+v, %v; want B's running status", st, err)
	}
	release()
	b.obs.next(t)
	if n := a.store.loadCount(1); n != 0 {
		t.Fatalf("A loaded %d times; want 0", n)
	}
}

// A system job whose queued lock expired while it waited still runs (nobody
// else took the user).
func TestQueuedSystemJobRunsAfterItsLockExpired(t *testing.T) {
	r := newRig()
	r.store.addUser(1, "pro", 2)
	r.store.addUser(2, "pro", 2)
	release := r.store.gate(1)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)
	mustEnqueue(t, m, warmup.Job{UserID: 1, Kind: warmup.KindSystem})
	waitStarted(t, r.store) // the only worker is busy with user 1
	mustEnqueue(t, m, warmup.Job{UserID: 2, Kind: warmup.KindSystem})
	r.state.mu.Lock()
	delete(r.state.locks, 2) // user 2's queued lock expires
	r.state.mu.Unlock()
	release()
	r.obs.next(t)
	if rec := r.obs.next(t); rec.result != "ready" {
		t.Fatalf("user 2's job = %+v; want it run and ready", rec)
	}
	if n := r.store.loadCount(2); n != 1 {
		t.Fatalf("user 2 loaded %d times; want 1", n)
	}
}
