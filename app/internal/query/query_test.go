package query

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

type fakeUsage struct {
	dec      usage.Decision
	err      error
	refunded int
}

func (f *fakeUsage) CheckKey(context.Context, domain.Principal, domain.IdemKey) (usage.Decision, error) {
	return f.dec, f.err
}
func (f *fakeUsage) Refund(context.Context, domain.Principal, usage.Decision) error {
	f.refunded++
	return nil
}

// fakeItems answers from the store until warmed, then from the cache.
type fakeItems struct {
	warm  bool
	err   error
	calls int
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
