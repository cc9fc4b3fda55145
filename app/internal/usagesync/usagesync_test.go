package usagesync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/waittest"
)

var day = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// fakeQueue is an in-memory Pending: one period, no leases.
type fakeQueue struct {
	mu      sync.Mutex
	pending map[int64]int64
	claimed map[string]Batch
	seq     int
	claims  atomic.Int64
	// recover is returned by the next Recover call.
	recover []Batch
}

func newFakeQueue(pending map[int64]int64) *fakeQueue {
	return &fakeQueue{pending: pending, claimed: map[string]Batch{}}
}

func (q *fakeQueue) Claim(_ context.Context, _ string, limit int) (Batch, error) {
	q.claims.Add(1)
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := make([]int64, 0, len(q.pending))
	for id := range q.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = ids[:min(limit, len(ids))]
	if len(ids) == 0 {
		return Batch{}, nil
	}
	q.seq++
	b := Batch{Key: fmt.Sprintf("q%d", q.seq), Users: len(ids)}
	for _, id := range ids {
		b.Deltas = append(b.Deltas, domain.UsageDelta{UserID: id, PeriodStart: day, Delta: q.pending[id]})
		delete(q.pending, id)
	}
	q.claimed[b.Key] = b
	return b, nil
}

func (q *fakeQueue) Recover(context.Context, string, int) ([]Batch, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.recover
	q.recover = nil
	return r, nil
}

func (q *fakeQueue) Renew(_ context.Context, key, _ string) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.claimed[key]
	return ok, nil
}

func (q *fakeQueue) Ack(_ context.Context, b Batch) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.claimed, b.Key)
	return nil
}

func (q *fakeQueue) Stats(context.Context) (QueueStats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := int64(len(q.pending))
	for _, b := range q.claimed {
		n += int64(b.Users)
	}
	return QueueStats{PendingUsers: n}, nil
}

func (q *fakeQueue) open() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending) + len(q.claimed)
}

// fakeLedger records applied keys and totals. failNext calls fail with fail
// (after committing when commitThenFail: an ambiguous commit); block, when
// set, holds every call until closed.
type fakeLedger struct {
	mu             sync.Mutex
	applied        map[string]bool
	totals         map[int64]int64
	keys           []string
	failNext       int
	fail           error
	commitThenFail bool
	rejectUser     int64 // a batch holding this user fails with ErrNotFound
	entered        chan struct{}
	block          chan struct{}
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{applied: map[string]bool{}, totals: map[int64]int64{}, fail: domain.ErrUnavailable}
}

func (l *fakeLedger) ApplyUsageBatch(ctx context.Context, b domain.UsageBatch) (bool, error) {
	if l.entered != nil {
		select {
		case l.entered <- struct{}{}:
		default:
		}
	}
	if l.block != nil {
		select {
		case <-l.block:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, b.Key)
	for _, d := range b.Deltas {
		if d.UserID == l.rejectUser {
			return false, fmt.Errorf("user %d: %w", d.UserID, domain.ErrNotFound)
		}
	}
	failing := l.failNext > 0
	if failing {
		l.failNext--
		if !l.commitThenFail {
			return false, l.fail
		}
	}
	if l.applied[b.Key] {
		if failing {
			return false, l.fail
		}
		return false, nil
	}
	l.applied[b.Key] = true
	for _, d := range b.Deltas {
		l.totals[d.UserID] += d.Delta
	}
	if failing {
		return false, l.fail
	}
	return true, nil
}

func (l *fakeLedger) snapshot() (map[int64]int64, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps(l.totals), slices.Clone(l.keys)
}

func maps(m map[int64]int64) map[int64]int64 {
	out := make(map[int64]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// fakeLocal is a LocalSource.
type fakeLocal struct {
	mu       sync.Mutex
	deltas   []domain.UsageDelta
	restored []domain.UsageDelta
}

func (f *fakeLocal) Drain() []domain.UsageDelta {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.deltas
	f.deltas = nil
	return d
}

func (f *fakeLocal) Restore(d []domain.UsageDelta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restored = append(f.restored, d...)
	f.deltas = append(f.deltas, d...)
}

// fakeObserver records batch results.
type fakeObserver struct {
	mu      sync.Mutex
	results []string
	pending func() int64
	lag     func() float64
}

func (o *fakeObserver) SyncBatch(_ context.Context, r string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.results = append(o.results, r)
}

func (o *fakeObserver) ObserveSync(p func() int64, l func() float64) { o.pending, o.lag = p, l }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newSyncer(t *testing.T, cfg Config) *Syncer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runSyncer runs s until the test ends.
func runSyncer(t *testing.T, s *Syncer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waittest.Until(t, 10*time.Second, what, cond)
}

func TestNewRequiresStoreAndQueue(t *testing.T) {
	if _, err := New(Config{Queue: newFakeQueue(nil)}); err == nil {
		t.Error("New without Store: want error")
	}
	if _, err := New(Config{Store: newFakeLedger()}); err == nil {
		t.Error("New without Queue: want error")
	}
}

func TestTriggerNeverBlocksAndCoalesces(t *testing.T) {
	q := newFakeQueue(nil)
	s := newSyncer(t, Config{Store: newFakeLedger(), Queue: q, Interval: time.Hour})

	// Nobody runs the loop: every Trigger must still return at once.
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			for range 10 {
				s.Trigger()
			}
		})
	}
	wg.Wait()
	if got := len(s.trigger); got != 1 {
		t.Fatalf("pending trigger signals = %d, want 1 (coalesced)", got)
	}
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Triggered != 1000 {
		t.Errorf("Status.Triggered = %d, want 1000", st.Triggered)
	}

	// The 1000 coalesced triggers cause one pass (one Claim finding nothing).
	runSyncer(t, s)
	eventually(t, "the triggered pass", func() bool { return q.claims.Load() >= 1 })
	if len(s.trigger) != 0 {
		t.Error("trigger signal not consumed")
	}
	s.Trigger()
	eventually(t, "the second triggered pass", func() bool { return q.claims.Load() >= 2 })
}

