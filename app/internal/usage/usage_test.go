package usage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// fakeCounter is an in-memory Counter; down makes every call fail.
type fakeCounter struct {
	mu     sync.Mutex
	counts map[int64]int64
	seeded map[int64]bool
	down   bool
}

func newFakeCounter() *fakeCounter {
	return &fakeCounter{counts: map[int64]int64{}, seeded: map[int64]bool{}}
}

func (f *fakeCounter) Count(_ context.Context, r domain.CountRequest) (domain.UsageResult, error) {
	u, limit := r.UserID, r.Limit
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return domain.UsageResult{}, domain.ErrUnavailable
	}
	if !f.seeded[u] {
		return domain.UsageResult{Outcome: domain.UsageCold}, nil
	}
	if f.counts[u] >= limit {
		return domain.UsageResult{Outcome: domain.UsageDenied, Used: f.counts[u]}, nil
	}
	f.counts[u]++
	return domain.UsageResult{Outcome: domain.UsageAllowed, Used: f.counts[u]}, nil
}

func (f *fakeCounter) SeedUsage(_ context.Context, u int64, _, _ time.Time, persisted int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return domain.ErrUnavailable
	}
	if !f.seeded[u] {
		f.seeded[u], f.counts[u] = true, persisted
	}
	return nil
}

func (f *fakeCounter) RefundIdem(_ context.Context, u int64, _ time.Time, _ domain.IdemKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return domain.ErrUnavailable
	}
	f.counts[u]--
	return nil
}

type fakeLedger struct {
	used int64
	err  error
}

func (l fakeLedger) Usage(context.Context, int64, time.Time) (int64, error) { return l.used, l.err }

var now = time.Date(2026, 11, 27, 15, 30, 0, 0, time.UTC)

func principal(quota int64) domain.Principal {
	return domain.Principal{UserID: 1, Plan: domain.Plan{Name: "free", Quota: quota, Period: domain.PeriodDay, MaxItems: 10}}
}

func TestColdCounterSeededFromLedger(t *testing.T) {
	c := newFakeCounter()
	s := New(Config{Counter: c, Ledger: fakeLedger{used: 8}, Now: func() time.Time { return now }})
	d, err := s.Check(context.Background(), principal(10))
	if err != nil || !d.Allowed || d.Used != 9 || d.Remaining != 1 {
		t.Fatalf("first: %+v %v", d, err)
	}
	if want := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC); !d.ResetAt.Equal(want) {
		t.Fatalf("reset %v", d.ResetAt)
	}
	s.Check(context.Background(), principal(10))
	d, err = s.Check(context.Background(), principal(10))
	if err != nil || d.Allowed || d.Remaining != 0 || d.RetryAfter != 8*time.Hour+30*time.Minute {
		t.Fatalf("denied: %+v %v", d, err)
	}
}

