package query

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

type fakeUsage struct {
	dec      usage.Decision
	err      error
	refunded int
}

func (f *fakeUsage) CheckQuery(context.Context, domain.Principal, domain.IdemKey, []string) (usage.Decision, error) {
	return f.dec, f.err
}
func (f *fakeUsage) Refund(context.Context, domain.Principal, usage.Decision) error {
	f.refunded++
	return nil
}

// fakeItems answers from the store until warmed, then from the cache.
type fakeItems struct {
	warm     bool
	err      error
	calls    int
	answered int // answers taken from the usage check (Answered)
}

func (f *fakeItems) HasNot(_ context.Context, _ int64, items []string) (engine.Result, error) {
	f.calls++
	if f.err != nil {
		return engine.Result{}, f.err
	}
	if f.warm {
		return engine.Result{Missing: items[1:], Source: engine.SourceCache}, nil
	}
	return engine.Result{Missing: items[1:], Source: engine.SourceStore}, nil
}

func (f *fakeItems) Answered(_ context.Context, missing []string) engine.Result {
	f.answered++
	return engine.Result{Missing: missing, Source: engine.SourceCache}
}

type fakeWarmup struct {
	items    *fakeItems
	enqueued []warmup.Kind
	ran      []warmup.Kind
	err      error
	state    warmup.State
}

func (f *fakeWarmup) Enqueue(_ context.Context, j warmup.Job) (warmup.Status, error) {
	f.enqueued = append(f.enqueued, j.Kind)
	return warmup.Status{State: warmup.StateQueued}, f.err
}
func (f *fakeWarmup) Run(_ context.Context, j warmup.Job) (warmup.Status, error) {
	f.ran = append(f.ran, j.Kind)
	f.items.warm = true
	return warmup.Status{State: warmup.StateReady}, nil
}
func (f *fakeWarmup) Status(context.Context, int64) (warmup.Status, error) {
	return warmup.Status{State: f.state}, nil
}

type firstSeen []string

func (f *firstSeen) FirstQuery(_ context.Context, state string) { *f = append(*f, state) }
func (f *firstSeen) IdempotentReplay(context.Context)           {}

var caller = Caller{Principal: domain.Principal{UserID: 7, Plan: domain.Plan{Name: "free", Quota: 10, Period: domain.PeriodDay}}}

func newService(strategy string, u *fakeUsage, it *fakeItems, w *fakeWarmup, obs Observer) *Service {
	return New(Config{Usage: u, Items: it, Warmup: w, Observer: obs, Strategy: strategy, Tracer: tracenoop.NewTracerProvider().Tracer("")})
}

func allowed() *fakeUsage {
	return &fakeUsage{dec: usage.Decision{Allowed: true, Used: 1, Limit: 10, Remaining: 9, ResetAt: time.Now().Add(time.Hour)}}
}

func TestStrategyOnAColdAnswer(t *testing.T) {
	for _, tc := range []struct {
		strategy      string
		warm          bool
		enqueued, ran []warmup.Kind
		itemCalls     int
	}{
		{config.StrategyAsync, false, []warmup.Kind{warmup.KindLogin}, nil, 1},
		{config.StrategyAsync, true, nil, nil, 1},
		{config.StrategyInline, false, nil, []warmup.Kind{warmup.KindInline}, 2}, // waits, then asks the cache again
		{config.StrategyInline, true, nil, nil, 1},
		{config.StrategyOff, false, nil, nil, 1},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			it := &fakeItems{warm: tc.warm}
			w := &fakeWarmup{items: it}
			ans, err := newService(tc.strategy, allowed(), it, w, nil).Query(context.Background(), caller, []string{"a", "b"}, domain.IdemKey{})
			if err != nil || !ans.Metered {
				t.Fatalf("query: %+v %v", ans, err)
			}
			if d := cmp.Diff([]string{"b"}, ans.Missing); d != "" {
				t.Fatal(d)
			}
			if d := cmp.Diff(tc.enqueued, w.enqueued); d != "" {
				t.Errorf("enqueued: %s", d)
			}
			if d := cmp.Diff(tc.ran, w.ran); d != "" {
				t.Errorf("ran inline: %s", d)
			}
			if it.calls != tc.itemCalls {
				t.Errorf("item calls %d, want %d", it.calls, tc.itemCalls)
			}
		})
	}
}

func TestAFullWarmupQueueDoesNotFailAQuery(t *testing.T) {
	it := &fakeItems{}
	w := &fakeWarmup{items: it, err: warmup.ErrQueueFull}
	if _, err := newService(config.StrategyAsync, allowed(), it, w, nil).Query(context.Background(), caller, []string{"a"}, domain.IdemKey{}); err != nil {
		t.Fatal(err)
	}
}

