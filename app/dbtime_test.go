package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/storetest"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// slowStore is the in-memory store with a known cost per request-path call,
// and a count of those calls.
type slowStore struct {
	store.Store
	cost  time.Duration
	calls atomic.Int64
}

func (s *slowStore) pay() { s.calls.Add(1); time.Sleep(s.cost) }
func (s *slowStore) Principal(ctx context.Context, h domain.TokenHash) (domain.Principal, error) {
	s.pay()
	return s.Store.Principal(ctx, h)
}
func (s *slowStore) ItemsHaving(ctx context.Context, u int64, items []string) ([]string, error) {
	s.pay()
	return s.Store.ItemsHaving(ctx, u, items)
}
func (s *slowStore) Usage(ctx context.Context, u int64, start time.Time) (int64, error) {
	s.pay()
	return s.Store.Usage(ctx, u, start)
}

// coldCounter has no counter until it is seeded (a cold user).
type coldCounter struct{ seeded bool }

func (c *coldCounter) Count(context.Context, domain.CountRequest) (domain.UsageResult, error) {
	if !c.seeded {
		return domain.UsageResult{Outcome: domain.UsageCold}, nil
	}
	return domain.UsageResult{Outcome: domain.UsageAllowed, Used: 1}, nil
}
func (c *coldCounter) SeedUsage(context.Context, int64, time.Time, time.Time, int64) error {
	c.seeded = true
	return nil
}
func (c *coldCounter) RefundIdem(context.Context, int64, time.Time, domain.IdemKey) error {
	return nil
}

type noWarmup struct{}

func (noWarmup) Enqueue(context.Context, warmup.Job) (warmup.Status, error) {
	return warmup.Status{}, nil
}
func (noWarmup) Run(context.Context, warmup.Job) (warmup.Status, error) { return warmup.Status{}, nil }
func (noWarmup) Status(context.Context, int64) (warmup.Status, error)   { return warmup.Status{}, nil }

// A cold user's first query reads the store in auth (principal), in the
// usage check (the persisted count that seeds the counter) and in the query
// (items): the request's db phase holds all three, through the same wrapper
// build puts around the store.
func TestDBPhaseCountsEveryStoreCallOfAColdQuery(t *testing.T) {
	ctx := context.Background()
	mem, users := storetest.Memory(t, 1)
	u := users[0]
	tok, hash, _ := auth.NewToken()
	if _, err := mem.CreateToken(ctx, u.ID, hash, nil); err != nil {
		t.Fatal(err)
	}
	slow := &slowStore{Store: mem, cost: 2 * time.Millisecond}
	db := dbTimed{slow}
	authn := auth.New(auth.Config{Store: db})
	q := query.New(query.Config{
		Usage:  usage.New(usage.Config{Counter: &coldCounter{}, Ledger: db}),
		Items:  engine.New(engine.Config{Items: engine.FromStore(db)}),
		Warmup: noWarmup{}, Strategy: config.StrategyAsync, Tracer: tracenoop.NewTracerProvider().Tracer(""),
	})

	var tm telemetry.Timings
	rctx := telemetry.WithTimings(ctx, &tm)
	p, h, err := authn.Authenticate(rctx, "Bearer "+tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Query(rctx, query.Caller{Principal: p, Hash: h}, []string{"a"}, domain.IdemKey{}); err != nil {
		t.Fatal(err)
	}
	calls := slow.calls.Load()
	if calls != 3 {
		t.Fatalf("store calls %d, want 3 (principal, usage seed, items)", calls)
	}
	if got, want := tm.Get(telemetry.PhaseDB), time.Duration(calls)*slow.cost; got < want {
		t.Fatalf("db phase %v, want at least the %v its %d store calls took", got, want, calls)
	}
}