func TestTriggerReturnsBeforeTheSyncItCausesFinishes(t *testing.T) {
	q := newFakeQueue(map[int64]int64{1: 3, 2: 4})
	l := newFakeLedger()
	l.entered = make(chan struct{}, 1)
	l.block = make(chan struct{})
	s := newSyncer(t, Config{Store: l, Queue: q, Interval: time.Hour})
	runSyncer(t, s)

	s.Trigger()
	<-l.entered // the pass is inside ApplyUsageBatch and cannot finish...
	for range 10 {
		s.Trigger() // ...yet Trigger still returns
	}
	if got, _ := l.snapshot(); len(got) != 0 {
		t.Fatalf("applied before release: %v", got)
	}
	close(l.block)
	eventually(t, "the sync to finish", func() bool { return q.open() == 0 })
	got, _ := l.snapshot()
	if diff := cmp.Diff(map[int64]int64{1: 3, 2: 4}, got); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
}

func TestFailingLedgerKeepsDeltasAndRetriesSameKey(t *testing.T) {
	for _, ambiguous := range []bool{false, true} {
		t.Run(fmt.Sprintf("commitThenFail=%v", ambiguous), func(t *testing.T) {
			q := newFakeQueue(map[int64]int64{1: 5, 2: 7, 3: 1})
			l := newFakeLedger()
			l.failNext, l.commitThenFail = 4, ambiguous
			obs := &fakeObserver{}
			s := newSyncer(t, Config{Store: l, Queue: q, Observer: obs, Interval: time.Millisecond})

			// While the ledger fails, the batch stays claimed (nothing lost).
			if _, err := s.pass(context.Background(), false); !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("pass with a failing ledger: err = %v, want ErrUnavailable", err)
			}
			if q.open() != 1 {
				t.Fatalf("open batches in queue = %d, want 1 (kept claimed)", q.open())
			}
			st, err := s.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.LastBatch == nil || st.LastBatch.Result != ResultError || st.HeldBatches != 1 {
				t.Errorf("status after failure = %+v, want last batch error and 1 held", st)
			}

			runSyncer(t, s)
			eventually(t, "the retries to succeed", func() bool { return q.open() == 0 })
			got, keys := l.snapshot()
			if diff := cmp.Diff(map[int64]int64{1: 5, 2: 7, 3: 1}, got); diff != "" {
				t.Errorf("totals (-want +got):\n%s", diff)
			}
			if len(keys) < 5 {
				t.Errorf("ledger calls = %d, want ≥ 5 (4 failures + success)", len(keys))
			}
			for _, k := range keys {
				if k != keys[0] {
					t.Fatalf("retries used keys %v, want one key throughout", keys)
				}
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			last := obs.results[len(obs.results)-1]
			want := ResultApplied
			if ambiguous {
				want = ResultDuplicate
			}
			if last != want {
				t.Errorf("last observed result = %q, want %q", last, want)
			}
		})
	}
}

func TestBadBatchDoesNotBlockOthers(t *testing.T) {
	q := newFakeQueue(map[int64]int64{1: 1, 2: 2, 3: 3, 4: 4})
	l := newFakeLedger()
	l.rejectUser = 2
	s := newSyncer(t, Config{Store: l, Queue: q, BatchSize: 2})
	err := s.Flush(ctxTimeout(t, 50*time.Millisecond))
	if !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Flush error = %v, want ErrNotFound", err)
	}
	got, _ := l.snapshot()
	if diff := cmp.Diff(map[int64]int64{3: 3, 4: 4}, got); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	if q.open() != 1 {
		t.Errorf("open batches = %d, want the bad one kept", q.open())
	}
}

