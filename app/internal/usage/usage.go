// Package usage decides whether a metered request may run and counts it, in
// one atomic step against the hot counter (Valkey). Postgres, the system of
// record, receives the counts asynchronously (see usagesync); this package
// only reads it to seed a cold counter (Seed, which warmup calls too).
package usage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// Counter is the hot, shared counter of the period [start, reset); it owns
// the counter's lifetime. CheckAndCount MUST be atomic across every
// instance: concurrent calls never admit more than limit.
type Counter interface {
	CheckAndCount(ctx context.Context, userID int64, start, reset time.Time, limit int64) (domain.UsageResult, error)
	// SeedUsage installs persisted (plus what waits to be synced) unless a
	// counter already exists.
	SeedUsage(ctx context.Context, userID int64, start, reset time.Time, persisted int64) error
	// Refund takes back one counted request (its work failed).
	Refund(ctx context.Context, userID int64, periodStart time.Time) error
}

// Ledger is the system of record's view of usage.
type Ledger interface {
	Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error)
}

// Observer is told about usage-counter cache hits and misses.
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
}

// Decision is the answer to "may this request run?". A denial is a value,
// not an error.
type Decision struct {
	Allowed    bool
	Used       int64
	Limit      int64
	Remaining  int64
	ResetAt    time.Time
	RetryAfter time.Duration // until ResetAt, when denied
	Degraded   bool          // counted in process because the counter was unreachable
}

// Config configures a Service.
type Config struct {
	Counter  Counter
	Ledger   Ledger
	Observer Observer
	Now      func() time.Time
	// FailOpen serves requests when the counter is unreachable, counting them
	// in process (Local); otherwise such requests get apperr.Unavailable.
	FailOpen bool
	Local    *Local
}

// Service checks and counts usage.
type Service struct{ cfg Config }

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Local == nil {
		cfg.Local = NewLocal()
	}
	return &Service{cfg: cfg}
}

// Check decides and, when allowed, counts one request of p.
func (s *Service) Check(ctx context.Context, p domain.Principal) (Decision, error) {
	now := s.cfg.Now()
	start, reset := p.Plan.Period.Window(now)
	limit := p.Plan.Quota

	res, err := s.cfg.Counter.CheckAndCount(ctx, p.UserID, start, reset, limit)
	if err == nil && res.Outcome == domain.UsageCold {
		s.observe(ctx, "miss")
		res, err = s.seedAndRetry(ctx, p.UserID, start, reset, limit)
	} else if err == nil {
		s.observe(ctx, "hit")
	}
	if err != nil {
		s.observe(ctx, "error")
		if !s.cfg.FailOpen {
			return Decision{}, apperr.Temporary(err, "usage metering is temporarily unavailable")
		}
		return s.checkLocal(ctx, p.UserID, start, limit, reset, now)
	}
	// The shared counter answers again: forget the in-process bases and
	// counts, so a later outage starts from the system of record afresh.
	s.cfg.Local.resetIfUsed()
	return decide(res, limit, reset, now, false), nil
}

// Refund gives back the unit an allowed Decision counted, when the work it
// paid for failed: only successful metered requests are counted.
func (s *Service) Refund(ctx context.Context, p domain.Principal, d Decision) error {
	if !d.Allowed {
		return nil
	}
	start, _ := p.Plan.Period.Window(d.ResetAt.Add(-time.Nanosecond))
	if d.Degraded {
		s.cfg.Local.refund(p.UserID, start)
		return nil
	}
	if err := s.cfg.Counter.Refund(ctx, p.UserID, start); err != nil {
		return fmt.Errorf("refund usage: %w", err)
	}
	return nil
}

// Seed installs the user's counter of the current period of period from the
// system of record, unless a counter already exists: the cold path of Check,
// and warmup's usage part.
func (s *Service) Seed(ctx context.Context, userID int64, period domain.Period) error {
	start, reset := period.Window(s.cfg.Now())
	return s.seed(ctx, userID, start, reset)
}

func (s *Service) seed(ctx context.Context, userID int64, start, reset time.Time) error {
	persisted, err := s.cfg.Ledger.Usage(ctx, userID, start)
	if err != nil {
		return fmt.Errorf("seed usage: load usage: %w", err)
	}
	if err := s.cfg.Counter.SeedUsage(ctx, userID, start, reset, persisted); err != nil {
		return fmt.Errorf("seed usage: %w", err)
	}
	return nil
}

