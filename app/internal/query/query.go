// Package query is the metered has-not query as a whole: the usage check,
// the has-not answer, the warmup strategy (what a cold answer does) and the
// refund of a query that failed. It also owns the login warmup request, the
// other place the strategy decides, and counts each login's first query by
// the state its warmup was in. HTTP parses and renders around it.
package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// Usage checks and counts metered requests (usage.Service). CheckQuery may
// answer the has-not lookup of items in the same step (Decision.HasNot).
type Usage interface {
	CheckQuery(ctx context.Context, p domain.Principal, k domain.IdemKey, items []string) (usage.Decision, error)
	Refund(ctx context.Context, p domain.Principal, d usage.Decision) error
}

// Items answers has-not queries (engine.Engine); Answered is the Result of
// a lookup the item-set cache answered inside the usage check.
type Items interface {
	HasNot(ctx context.Context, userID int64, items []string) (engine.Result, error)
	Answered(ctx context.Context, missing []string) engine.Result
}

// Warmup is the warmup manager as queries use it.
type Warmup interface {
	Enqueue(ctx context.Context, job warmup.Job) (warmup.Status, error)
	Run(ctx context.Context, job warmup.Job) (warmup.Status, error)
	Status(ctx context.Context, userID int64) (warmup.Status, error)
}

// Observer counts first queries after a login warmup and idempotent
// replays (telemetry.Metrics).
type Observer interface {
	FirstQuery(ctx context.Context, warmupState string)
	IdempotentReplay(ctx context.Context)
}

// Keys keeps idempotency keys of requests that are not metered and the
// first answers of all (valkey.Cache); a metered request's key is taken in
// its count (Usage.CheckQuery).
type Keys interface {
	IdemBegin(ctx context.Context, userID int64, k domain.IdemKey, ttl, lease time.Duration) (domain.UsageResult, error)
	IdemStore(ctx context.Context, userID int64, k domain.IdemKey, a domain.StoredAnswer) error
	IdemForget(ctx context.Context, userID int64, k domain.IdemKey) error
}

// Config configures a Service.
type Config struct {
	Usage    Usage
	Items    Items
	Warmup   Warmup
	Observer Observer
	Keys     Keys
	// IdemTTL is how long idempotency keys are kept (IDEMPOTENCY_TTL);
	// IdemLease how long a key's first request holds it.
	IdemTTL, IdemLease time.Duration
	// Strategy is WARMUP_STRATEGY: config.StrategyAsync, StrategyInline or
	// StrategyOff.
	Strategy string
	Tracer   trace.Tracer
	Logger   *slog.Logger
}

// Caller is an authenticated caller: its principal and its token's hash (a
// warmup caches the principal under it).
type Caller struct {
	Principal domain.Principal
	Hash      domain.TokenHash
}

// Answer is a query's answer. Usage is the usage decision whenever the check
// ran (Metered), also when the query then failed or was refused. Replayed
// answers are the stored first answer (Stored) of the request's key.
type Answer struct {
	Missing  []string
	Usage    usage.Decision
	Metered  bool
	Replayed bool
	Stored   domain.StoredAnswer
}

// Service runs metered queries.
type Service struct {
	cfg   Config
	first *firstQueries
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, first: newFirstQueries()}
}

// SystemHotUsers is how many hot users the system warmup warms under
// strategy: none when warmup is off (A/B runs), else n.
func SystemHotUsers(strategy string, n int) int {
	if strategy == config.StrategyOff {
		return 0
	}
	return n
}