func TestCounterDown(t *testing.T) {
	c := newFakeCounter()
	c.down = true
	closed := New(Config{Counter: c, Ledger: fakeLedger{used: 0}, Now: func() time.Time { return now }})
	_, err := closed.Check(context.Background(), principal(10))
	if e := apperr.As(err); e == nil || e.Code != apperr.Unavailable || e.RetryAfter <= 0 {
		t.Fatalf("closed: want unavailable with Retry-After, got %v", err)
	}

	local := NewLocal()
	open := New(Config{Counter: c, Ledger: fakeLedger{used: 7}, FailOpen: true, Local: local, Now: func() time.Time { return now }})
	var allowed int
	for range 5 {
		d, err := open.Check(context.Background(), principal(10))
		if err != nil || !d.Degraded {
			t.Fatalf("open: %+v %v", d, err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("fail-open must still enforce the quota from the ledger: %d allowed", allowed)
	}
	deltas := local.Drain()
	if len(deltas) != 1 || deltas[0].Delta != 3 || deltas[0].UserID != 1 {
		t.Fatalf("drain: %+v", deltas)
	}
	if again := local.Drain(); again != nil {
		t.Fatalf("drain twice: %+v", again)
	}
	local.Restore(deltas)
	if back := local.Drain(); len(back) != 1 || back[0].Delta != 3 {
		t.Fatalf("restore: %+v", back)
	}

	failing := New(Config{Counter: c, Ledger: fakeLedger{err: errors.New("pg down")}, FailOpen: true, Now: func() time.Time { return now }})
	if _, err := failing.Check(context.Background(), principal(10)); apperr.CodeOf(err) != apperr.Unavailable {
		t.Fatalf("both down: want unavailable, got %v", err)
	}
}

func TestLocalForgottenWhenCounterIsBack(t *testing.T) {
	c := newFakeCounter()
	c.down = true
	local := NewLocal()
	s := New(Config{Counter: c, Ledger: fakeLedger{used: 0}, FailOpen: true, Local: local, Now: func() time.Time { return now }})
	for range 4 {
		s.Check(context.Background(), principal(5))
	}
	c.down = false
	if d, err := s.Check(context.Background(), principal(5)); err != nil || d.Degraded {
		t.Fatalf("counter back: %+v %v", d, err)
	}
	// The deltas still wait for the sync, but the old base and counts are
	// gone: a new outage starts from the ledger again.
	if d := local.Drain(); len(d) != 1 || d[0].Delta != 4 {
		t.Fatalf("pending deltas must survive the reset: %+v", d)
	}
	c.down = true
	d, _ := s.Check(context.Background(), principal(5))
	if !d.Allowed || d.Used != 1 {
		t.Fatalf("second outage must start from the ledger's count: %+v", d)
	}
}

func TestRefundGivesTheUnitBack(t *testing.T) {
	c := newFakeCounter()
	s := New(Config{Counter: c, Ledger: fakeLedger{used: 0}, Now: func() time.Time { return now }})
	d, err := s.Check(context.Background(), principal(5))
	if err != nil || !d.Allowed || d.Used != 1 {
		t.Fatalf("check: %+v %v", d, err)
	}
	if err := s.Refund(context.Background(), principal(5), d); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Check(context.Background(), principal(5)); d.Used != 1 {
		t.Fatalf("after a refund the next request is the first again: %+v", d)
	}

	// In process (fail open) too.
	c.down = true
	local := NewLocal()
	open := New(Config{Counter: c, Ledger: fakeLedger{used: 0}, FailOpen: true, Local: local, Now: func() time.Time { return now }})
	d, _ = open.Check(context.Background(), principal(5))
	if err := open.Refund(context.Background(), principal(5), d); err != nil {
		t.Fatal(err)
	}
	if got := local.Drain(); len(got) != 1 || got[0].Delta != 0 {
		t.Fatalf("in-process refund: %+v", got)
	}
}

// hasNotCounter is a fakeCounter that answers has-not lookups of allowed
// counts ("a" is in every set), and counts which way it was asked.
type hasNotCounter struct {
	*fakeCounter
	combined, plain int
}

func (h *hasNotCounter) Count(ctx context.Context, r domain.CountRequest) (domain.UsageResult, error) {
	h.plain++
	return h.fakeCounter.Count(ctx, r)
}

func (h *hasNotCounter) CountHasNot(ctx context.Context, r domain.CountRequest, items []string) (domain.UsageResult, domain.CachedHasNot, error) {
	h.combined++
	res, err := h.fakeCounter.Count(ctx, r)
	if err != nil || res.Outcome != domain.UsageAllowed {
		return res, domain.CachedHasNot{}, err
	}
	var missing []string
	for _, it := range items {
		if it != "a" {
			missing = append(missing, it)
		}
	}
	return res, domain.CachedHasNot{Warm: true, Missing: missing, QueryTime: time.Millisecond}, nil
}

// CheckQuery asks a counter that can for the has-not answer with the count
// (also on the retry after seeding a cold counter) and hands it on only
// with an allowed decision; without items, or with a counter that cannot,
// it is CheckKey.
func TestCheckQueryAnswersWithTheCount(t *testing.T) {
	ctx := context.Background()
	c := &hasNotCounter{fakeCounter: newFakeCounter()}
	s := New(Config{Counter: c, Ledger: fakeLedger{used: 1}, Now: func() time.Time { return now }})
	d, err := s.CheckQuery(ctx, principal(2), domain.IdemKey{}, []string{"a", "b"})
	if err != nil || !d.Allowed || d.Used != 2 || !d.HasNot.Warm || len(d.HasNot.Missing) != 1 || d.HasNot.Missing[0] != "b" {
		t.Fatalf("cold counter, seeded and retried: %+v %v", d, err)
	}
	if c.combined != 2 || c.plain != 0 {
		t.Fatalf("combined %d, plain %d counts; want 2 combined (cold, then the retry)", c.combined, c.plain)
	}
	d, err = s.CheckQuery(ctx, principal(2), domain.IdemKey{}, []string{"a", "b"})
	if err != nil || d.Allowed || d.HasNot.Warm || d.HasNot.Missing != nil {
		t.Fatalf("denied: %+v %v; want no has-not answer", d, err)
	}
	if _, err := s.Check(ctx, principal(5)); err != nil || c.plain != 1 {
		t.Fatalf("Check (no items): err %v, plain counts %d; want the plain count", err, c.plain)
	}

	plain := New(Config{Counter: newFakeCounter(), Ledger: fakeLedger{}, Now: func() time.Time { return now }})
	if d, err := plain.CheckQuery(ctx, principal(2), domain.IdemKey{}, []string{"a"}); err != nil || !d.Allowed || d.HasNot.Warm {
		t.Fatalf("a counter that cannot answer: %+v %v", d, err)
	}
}
