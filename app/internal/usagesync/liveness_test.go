package usagesync

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// fakeRoster is an in-memory Liveness. onOthers, when set, runs (under the
// lock) before each Others answer, with the call's number from 1: it may
// change the states (an entry lapsing, a beat of another instance).
type fakeRoster struct {
	mu       sync.Mutex
	states   map[string]string
	events   []string // "beat <owner> <state>" (running beats as "run"), "leave <owner>"
	calls    int
	onOthers func(call int, states map[string]string)
}

func newFakeRoster(states map[string]string) *fakeRoster {
	if states == nil {
		states = map[string]string{}
	}
	return &fakeRoster{states: states}
}

func (r *fakeRoster) Beat(_ context.Context, owner, state string, _ time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states[owner] = state
	ev := state
	if strings.HasPrefix(state, "run:") {
		ev = "run"
	}
	// Consecutive beats in the same state are one event: how many there
	// are depends on timing.
	if e := "beat " + owner + " " + ev; len(r.events) == 0 || r.events[len(r.events)-1] != e {
		r.events = append(r.events, e)
	}
	return nil
}

func (r *fakeRoster) Leave(_ context.Context, owner string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.states, owner)
	if e := "leave " + owner; len(r.events) == 0 || r.events[len(r.events)-1] != e {
		r.events = append(r.events, e)
	}
	return nil
}

func (r *fakeRoster) Others(_ context.Context, owner string) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.onOthers != nil {
		r.onOthers(r.calls, r.states)
	}
	out := map[string]string{}
	for o, st := range r.states {
		if o != owner {
			out[o] = st
		}
	}
	return out, nil
}

func (r *fakeRoster) state(owner string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.states[owner]
	return s, ok
}

func (r *fakeRoster) eventLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// stopSetup is one instance "me" about to stop: 3 dirty users in the queue,
// the roster r, and a Sweep that counts its calls.
type stopSetup struct {
	q      *fakeQueue
	ledger *fakeLedger
	roster *fakeRoster
	s      *Syncer
	sweeps *int
}

func newStopSetup(t *testing.T, others map[string]string) stopSetup {
	t.Helper()
	st := stopSetup{
		q:      newFakeQueue(map[int64]int64{1: 1, 2: 2, 3: 3}),
		ledger: newFakeLedger(),
		roster: newFakeRoster(others),
		sweeps: new(int),
	}
	st.s = newSyncer(t, Config{
		Store: st.ledger, Queue: st.q, Liveness: st.roster, InstanceID: "me",
		AliveTTL: 40 * time.Millisecond, // polls every 10ms
		Sweep:    func(context.Context) (int, error) { *st.sweeps++; return 0, nil },
	})
	return st
}

// killedBatch is a batch a killed instance claimed and sealed.
var killedBatch = Batch{Key: "killed-1", Users: 1, Deltas: []domain.UsageDelta{{UserID: 9, PeriodStart: day, Delta: 40}}}

