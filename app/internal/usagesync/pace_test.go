package usagesync

import (
	"context"
	"github.com/warmpath/warmpath/app/internal/clocktest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/domain"
)

func newFakeClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// slowLedger takes `took` of the clock per batch and records when each began.
type slowLedger struct {
	*fakeLedger
	clock  *clocktest.Clock
	took   time.Duration
	mu     sync.Mutex
	starts []time.Time
	sizes  []int
}

func (l *slowLedger) ApplyUsageBatch(ctx context.Context, b domain.UsageBatch) (bool, error) {
	l.mu.Lock()
	l.starts = append(l.starts, l.clock.Now())
	l.sizes = append(l.sizes, len(b.Deltas))
	l.mu.Unlock()
	l.clock.Advance(l.took)
	return l.fakeLedger.ApplyUsageBatch(ctx, b)
}

func TestLoopPacesBacklogFlushDoesNot(t *testing.T) {
	pending := func() map[int64]int64 { // the fake queue consumes its map
		m := map[int64]int64{}
		for u := int64(1); u <= 9; u++ {
			m[u] = 1
		}
		return m
	}
	const took = 20 * time.Millisecond

	// The loop: batches of 3, each followed by a rest of at least Pace × its
	// duration before the next one.
	clk := newFakeClock()
	l := &slowLedger{fakeLedger: newFakeLedger(), clock: clk, took: took}
	s := newSyncer(t, Config{Interval: time.Hour, Store: l, Queue: newFakeQueue(pending()), BatchSize: 3, FlushBatchSize: 9, Pace: 2,
		Now: clk.Now, Wait: clk.Wait})
	if _, err := s.pass(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]int{3, 3, 3}, l.sizes); d != "" {
		t.Fatalf("loop batch sizes (-want +got):\n%s", d)
	}
	for i := 1; i < len(l.starts); i++ {
		if gap := l.starts[i].Sub(l.starts[i-1]); gap < took+2*took {
			t.Fatalf("batch %d began %s after the previous one; want ≥ %s (its duration + the rest)", i, gap, 3*took)
		}
	}

	// Flush: one big batch, no rest.
	clk2 := newFakeClock()
	var rests int
	l2 := &slowLedger{fakeLedger: newFakeLedger(), clock: clk2, took: took}
	s2 := newSyncer(t, Config{Interval: time.Hour, Store: l2, Queue: newFakeQueue(pending()), BatchSize: 3, FlushBatchSize: 9, Pace: 2,
		Now: clk2.Now, Wait: func(ctx context.Context, d time.Duration) error { rests++; return clk2.Wait(ctx, d) }})
	if err := s2.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]int{9}, l2.sizes); d != "" {
		t.Fatalf("flush batch sizes (-want +got):\n%s", d)
	}
	if rests != 0 {
		t.Fatalf("flush rested %d times, want never", rests)
	}
	got, _ := l2.snapshot()
	if len(got) != 9 {
		t.Fatalf("flushed %d users, want 9", len(got))
	}
}

// A paced pass hands back to Run after an interval's work during a long
// backlog, so stats, renewals and takeovers keep running.
func TestPacedPassYieldsAfterAnInterval(t *testing.T) {
	m := map[int64]int64{}
	for u := int64(1); u <= 9; u++ {
		m[u] = 1
	}
	clk := newFakeClock()
	l := &slowLedger{fakeLedger: newFakeLedger(), clock: clk, took: 5 * time.Millisecond}
	s := newSyncer(t, Config{Interval: time.Millisecond, Store: l, Queue: newFakeQueue(m), BatchSize: 3, Pace: -1,
		Now: clk.Now, Wait: clk.Wait})
	drained, err := s.pass(context.Background(), true)
	if err != nil || drained {
		t.Fatalf("pass = drained %v, %v; want a partial pass", drained, err)
	}
	if len(l.sizes) != 1 {
		t.Fatalf("batches in the first pass = %d, want 1", len(l.sizes))
	}
	runSyncer(t, s) // Run goes on at once and drains the rest
	eventually(t, "the backlog drained", func() bool { got, _ := l.snapshot(); return len(got) == 9 })
}