func TestRecoveredBatchesAreApplied(t *testing.T) {
	q := newFakeQueue(nil)
	dead := Batch{Key: "dead", Users: 1, Deltas: []domain.UsageDelta{{UserID: 9, PeriodStart: day, Delta: 4}}}
	q.claimed["dead"] = dead
	q.recover = []Batch{dead}
	l := newFakeLedger()
	s := newSyncer(t, Config{Store: l, Queue: q})
	if err := s.Flush(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got, keys := l.snapshot()
	if diff := cmp.Diff(map[int64]int64{9: 4}, got); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	if !slices.Equal(keys, []string{"dead"}) {
		t.Errorf("keys = %v, want the dead owner's key", keys)
	}
}

func TestLocalDeltas(t *testing.T) {
	deltas := []domain.UsageDelta{{UserID: 1, PeriodStart: day, Delta: 2}, {UserID: 2, PeriodStart: day, Delta: 3}}

	t.Run("restored on failure", func(t *testing.T) {
		l := newFakeLedger()
		l.failNext = 1 << 30
		loc := &fakeLocal{deltas: slices.Clone(deltas)}
		s := newSyncer(t, Config{Store: l, Queue: newFakeQueue(nil), Local: loc})
		if err := s.Flush(ctxTimeout(t, 20*time.Millisecond)); err == nil {
			t.Fatal("Flush with a failing ledger: want error")
		}
		loc.mu.Lock()
		defer loc.mu.Unlock()
		if diff := cmp.Diff(deltas, loc.restored); diff != "" {
			t.Errorf("restored (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(deltas, loc.deltas); diff != "" {
			t.Errorf("Local holds (-want +got):\n%s", diff)
		}
	})

	t.Run("retried under one key, even after an ambiguous commit", func(t *testing.T) {
		l := newFakeLedger()
		l.failNext, l.commitThenFail = 3, true
		loc := &fakeLocal{deltas: slices.Clone(deltas)}
		// The queue is down: local deltas must not wait for it.
		s := newSyncer(t, Config{Store: l, Queue: downQueue{}, Local: loc, InstanceID: "a"})
		for range 4 {
			if _, err := s.pass(context.Background(), false); err == nil {
				t.Fatal("pass with the queue down: want error")
			}
		}
		got, keys := l.snapshot()
		if diff := cmp.Diff(map[int64]int64{1: 2, 2: 3}, got); diff != "" {
			t.Errorf("totals (-want +got):\n%s", diff)
		}
		if len(keys) != 4 || len(slices.Compact(slices.Clone(keys))) != 1 {
			t.Errorf("keys = %v, want 4 calls with one key", keys)
		}
		loc.mu.Lock()
		defer loc.mu.Unlock()
		if len(loc.restored) != 0 {
			t.Errorf("restored %v after success, want nothing", loc.restored)
		}
	})
}

func TestStatusAndGauges(t *testing.T) {
	now := day.Add(10 * time.Second)
	q := statsQueue{fakeQueue: newFakeQueue(nil), stats: QueueStats{PendingUsers: 42, Oldest: day}}
	obs := &fakeObserver{}
	s := newSyncer(t, Config{Store: newFakeLedger(), Queue: q, Observer: obs, Now: func() time.Time { return now }})
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Status{PendingUsers: 42, OldestPendingAgeSeconds: 10}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	if obs.pending() != 42 || obs.lag() != 10 {
		t.Errorf("gauges = %d users, %v s; want 42, 10", obs.pending(), obs.lag())
	}
}

type statsQueue struct {
	*fakeQueue
	stats QueueStats
}

func (q statsQueue) Stats(context.Context) (QueueStats, error) { return q.stats, nil }

// downQueue is a queue whose server is unreachable.
type downQueue struct{}

func (downQueue) Claim(context.Context, string, int) (Batch, error) {
	return Batch{}, domain.ErrUnavailable
}
func (downQueue) Recover(context.Context, string, int) ([]Batch, error) {
	return nil, domain.ErrUnavailable
}
func (downQueue) Renew(context.Context, string, string) (bool, error) {
	return false, domain.ErrUnavailable
}
func (downQueue) Ack(context.Context, Batch) error { return domain.ErrUnavailable }
func (downQueue) Stats(context.Context) (QueueStats, error) {
	return QueueStats{}, domain.ErrUnavailable
}

// ctxTimeout returns a context that ends after d (already ended for 0).
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