// Query answers which of items the caller's set does not have, for one unit
// of quota: usage check (a denial is apperr.QuotaExceeded), the has-not
// answer (given by the usage check's own round trip when the user's set is
// cached, else asked of Items), then the strategy's move on a cold answer. A query that fails
// after it was counted is refunded. With an idempotency key (k.Key set) a
// repeat is answered with the first answer (Replayed) and never counted
// again; the caller stores the first answer with Remember.
func (s *Service) Query(ctx context.Context, c Caller, items []string, k domain.IdemKey) (Answer, error) {
	p := c.Principal
	var ans Answer
	// One round trip may answer both the usage check and the has-not
	// lookup (Decision.HasNot): the server timed the lookup, so that much
	// of the call is the query phase, and the rest (the count and the
	// round trip) the usage check's. The query phase is placed at the
	// call's end; on the server only the count's writes (a few µs) follow
	// the lookup.
	start := time.Now()
	uctx, usagePhase := telemetry.StartPhase(ctx, s.cfg.Tracer, telemetry.PhaseUsageCheck, start)
	var err error
	ans.Usage, err = s.cfg.Usage.CheckQuery(uctx, p, k, items)
	split := time.Now()
	pre := ans.Usage.HasNot
	var lookup time.Duration // the server's time for the lookup, within the call
	if pre.Warm {
		// Clamped to the call: the server's clock may step between its
		// two readings.
		lookup = max(0, min(pre.QueryTime, split.Sub(start)))
		split = split.Add(-lookup)
	}
	usagePhase.End(split, err)
	if err != nil {
		return ans, err
	}
	if d := ans.Usage; d.Idem != 0 && d.Idem != domain.UsageNotCounted {
		ans, err := s.keyOutcome(ctx, d.Idem, d.Answer, d.RetryAfter)
		// A replay carries the quota as it is now.
		ans.Usage, ans.Metered = d, ans.Replayed
		return ans, err
	}
	ans.Metered = true
	if d := ans.Usage; !d.Allowed {
		return ans, &apperr.Error{Code: apperr.QuotaExceeded, Message: fmt.Sprintf("quota of %d queries per %s reached; it resets at %s", d.Limit, p.Plan.Period, d.ResetAt.Format(time.RFC3339)), RetryAfter: d.RetryAfter}
	}
	s.recordFirstQuery(ctx, p.UserID)

	if pre.Warm {
		// The span starts where the server's lookup began and lasts the
		// lookup plus what is done with its answer here.
		qctx, queryPhase := telemetry.StartPhase(ctx, s.cfg.Tracer, telemetry.PhaseQuery, split, trace.WithAttributes(answeredInCount))
		t := time.Now()
		ans.Missing = s.cfg.Items.Answered(qctx, pre.Missing).Missing
		queryPhase.End(split.Add(lookup+time.Since(t)), nil)
		return ans, nil
	}
	err = telemetry.RunPhase(ctx, s.cfg.Tracer, telemetry.PhaseQuery, func(ctx context.Context) error {
		res, err := s.cfg.Items.HasNot(ctx, p.UserID, items)
		if err != nil {
			return err
		}
		ans.Missing = res.Missing
		if res.Source != engine.SourceCache {
			ans.Missing = s.cold(ctx, c, items, res.Missing)
		}
		return nil
	})
	if err != nil {
		// Only successful metered requests count: give the unit back.
		if rerr := s.cfg.Usage.Refund(context.WithoutCancel(ctx), p, ans.Usage); rerr != nil {
			s.cfg.Logger.WarnContext(ctx, "usage refund failed; a failed request stays counted", "user_id", p.UserID, "err", rerr.Error())
		}
		return ans, err
	}
	return ans, nil
}

// answeredInCount marks an engine.query span whose lookup the usage
// count's round trip answered (its time is the server's own).
var answeredInCount = attribute.Bool("warmpath.query.in_count", true)

// keyOutcome is the answer to a request whose idempotency key was used
// before: the replay of its first answer, or the documented refusal.
func (s *Service) keyOutcome(ctx context.Context, o domain.UsageOutcome, stored domain.StoredAnswer, retry time.Duration) (Answer, error) {
	switch o {
	case domain.UsageReplay:
		if s.cfg.Observer != nil {
			s.cfg.Observer.IdempotentReplay(ctx)
		}
		return Answer{Replayed: true, Stored: stored}, nil
	case domain.UsageInUse:
		return Answer{}, &apperr.Error{Code: apperr.IdemKeyInUse, Message: "a request with this Idempotency-Key is still being answered; retry shortly", RetryAfter: max(retry, time.Second)}
	case domain.UsageReused:
		return Answer{}, apperr.New(apperr.IdemKeyReused, "this Idempotency-Key was used with another request; use a new key for a new request")
	}
	return Answer{}, fmt.Errorf("idempotency: unexpected outcome %v", o)
}

// Remember stores the first answer of a request with an idempotency key,
// for its repeats. A failure is logged, not returned: the answer still goes
// out, and a repeat after the key's lease is answered afresh, uncounted.
func (s *Service) Remember(ctx context.Context, c Caller, k domain.IdemKey, a domain.StoredAnswer) {
	if k.Key == "" || s.cfg.Keys == nil {
		return
	}
	if err := s.cfg.Keys.IdemStore(context.WithoutCancel(ctx), c.Principal.UserID, k, a); err != nil {
		s.cfg.Logger.WarnContext(ctx, "store idempotent answer", "user_id", c.Principal.UserID, "err", err.Error())
	}
}