func TestRefundAndDenial(t *testing.T) {
	t.Run("a failed query is refunded", func(t *testing.T) {
		u := allowed()
		it := &fakeItems{err: apperr.Temporary(errors.New("down"), "the item store is temporarily unavailable")}
		ans, err := newService(config.StrategyAsync, u, it, &fakeWarmup{items: it}, nil).Query(context.Background(), caller, []string{"a"}, domain.IdemKey{})
		if apperr.CodeOf(err) != apperr.Unavailable || !ans.Metered || u.refunded != 1 {
			t.Fatalf("err %v metered %v refunded %d: want unavailable, metered, one refund", err, ans.Metered, u.refunded)
		}
	})
	t.Run("over quota is a refusal with the decision", func(t *testing.T) {
		u := &fakeUsage{dec: usage.Decision{Used: 10, Limit: 10, ResetAt: time.Now().Add(time.Hour), RetryAfter: time.Hour}}
		it := &fakeItems{}
		ans, err := newService(config.StrategyAsync, u, it, &fakeWarmup{items: it}, nil).Query(context.Background(), caller, []string{"a"}, domain.IdemKey{})
		e := apperr.As(err)
		if e == nil || e.Code != apperr.QuotaExceeded || e.RetryAfter != time.Hour || !ans.Metered || it.calls != 0 || u.refunded != 0 {
			t.Fatalf("got %+v %v (item calls %d, refunds %d)", ans, err, it.calls, u.refunded)
		}
	})
	t.Run("a check that fails is not metered", func(t *testing.T) {
		u := &fakeUsage{err: apperr.Temporary(errors.New("down"), "usage metering is temporarily unavailable")}
		it := &fakeItems{}
		ans, err := newService(config.StrategyAsync, u, it, &fakeWarmup{items: it}, nil).Query(context.Background(), caller, []string{"a"}, domain.IdemKey{})
		if ans.Metered || apperr.CodeOf(err) != apperr.Unavailable || it.calls != 0 {
			t.Fatalf("got %+v %v", ans, err)
		}
	})
}