func TestFlushLastInstanceWaitsForKilledThenFinishesItsBatches(t *testing.T) {
	st := newStopSetup(t, map[string]string{"killed": "run:7"})
	st.roster.onOthers = func(call int, states map[string]string) {
		if call == 3 {
			// The killed instance's entry lapses; its batch is now an
			// orphan that Recover hands out.
			delete(states, "killed")
			st.q.mu.Lock()
			st.q.recover = []Batch{killedBatch}
			st.q.mu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	totals, _ := st.ledger.snapshot()
	if d := cmp.Diff(map[int64]int64{1: 1, 2: 2, 3: 3, 9: 40}, totals); d != "" {
		t.Errorf("ledger (-want +got):\n%s", d)
	}
	if *st.sweeps != 1 {
		t.Errorf("sweeps = %d, want 1 (the last instance repairs lost marks)", *st.sweeps)
	}
	want := []string{"beat me stopping", "leave me", "beat me finishing", "leave me"}
	if d := cmp.Diff(want, st.roster.eventLog()); d != "" {
		t.Errorf("roster events (-want +got):\n%s", d)
	}
	if st.roster.calls != 3 {
		t.Errorf("Others calls = %d, want 3 (polled until the entry lapsed)", st.roster.calls)
	}
}

func TestFlushNotLastWhenAnotherInstanceIsAlive(t *testing.T) {
	for name, tc := range map[string]struct {
		others   map[string]string
		onOthers func(call int, states map[string]string)
		calls    int
	}{
		"it beats": {
			others:   map[string]string{"live": "run:1"},
			onOthers: func(call int, states map[string]string) { states["live"] = "run:" + strconv.Itoa(call) },
			calls:    2,
		},
		"it is stopping":  {others: map[string]string{"peer": StateStopping}, calls: 1},
		"it is finishing": {others: map[string]string{"peer": StateFinishing}, calls: 1},
		"it appears": {
			others: map[string]string{"killed": "run:3"},
			onOthers: func(call int, states map[string]string) {
				if call == 2 {
					states["new"] = "run:1"
				}
			},
			calls: 2,
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := newStopSetup(t, tc.others)
			st.roster.onOthers = tc.onOthers
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := st.s.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			// Its own work is done either way.
			if totals, _ := st.ledger.snapshot(); len(totals) != 3 {
				t.Errorf("ledger = %v, want the 3 dirty users", totals)
			}
			if *st.sweeps != 0 {
				t.Errorf("sweeps = %d, want 0: another instance finishes", *st.sweeps)
			}
			if d := cmp.Diff([]string{"beat me stopping", "leave me"}, st.roster.eventLog()); d != "" {
				t.Errorf("roster events (-want +got):\n%s", d)
			}
			if st.roster.calls != tc.calls {
				t.Errorf("Others calls = %d, want %d", st.roster.calls, tc.calls)
			}
		})
	}
}

func TestFlushDeadlineWhileWaitingForAKilledInstance(t *testing.T) {
	st := newStopSetup(t, map[string]string{"killed": "run:7"}) // never lapses
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := st.s.Flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush = %v, want the deadline", err)
	}
	if !strings.Contains(err.Error(), "killed") || !strings.Contains(err.Error(), "left in the queue") {
		t.Errorf("error %q should name the instance waited for and what is left", err)
	}
	if _, ok := st.roster.state("me"); ok {
		t.Errorf("still in the roster after Flush")
	}
	if *st.sweeps != 0 {
		t.Errorf("sweeps = %d, want 0", *st.sweeps)
	}
}

// aliveCheckQueue records, at each Claim, whether the owner was alive.
type aliveCheckQueue struct {
	*fakeQueue
	roster *fakeRoster
	mu     sync.Mutex
	dead   int // claims made while the owner had no entry
}

func (q *aliveCheckQueue) Claim(ctx context.Context, owner string, limit int) (Batch, error) {
	if _, ok := q.roster.state(owner); !ok {
		q.mu.Lock()
		q.dead++
		q.mu.Unlock()
	}
	return q.fakeQueue.Claim(ctx, owner, limit)
}

func TestRunBeatsBeforeItClaimsAndStopsBeatingWhenItReturns(t *testing.T) {
	roster := newFakeRoster(nil)
	q := &aliveCheckQueue{fakeQueue: newFakeQueue(map[int64]int64{1: 1}), roster: roster}
	s := newSyncer(t, Config{
		Store: newFakeLedger(), Queue: q, Liveness: roster, InstanceID: "me",
		Interval: time.Millisecond, AliveTTL: 8 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	// Several beats (the state changes with each) and several claims.
	for q.claims.Load() < 3 || s.beats.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("claims %d, beats %d after 10s", q.claims.Load(), s.beats.Load())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if q.dead != 0 {
		t.Errorf("%d claims while not alive", q.dead)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev := roster.eventLog()
	if d := cmp.Diff([]string{"beat me run", "beat me stopping", "leave me", "beat me finishing", "leave me"}, ev); d != "" {
		t.Errorf("roster events (-want +got):\n%s", d)
	}
	if _, ok := roster.state("me"); ok {
		t.Errorf("a beat after Flush left the instance in the roster")
	}
}