// Keyed runs do, a request that is not metered, under the caller's
// idempotency key: a repeat is answered with the first answer, a reuse or a
// key still held is refused, and a failure forgets the key so a retry runs
// afresh. Without a key it just runs do.
func (s *Service) Keyed(ctx context.Context, c Caller, k domain.IdemKey, do func(ctx context.Context) (domain.StoredAnswer, error)) (Answer, error) {
	if k.Key == "" || s.cfg.Keys == nil {
		a, err := do(ctx)
		return Answer{Stored: a}, err
	}
	res, err := s.cfg.Keys.IdemBegin(ctx, c.Principal.UserID, k, s.cfg.IdemTTL, s.cfg.IdemLease)
	if err != nil {
		return Answer{}, apperr.Temporary(err, "idempotency keys are temporarily unavailable; retry with the same key")
	}
	if res.Outcome != domain.UsageAllowed && res.Outcome != domain.UsageNotCounted {
		return s.keyOutcome(ctx, res.Outcome, res.Answer, res.RetryAfter)
	}
	a, err := do(ctx)
	if err != nil {
		if ferr := s.cfg.Keys.IdemForget(context.WithoutCancel(ctx), c.Principal.UserID, k); ferr != nil {
			s.cfg.Logger.WarnContext(ctx, "forget idempotency key of a failed request", "user_id", c.Principal.UserID, "err", ferr.Error())
		}
		return Answer{}, err
	}
	s.Remember(ctx, c, k, a)
	return Answer{Stored: a}, nil
}

// cold is the warmup strategy for an answer the cache could not give: async
// warms the user for next time and answers now; inline (the pre-optimisation
// behaviour, kept for A/B runs) waits for the full warmup and answers from
// the cache; off does nothing.
func (s *Service) cold(ctx context.Context, c Caller, items, missing []string) []string {
	userID := c.Principal.UserID
	switch s.cfg.Strategy {
	case config.StrategyAsync:
		if _, err := s.cfg.Warmup.Enqueue(ctx, warmup.Job{UserID: userID, TokenHash: &c.Hash, Kind: warmup.KindLogin, Cause: ctx}); err != nil && !errors.Is(err, warmup.ErrQueueFull) {
			// Debug, not warn: while Valkey is down every query is cold and
			// this would log once per request; readyz and the cache metrics
			// already say it.
			s.cfg.Logger.DebugContext(ctx, "enqueue warmup for cold user", "user_id", userID, "err", err.Error())
		}
	case config.StrategyInline:
		if _, err := s.cfg.Warmup.Run(ctx, warmup.Job{UserID: userID, TokenHash: &c.Hash, Kind: warmup.KindInline, Cause: ctx}); err == nil {
			if again, err := s.cfg.Items.HasNot(ctx, userID, items); err == nil {
				return again.Missing
			}
		}
	}
	return missing
}

// Warm asks for the caller's login warmup and returns at once. With warmup
// off it enqueues nothing and reports the status.
func (s *Service) Warm(ctx context.Context, c Caller) (warmup.Status, error) {
	if s.cfg.Strategy == config.StrategyOff {
		return s.WarmupStatus(ctx, c.Principal.UserID)
	}
	ws, err := s.cfg.Warmup.Enqueue(ctx, warmup.Job{UserID: c.Principal.UserID, TokenHash: &c.Hash, Kind: warmup.KindLogin, Cause: ctx})
	if errors.Is(err, warmup.ErrQueueFull) {
		return ws, &apperr.Error{Code: apperr.WarmupQueueFull, Message: "the warmup queue is full; queries still work, try warming up again shortly", RetryAfter: time.Second, Err: err}
	}
	if err != nil {
		return ws, apperr.Temporary(err, "warmup is temporarily unavailable; queries still work")
	}
	s.first.mark(c.Principal.UserID)
	return ws, nil
}

// WarmupStatus returns the user's warmup status.
func (s *Service) WarmupStatus(ctx context.Context, userID int64) (warmup.Status, error) {
	ws, err := s.cfg.Warmup.Status(ctx, userID)
	if err != nil {
		return ws, apperr.Temporary(err, "warmup status is temporarily unavailable")
	}
	return ws, nil
}

// recordFirstQuery counts the first metered query after a login warmup
// requested here by the state that warmup was in
// (warmpath_first_query_total).
func (s *Service) recordFirstQuery(ctx context.Context, userID int64) {
	if s.cfg.Observer == nil || !s.first.take(userID) {
		return
	}
	state := "none"
	if ws, err := s.cfg.Warmup.Status(ctx, userID); err == nil && ws.State != warmup.StateIdle {
		state = string(ws.State)
		if ws.State == warmup.StateFailed {
			state = "none"
		}
	}
	s.cfg.Observer.FirstQuery(ctx, state)
}

// firstQueries remembers users whose login warmup was requested here and
// whose first metered query has not been seen yet.
type firstQueries struct {
	mu sync.Mutex
	m  map[int64]struct{}
}

func newFirstQueries() *firstQueries { return &firstQueries{m: map[int64]struct{}{}} }

func (f *firstQueries) mark(userID int64) {
	f.mu.Lock()
	// Bounded: a flood of warmups must not grow memory without limit.
	if len(f.m) < 1<<20 {
		f.m[userID] = struct{}{}
	}
	f.mu.Unlock()
}

func (f *firstQueries) take(userID int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return false
	}
	if _, ok := f.m[userID]; !ok {
		return false
	}
	delete(f.m, userID)
	return true
}
