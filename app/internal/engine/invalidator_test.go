package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// flakyInvalidator fails its first n calls.
type flakyInvalidator struct {
	mu    sync.Mutex
	fails int
	calls []int64 // versions asked for
}

func (f *flakyInvalidator) InvalidateItems(_ context.Context, _ int64, v int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, v)
	if f.fails > 0 {
		f.fails--
		return errors.New("down")
	}
	return nil
}

func (f *flakyInvalidator) n() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.calls) }

func TestInvalidatorRetriesUntilItSucceeds(t *testing.T) {
	c := &flakyInvalidator{fails: 2}
	v := NewInvalidator(InvalidatorConfig{Cache: c, First: time.Millisecond, Max: 2 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	v.Retry(7, 3)
	v.Retry(7, 5) // the same user again: one retry, at the highest version
	deadline := time.Now().Add(5 * time.Second)
	for v.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if v.Pending() != 0 || c.n() != 3 {
		t.Fatalf("pending %d after %d calls, want 0 after 3 (2 failures, then success)", v.Pending(), c.n())
	}
	for _, got := range c.calls {
		if got != 5 {
			t.Fatalf("invalidated version %d, want the latest (5)", got)
		}
	}
	cancel()
	<-done
}

func TestInvalidatorStopsAtShutdownAndIsBounded(t *testing.T) {
	c := &flakyInvalidator{fails: 1 << 30} // never recovers
	v := NewInvalidator(InvalidatorConfig{Cache: c, Pending: 2, First: time.Millisecond, Max: time.Hour})
	for u := range int64(5) {
		v.Retry(u, 1)
	}
	if v.Pending() != 2 {
		t.Fatalf("pending %d, want the bound (2)", v.Pending())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	for c.n() < 4 { // two rounds: now it backs off ever longer
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its context was cancelled (shutdown must stop the retrier)")
	}
}