func (s *Service) seedAndRetry(ctx context.Context, userID int64, start, reset time.Time, limit int64) (domain.UsageResult, error) {
	if err := s.seed(ctx, userID, start, reset); err != nil {
		return domain.UsageResult{}, err
	}
	res, err := s.cfg.Counter.CheckAndCount(ctx, userID, start, reset, limit)
	if err == nil && res.Outcome == domain.UsageCold {
		// The counter vanished between seed and count (eviction, restart): the
		// cache is not dependable right now.
		return res, errors.New("usage counter vanished after seeding")
	}
	return res, err
}

// checkLocal is the fail-open path: the base comes from the system of record
// and the in-process count is added; usagesync persists Local's deltas.
func (s *Service) checkLocal(ctx context.Context, userID int64, start time.Time, limit int64, reset, now time.Time) (Decision, error) {
	base, err := s.cfg.Local.base(ctx, s.cfg.Ledger, userID, start)
	if err != nil {
		return Decision{}, apperr.Temporary(err, "usage metering is temporarily unavailable")
	}
	res := s.cfg.Local.checkAndCount(userID, start, base, limit)
	return decide(res, limit, reset, now, true), nil
}

func decide(res domain.UsageResult, limit int64, reset, now time.Time, degraded bool) Decision {
	d := Decision{
		Allowed:  res.Outcome == domain.UsageAllowed,
		Used:     res.Used,
		Limit:    limit,
		ResetAt:  reset,
		Degraded: degraded,
	}
	d.Remaining = max(limit-res.Used, 0)
	if !d.Allowed {
		d.RetryAfter = max(reset.Sub(now), time.Second)
	}
	return d
}

func (s *Service) observe(ctx context.Context, result string) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.CacheRequest(ctx, "usage", result)
	}
}

// Local counts requests in process while the shared counter is unreachable
// (USAGE_FAILURE_MODE=open). Its deltas are drained by the sync loop and
// persisted through the same idempotent batch path as Valkey's.
type Local struct {
	used    atomic.Bool // something was counted here since the last Reset
	mu      sync.Mutex
	bases   map[localKey]int64 // persisted count when first seen
	counts  map[localKey]int64 // counted here since, persisted or not
	pending map[localKey]int64 // counted here, not yet drained
}

type localKey struct {
	user  int64
	start time.Time
}

// NewLocal returns an empty Local.
func NewLocal() *Local {
	return &Local{bases: map[localKey]int64{}, counts: map[localKey]int64{}, pending: map[localKey]int64{}}
}

func (l *Local) base(ctx context.Context, ledger Ledger, userID int64, start time.Time) (int64, error) {
	k := localKey{userID, start}
	l.mu.Lock()
	b, ok := l.bases[k]
	l.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := ledger.Usage(ctx, userID, start)
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	if old, ok := l.bases[k]; ok {
		b = old
	} else {
		l.bases[k] = b
	}
	l.mu.Unlock()
	return b, nil
}

func (l *Local) checkAndCount(userID int64, start time.Time, base, limit int64) domain.UsageResult {
	k := localKey{userID, start}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used.Store(true)
	used := base + l.counts[k]
	if used >= limit {
		return domain.UsageResult{Outcome: domain.UsageDenied, Used: used}
	}
	l.counts[k]++
	l.pending[k]++
	return domain.UsageResult{Outcome: domain.UsageAllowed, Used: used + 1}
}

// refund takes back one request counted here.
func (l *Local) refund(userID int64, start time.Time) {
	k := localKey{userID, start}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[k]--
	l.pending[k]--
}

// Drain returns and forgets the deltas counted in process since the last
// Drain. The caller MUST persist them or hand them back with Restore.
func (l *Local) Drain() []domain.UsageDelta {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	out := make([]domain.UsageDelta, 0, len(l.pending))
	for k, n := range l.pending {
		out = append(out, domain.UsageDelta{UserID: k.user, PeriodStart: k.start, Delta: n})
	}
	clear(l.pending)
	return out
}

// Restore hands back deltas that could not be persisted.
func (l *Local) Restore(deltas []domain.UsageDelta) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range deltas {
		l.pending[localKey{d.UserID, d.PeriodStart}] += d.Delta
	}
}

// Reset forgets the in-process bases and counts once the shared counter is
// back (its values are rebuilt from the system of record).
func (l *Local) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.bases)
	clear(l.counts)
	l.used.Store(false)
}

// resetIfUsed is Reset, at the cost of one atomic load when nothing was
// counted here (the hot path).
func (l *Local) resetIfUsed() {
	if l.used.Load() {
		l.Reset()
	}
}
