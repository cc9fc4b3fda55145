package valkey

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/usagesync"
)

// realTimeTTLs makes miniredis expire keys on the wall clock, as the real
// server does, until the test ends (it only advances TTLs when told).
func (e *env) realTimeTTLs(t *testing.T) {
	if e.mr == nil {
		return
	}
	t.Cleanup(wallClockTTLs(e.mr, 5*time.Millisecond))
}

// stopper is a Syncer on q with the queue as its roster, as the wiring
// builds it, and a sweep.
func (e *env) stopper(t testing.TB, q *SyncQueue, id string, ttl time.Duration) *usagesync.Syncer {
	t.Helper()
	s, err := usagesync.New(usagesync.Config{
		Interval: 5 * time.Millisecond, BatchSize: 7, Store: e.store, Queue: q,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InstanceID: id,
		MaxBackoff: 20 * time.Millisecond, Liveness: q, AliveTTL: ttl,
		Sweep: func(ctx context.Context) (int, error) {
			r, err := q.Sweep(ctx)
			return r.Marked + r.Reverted, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// killedWithBatches plays an instance that beat (entry TTL ttl), claimed and
// sealed one batch of users 1..10, began a second batch of users 11..20 but
// was killed before sealing it, and counted user 30 without its dirty mark
// (killed between the count and the mark). Its lease and its entry are still
// live. It returns the counts the ledger must end with.
func (e *env) killedWithBatches(t *testing.T, ttl time.Duration) map[uk]int64 {
	t.Helper()
	ctx := context.Background()
	want := map[uk]int64{}
	for u := int64(1); u <= 25; u++ {
		e.count(t, u, day1)
		want[uk{u, day1}]++
	}
	q := e.queue(nil)
	if err := q.Beat(ctx, "killed", "run:1", ttl); err != nil {
		t.Fatal(err)
	}
	if b, err := q.Claim(ctx, "killed", 10); err != nil || b.Users != 10 {
		t.Fatalf("claim = %+v, %v", b, err)
	}
	e.halfClaim(t, q, "killed", time.Now(), 10, 11, 15)
	if err := e.client.Do(ctx, e.client.B().Hincrby().Key(e.keys().Pending(30)).Field(PeriodField(day2)).Increment(3).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	want[uk{30, day2}] = 3
	return want
}

// TestLastGracefulStopFinishesKilledInstancesBatches: an instance was killed
// holding a sealed batch and an unsealed one under live leases (its liveness
// entry not yet lapsed), and left a delta without its dirty mark; the last
// instance's graceful stop waits for the entry to lapse and leaves Postgres
// holding every count and Valkey holding nothing of the sync.
func TestLastGracefulStopFinishesKilledInstancesBatches(t *testing.T) {
	backends(t, 30, func(t *testing.T, e *env) {
		e.realTimeTTLs(t)
		const ttl = 300 * time.Millisecond
		want := e.killedWithBatches(t, ttl)
		s := e.stopper(t, e.queue(nil), "last", ttl)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		e.check(t, want)
	})
}

// TestConcurrentGracefulStopsFinishKilledInstancesBatches: two instances stop
// at the same time after one was killed: each sees the other alive while it
// finishes its own work, and at least one of them finishes the rest.
func TestConcurrentGracefulStopsFinishKilledInstancesBatches(t *testing.T) {
	backends(t, 30, func(t *testing.T, e *env) {
		e.realTimeTTLs(t)
		const ttl = 300 * time.Millisecond
		want := e.killedWithBatches(t, ttl)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []string{"s1", "s2"} {
			q := e.cache(e.newClient(t), nil).SyncQueue(SyncQueueConfig{Lease: 5 * time.Second})
			s := e.stopper(t, q, id, ttl)
			if err := q.Beat(ctx, id, "run:1", ttl); err != nil { // both were running
				t.Fatal(err)
			}
			wg.Go(func() { errs[i] = s.Flush(ctx) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Flush of s%d: %v", i+1, err)
			}
		}
		e.check(t, want)
	})
}

// TestGracefulStopKeepsOffALiveInstancesBatch: while another instance beats,
// a stopping one finishes its own work without waiting and leaves the live
// instance's batch alone (its lease holds).
func TestGracefulStopKeepsOffALiveInstancesBatch(t *testing.T) {
	backends(t, 5, func(t *testing.T, e *env) {
		ctx := context.Background()
		for u := int64(1); u <= 5; u++ {
			e.count(t, u, day1)
		}
		live := e.queue(nil)
		b := claimAs(t, live, "live", 3, 3)
		// It beats while the other stops.
		beatCtx, stopBeats := context.WithCancel(ctx)
		var beating sync.WaitGroup
		beating.Go(func() {
			for n := 2; beatCtx.Err() == nil; n++ {
				_ = live.Beat(beatCtx, "live", "run:"+strconv.Itoa(n), time.Minute)
				select {
				case <-beatCtx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
		s := e.stopper(t, e.queue(nil), "stopping", time.Minute) // a wait for "live" would outlast the deadline
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := s.Flush(fctx)
		stopBeats()
		beating.Wait()
		if err != nil {
			t.Fatalf("Flush: %v", err)
		}
		for u := int64(1); u <= 5; u++ {
			n, err := e.store.Usage(ctx, u, day1)
			if err != nil {
				t.Fatal(err)
			}
			inBatch := u <= 3
			if (n == 1) == inBatch {
				t.Errorf("user %d: usage %d (in the live instance's batch: %v)", u, n, inBatch)
			}
		}
		if ok, err := live.Renew(ctx, b.Key, "live"); err != nil || !ok {
			t.Errorf("live owner's renew = %v, %v; want true (its batch left alone)", ok, err)
		}
		if o, err := live.Others(ctx, "live"); err != nil || len(o) != 0 {
			t.Errorf("Others after the stop = %v, %v; want the stopped instance gone", o, err)
		}
	})
}