func TestWarmAndFirstQuery(t *testing.T) {
	ctx := context.Background()
	t.Run("off enqueues nothing", func(t *testing.T) {
		it := &fakeItems{}
		w := &fakeWarmup{items: it, state: warmup.StateIdle}
		if ws, err := newService(config.StrategyOff, allowed(), it, w, nil).Warm(ctx, caller); err != nil || ws.State != warmup.StateIdle || w.enqueued != nil {
			t.Fatalf("got %+v %v, enqueued %v", ws, err, w.enqueued)
		}
	})
	t.Run("a full queue", func(t *testing.T) {
		it := &fakeItems{}
		_, err := newService(config.StrategyAsync, allowed(), it, &fakeWarmup{items: it, err: warmup.ErrQueueFull}, nil).Warm(ctx, caller)
		if e := apperr.As(err); e == nil || e.Code != apperr.WarmupQueueFull || e.RetryAfter != time.Second {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("the first query after a login warmup is counted once, by its state", func(t *testing.T) {
		it := &fakeItems{warm: true}
		w := &fakeWarmup{items: it, state: warmup.StateRunning}
		var seen firstSeen
		s := newService(config.StrategyAsync, allowed(), it, w, &seen)
		if _, err := s.Query(ctx, caller, []string{"a"}, domain.IdemKey{}); err != nil { // no warmup asked yet: not counted
			t.Fatal(err)
		}
		if _, err := s.Warm(ctx, caller); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := s.Query(ctx, caller, []string{"a"}, domain.IdemKey{}); err != nil {
				t.Fatal(err)
			}
		}
		if d := cmp.Diff(firstSeen{"running"}, seen); d != "" {
			t.Fatal(d)
		}
	})
}

func TestSystemHotUsers(t *testing.T) {
	if SystemHotUsers(config.StrategyOff, 1000) != 0 || SystemHotUsers(config.StrategyAsync, 1000) != 1000 || SystemHotUsers(config.StrategyInline, 5) != 5 {
		t.Fatal("off warms no hot users; the others warm them all")
	}
}

// answered is a usage check whose round trip also answered the has-not
// lookup (usage.Decision.HasNot), the server having spent lookup on it.
func answered(missing []string, lookup time.Duration) *fakeUsage {
	u := allowed()
	u.dec.HasNot = domain.CachedHasNot{Warm: true, Missing: missing, QueryTime: lookup}
	return u
}

// A has-not lookup answered inside the usage check is the answer: the item
// set is not asked again (one round trip), the answer is observed as the
// engine observes a cache answer (Answered), and no warmup is asked. Without
// that answer (cold set, or a counter that cannot), the item set is asked
// as before, with the strategy's cold path.
func TestAnswerFromTheUsageCheck(t *testing.T) {
	for _, tc := range []struct {
		name            string
		usage           *fakeUsage
		warm            bool
		calls, answered int
		enqueued        []warmup.Kind
	}{
		{"answered", answered([]string{"b"}, time.Millisecond), true, 0, 1, nil},
		{"answered, though the engine would say cold", answered([]string{"b"}, time.Millisecond), false, 0, 1, nil},
		{"not answered, warm set", allowed(), true, 1, 0, nil},
		{"not answered, cold set", allowed(), false, 1, 0, []warmup.Kind{warmup.KindLogin}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := &fakeItems{warm: tc.warm}
			w := &fakeWarmup{items: it}
			ans, err := newService(config.StrategyAsync, tc.usage, it, w, nil).Query(context.Background(), caller, []string{"a", "b"}, domain.IdemKey{})
			if err != nil || !ans.Metered {
				t.Fatalf("query: %+v %v", ans, err)
			}
			if d := cmp.Diff([]string{"b"}, ans.Missing); d != "" {
				t.Fatal(d)
			}
			if it.calls != tc.calls || it.answered != tc.answered {
				t.Errorf("HasNot calls %d, Answered %d; want %d, %d", it.calls, it.answered, tc.calls, tc.answered)
			}
			if d := cmp.Diff(tc.enqueued, w.enqueued); d != "" {
				t.Errorf("enqueued: %s", d)
			}
		})
	}
}

// The phases of a query answered in one round trip: the server's lookup
// time is the query phase (its span ends that long after it starts and
// begins where the usage check's ends), the rest of the call the usage
// check's; both spans exist, one after the other, and the request's
// Timings add up to the call.
func TestAnsweredQueryPhases(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	const lookup = 3 * time.Millisecond
	u := answered([]string{"b"}, lookup)
	slow := &slowUsage{fakeUsage: u, d: 20 * time.Millisecond}
	it := &fakeItems{}
	s := New(Config{Usage: slow, Items: it, Warmup: &fakeWarmup{items: it}, Strategy: config.StrategyAsync, Tracer: tp.Tracer("")})
	var tm telemetry.Timings
	ctx := telemetry.WithTimings(context.Background(), &tm)
	begin := time.Now()
	if _, err := s.Query(ctx, caller, []string{"a", "b"}, domain.IdemKey{}); err != nil {
		t.Fatal(err)
	}
	call := time.Since(begin)
	usageT, queryT := tm.Get(telemetry.PhaseUsageCheck), tm.Get(telemetry.PhaseQuery)
	if queryT < lookup || queryT > lookup+10*time.Millisecond { // the bound is loose for a loaded machine: the call is 20 ms

		t.Errorf("query phase %v, want the server's lookup %v (plus what little is done here)", queryT, lookup)
	}
	if usageT < slow.d-lookup || usageT+queryT > call+time.Millisecond {
		t.Errorf("usage %v + query %v, want the call (%v) split between them", usageT, queryT, call)
	}
	spans := rec.Ended()
	if len(spans) != 2 || spans[0].Name() != telemetry.PhaseUsageCheck.Span() || spans[1].Name() != telemetry.PhaseQuery.Span() {
		t.Fatalf("spans %v, want %s then %s", spanNames(spans), telemetry.PhaseUsageCheck.Span(), telemetry.PhaseQuery.Span())
	}
	us, qs := spans[0], spans[1]
	if !qs.StartTime().Equal(us.EndTime()) || qs.EndTime().Sub(qs.StartTime()) != queryT || us.EndTime().Sub(us.StartTime()) != usageT {
		t.Errorf("usage span %v–%v, query span %v–%v; want back to back, as long as the phases (%v, %v)",
			us.StartTime(), us.EndTime(), qs.StartTime(), qs.EndTime(), usageT, queryT)
	}
}

// slowUsage is a usage check that takes d (a round trip).
type slowUsage struct {
	*fakeUsage
	d time.Duration
}

func (s *slowUsage) CheckQuery(ctx context.Context, p domain.Principal, k domain.IdemKey, items []string) (usage.Decision, error) {
	time.Sleep(s.d) // stands for the round trip's duration, not for synchronisation
	return s.fakeUsage.CheckQuery(ctx, p, k, items)
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name())
	}
	return n
}
