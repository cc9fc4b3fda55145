package warmup_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/warmup"
)

// waits records the durations passed to Config.Wait and returns at once,
// except for the system delay, which blocks until released.
type waits struct {
	mu    sync.Mutex
	ds    []time.Duration
	delay time.Duration
	gate  chan struct{}
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	if d == w.delay && w.gate != nil {
		select {
		case <-w.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.mu.Lock()
	w.ds = append(w.ds, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) recorded() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.ds...)
}

func waitSystemDone(t *testing.T, m *warmup.Manager) warmup.SystemStatus {
	t.Helper()
	var st warmup.SystemStatus
	waitFor(t, "system warmup to finish", func() bool {
		st = m.System()
		return st.FinishedAt != nil
	})
	return st
}

func TestSystemWarmupStepsRetriedNeverFatal(t *testing.T) {
	r := newRig()
	w := &waits{delay: 250 * time.Millisecond}
	r.cfg.Wait = w.wait
	r.cfg.SystemDelay = w.delay
	r.cfg.StepBackoff, r.cfg.StepMaxBackoff, r.cfg.StepAttempts = 100*time.Millisecond, 500*time.Millisecond, 5
	var poolCalls, scriptCalls int
	var order []string
	r.cfg.SystemSteps = []warmup.Step{
		{Name: "pool", Run: func(context.Context) error {
			order = append(order, "pool")
			poolCalls++
			if poolCalls < 3 {
				return errors.New("connection refused")
			}
			return nil
		}},
		{Name: "scripts", Run: func(context.Context) error {
			order = append(order, "scripts")
			scriptCalls++
			return errors.New("NOSCRIPT nope")
		}},
		{Name: "plans", Run: func(context.Context) error { order = append(order, "plans"); return nil }},
	}
	m := r.manager(t)
	if st := m.System(); st.State != warmup.StateIdle || len(st.Steps) != 4 {
		t.Fatalf("before start = %+v; want idle with 4 steps", st)
	}
	m.Start(context.Background())
	st := waitSystemDone(t, m)

	if st.State != warmup.StateFailed || !strings.Contains(st.Error, "scripts") {
		t.Errorf("system state = %q (%q); want failed naming scripts", st.State, st.Error)
	}
	type step struct {
		Name     string
		State    warmup.State
		Attempts int
		Error    string
	}
	var got []step
	for _, s := range st.Steps {
		got = append(got, step{s.Name, s.State, s.Attempts, s.Error})
		if s.State == warmup.StateReady && s.DurationMs == nil {
			t.Errorf("step %s has no duration", s.Name)
		}
	}
	want := []step{
		{"pool", warmup.StateReady, 3, ""},
		{"scripts", warmup.StateFailed, 5, "NOSCRIPT nope"},
		{"plans", warmup.StateReady, 1, ""},
		{warmup.HotUsersStep, warmup.StateSkipped, 0, ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	// The delay, then exponential backoff capped at StepMaxBackoff.
	ms := time.Millisecond
	wantWaits := []time.Duration{250 * ms, 100 * ms, 200 * ms, 100 * ms, 200 * ms, 400 * ms, 500 * ms}
	if diff := cmp.Diff(wantWaits, w.recorded()); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"pool", "pool", "pool", "scripts", "scripts", "scripts", "scripts", "scripts", "plans"}, order); diff != "" {
		t.Errorf("step order (-want +got):\n%s", diff)
	}
	// Serving-side features still work after a failed step.
	r.store.addUser(1, "pro", 1)
	if _, err := m.Enqueue(context.Background(), warmup.Job{UserID: 1}); err != nil {
		t.Fatal(err)
	}
	r.obs.next(t)
}

func TestSystemWarmupWaitsForDelay(t *testing.T) {
	r := newRig()
	w := &waits{delay: time.Second, gate: make(chan struct{})}
	r.cfg.Wait, r.cfg.SystemDelay = w.wait, w.delay
	ran := make(chan struct{}, 1)
	r.cfg.SystemSteps = []warmup.Step{{Name: "pool", Run: func(context.Context) error { ran <- struct{}{}; return nil }}}
	m := r.manager(t)
	m.Start(context.Background()) // returns at once although the delay has not passed
	if st := m.System(); st.State != warmup.StateIdle {
		t.Fatalf("state before the delay = %q; want idle", st.State)
	}
	// User warmup works while the system warmup has not started.
	r.store.addUser(1, "pro", 1)
	if _, err := m.Enqueue(context.Background(), warmup.Job{UserID: 1}); err != nil {
		t.Fatal(err)
	}
	r.obs.next(t)
	select {
	case <-ran:
		t.Fatal("a step ran before the delay")
	default:
	}
	close(w.gate)
	<-ran
	if st := waitSystemDone(t, m); st.State != warmup.StateReady {
		t.Errorf("state = %q; want ready", st.State)
	}
}

func TestHotUsersEnqueuedAtLowPriority(t *testing.T) {
	r := newRig()
	w := &waits{delay: time.Second, gate: make(chan struct{})}
	r.cfg.Wait, r.cfg.SystemDelay = w.wait, w.delay
	r.cfg.QueueSize, r.cfg.SystemQueueSize = 10, 2
	r.cfg.HotUsers = 6
	r.store.hotErrs = 1 // the first read fails and is retried
	for id := int64(1); id <= 8; id++ {
		r.store.addUser(id, "pro", 1)
	}
	r.store.hot = []int64{1, 2, 3, 4, 5, 6, 7, 8}
	ctx := context.Background()
	// User 2 is already warm: not enqueued.
	now := r.clock.Now()
	r.cache.versions[2] = 1
	if err := r.state.Put(ctx, 2, warmup.Status{State: warmup.StateReady, FinishedAt: &now}, time.Hour); err != nil {
		t.Fatal(err)
	}
	release := r.store.gate(100)
	r.store.addUser(100, "pro", 1)
	m := r.manager(t)
	m.Start(ctx)
	// Keep the only worker busy with a login job so the queue fills.
	mustEnqueue(t, m, warmup.Job{UserID: 100})
	waitStarted(t, r.store)
	close(w.gate)
	st := waitSystemDone(t, m)

	want := warmup.HotUsersStatus{Limit: 6, Found: 6, Enqueued: 2, Warm: 1, Skipped: 3}
	if diff := cmp.Diff(want, st.HotUsers); diff != "" {
		t.Errorf("hot users (-want +got):\n%s", diff)
	}
	if hs := st.Steps[len(st.Steps)-1]; hs.State != warmup.StateReady || hs.Attempts != 2 {
		t.Errorf("hot users step = %+v; want ready after 2 attempts", hs)
	}
	if st.Queue.System != 2 || st.Queue.Login != 0 {
		t.Errorf("queue = %+v; want 2 system jobs", st.Queue)
	}
	// A login still finds room and runs before the queued system jobs.
	if _, err := m.Enqueue(ctx, warmup.Job{UserID: 7}); err != nil {
		t.Fatalf("login with the system share full: %v", err)
	}
	release()
	kinds := []string{}
	for range 4 {
		kinds = append(kinds, r.obs.next(t).kind)
	}
	if diff := cmp.Diff([]string{"login", "login", "system", "system"}, kinds); diff != "" {
		t.Errorf("job kinds in run order (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{100, 7, 1, 3}, r.store.loadOrder()); diff != "" {
		t.Errorf("run order (-want +got):\n%s", diff)
	}
}
