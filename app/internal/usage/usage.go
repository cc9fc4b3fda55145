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
//
// A Count error whose outcome is unknown (the count may have been applied)
// implements Settler; the Service settles it, and Reconcile (Reconciler)
// later corrects the system of record once the counter answers again.
type Counter interface {
	Count(ctx context.Context, r domain.CountRequest) (domain.UsageResult, error)
	// SeedUsage installs persisted (plus what waits to be synced) unless a
	// counter already exists.
	SeedUsage(ctx context.Context, userID int64, start, reset time.Time, persisted int64) error
	// RefundIdem takes back one counted request (its work failed), and
	// forgets its idempotency key, if any.
	RefundIdem(ctx context.Context, userID int64, periodStart time.Time, k domain.IdemKey) error
}

// HasNotCounter is a Counter that can also answer a has-not lookup in the
// same atomic step as an allowed count (valkey.Cache: one round trip for a
// warm metered query). The count MUST be exactly Count's.
type HasNotCounter interface {
	CountHasNot(ctx context.Context, r domain.CountRequest, items []string) (domain.UsageResult, domain.CachedHasNot, error)
}

// Settler is a count error of unknown outcome: the caller says whether it
// served the request anyway.
type Settler interface {
	error
	Settle(served bool)
}

// Reconciler settles counts of unknown outcome once the counter answers
// again (valkey.Cache).
type Reconciler interface {
	Reconcile(ctx context.Context) (domain.Settlement, error)
	// Abandon takes every count still unsettled as not applied.
	Abandon() domain.Settlement
}

// Ledger is the system of record's view of usage.
type Ledger interface {
	Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error)
}

// Observer is told about usage-counter cache hits and misses.
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
	// UsageReconciled counts settled unknown outcomes by outcome
	// ("applied", "not_applied").
	UsageReconciled(ctx context.Context, outcome string, n int64)
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
	// Idem is the outcome of the request's idempotency key when it was not
	// simply counted: domain.UsageReplay (Answer is the first answer),
	// UsageInUse (RetryAfter), UsageReused, or UsageNotCounted (Allowed:
	// the first attempt was counted, this one is answered afresh).
	Idem   domain.UsageOutcome
	Answer domain.StoredAnswer
	// HasNot is the has-not lookup the counter answered in the same step
	// (CheckQuery); not Warm when it did not (then ask the item set).
	HasNot domain.CachedHasNot
	key    domain.IdemKey
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
	// IdemTTL is how long idempotency keys are kept (IDEMPOTENCY_TTL);
	// IdemLease how long a key's first request holds it.
	IdemTTL, IdemLease time.Duration
}

// Service checks and counts usage.
type Service struct {
	cfg    Config
	hasNot HasNotCounter // Counter, when it can answer has-not lookups too
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Local == nil {
		cfg.Local = NewLocal()
	}
	hn, _ := cfg.Counter.(HasNotCounter)
	return &Service{cfg: cfg, hasNot: hn}
}

// Check decides and, when allowed, counts one request of p.
func (s *Service) Check(ctx context.Context, p domain.Principal) (Decision, error) {
	return s.CheckKey(ctx, p, domain.IdemKey{})
}

// CheckKey is Check of a request with an idempotency key (none when k.Key
// is empty): the key and the count are one atomic step. A keyed request is
// never counted in process: without the counter its key cannot be kept, so
// it is refused (the client retries with the same key).
func (s *Service) CheckKey(ctx context.Context, p domain.Principal, k domain.IdemKey) (Decision, error) {
	return s.CheckQuery(ctx, p, k, nil)
}

// CheckQuery is CheckKey of a has-not query of items: when the counter can
// (HasNotCounter) and the count is allowed, the lookup is answered in the
// same step (Decision.HasNot), so a warm query needs no second round trip.
// Everything else (denials, a cold counter, keys, failures, fail-open) is
// CheckKey's; without an answer the caller asks the item set as usual.
func (s *Service) CheckQuery(ctx context.Context, p domain.Principal, k domain.IdemKey, items []string) (Decision, error) {
	now := s.cfg.Now()
	start, reset := p.Plan.Period.Window(now)
	req := domain.CountRequest{UserID: p.UserID, Start: start, Reset: reset, Limit: p.Plan.Quota, Idem: k, IdemTTL: s.cfg.IdemTTL, IdemLease: s.cfg.IdemLease}

	res, hn, err := s.count(ctx, req, items)
	if err == nil && res.Outcome == domain.UsageCold {
		s.observe(ctx, "miss")
		res, hn, err = s.seedAndRetry(ctx, req, items)
	} else if err == nil {
		s.observe(ctx, "hit")
	}
	if err != nil {
		s.observe(ctx, "error")
		var unknown Settler
		isUnknown := errors.As(err, &unknown)
		if !s.cfg.FailOpen || k.Key != "" {
			if isUnknown {
				unknown.Settle(false)
			}
			return Decision{}, apperr.Temporary(err, "usage metering is temporarily unavailable")
		}
		d, err := s.checkLocal(ctx, p.UserID, start, req.Limit, reset, now, isUnknown)
		if isUnknown {
			unknown.Settle(err == nil && d.Allowed)
		}
		return d, err
	}
	// The shared counter answers again: forget the in-process bases and
	// counts, so a later outage starts from the system of record afresh.
	s.cfg.Local.resetIfUsed()
	d := decide(res, req.Limit, reset, now, false)
	d.key = k
	if d.Allowed && hn.Warm {
		d.HasNot = hn
	}
	return d, nil
}

// count counts req, answering the has-not lookup of items in the same step
// when there are items and the counter can.
func (s *Service) count(ctx context.Context, req domain.CountRequest, items []string) (domain.UsageResult, domain.CachedHasNot, error) {
	if len(items) == 0 || s.hasNot == nil {
		res, err := s.cfg.Counter.Count(ctx, req)
		return res, domain.CachedHasNot{}, err
	}
	return s.hasNot.CountHasNot(ctx, req, items)
}

// Refund gives back the unit an allowed Decision counted, when the work it
// paid for failed: only successful metered requests are counted. A request
// answered afresh under a key that was counted before (UsageNotCounted)
// counted nothing here and keeps its key.
func (s *Service) Refund(ctx context.Context, p domain.Principal, d Decision) error {
	if !d.Allowed || d.Idem == domain.UsageNotCounted {
		return nil
	}
	start, _ := p.Plan.Period.Window(d.ResetAt.Add(-time.Nanosecond))
	if d.Degraded {
		s.cfg.Local.refund(p.UserID, start)
		return nil
	}
	if err := s.cfg.Counter.RefundIdem(ctx, p.UserID, start, d.key); err != nil {
		return fmt.Errorf("refund usage: %w", err)
	}
	return nil
}

// Reconcile settles counts whose outcome was unknown, if the counter can
// tell now, and hands the corrections to Local, which the usage sync
// persists. Call it periodically and once before the last sync at shutdown.
func (s *Service) Reconcile(ctx context.Context) error {
	r, ok := s.cfg.Counter.(Reconciler)
	if !ok {
		return nil
	}
	st, err := r.Reconcile(ctx)
	s.apply(ctx, st)
	return err
}

// Abandon gives up settling what is left (at shutdown, when the counter
// cannot tell in time): served requests of unknown outcome are persisted as
// counted, so none is lost; one the counter did apply is then doubled.
func (s *Service) Abandon(ctx context.Context) {
	if r, ok := s.cfg.Counter.(Reconciler); ok {
		s.apply(ctx, r.Abandon())
	}
}

func (s *Service) apply(ctx context.Context, st domain.Settlement) {
	if len(st.Corrections) > 0 {
		s.cfg.Local.Restore(st.Corrections)
	}
	if s.cfg.Observer != nil {
		if st.Applied > 0 {
			s.cfg.Observer.UsageReconciled(ctx, "applied", st.Applied)
		}
		if st.NotApplied > 0 {
			s.cfg.Observer.UsageReconciled(ctx, "not_applied", st.NotApplied)
		}
	}
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

func (s *Service) seedAndRetry(ctx context.Context, req domain.CountRequest, items []string) (domain.UsageResult, domain.CachedHasNot, error) {
	if err := s.seed(ctx, req.UserID, req.Start, req.Reset); err != nil {
		return domain.UsageResult{}, domain.CachedHasNot{}, err
	}
	res, hn, err := s.count(ctx, req, items)
	if err == nil && res.Outcome == domain.UsageCold {
		// The counter vanished between seed and count (eviction, restart): the
		// cache is not dependable right now.
		return res, domain.CachedHasNot{}, errors.New("usage counter vanished after seeding")
	}
	return res, hn, err
}

// checkLocal is the fail-open path: the base comes from the system of record
// and the in-process count is added; usagesync persists Local's deltas.
//
// A count of unknown outcome (provisional) counts against the quota here
// but is not handed to the sync: its unit reaches the system of record
// through Reconcile, once the counter can tell whether it applied it.
func (s *Service) checkLocal(ctx context.Context, userID int64, start time.Time, limit int64, reset, now time.Time, provisional bool) (Decision, error) {
	base, err := s.cfg.Local.base(ctx, s.cfg.Ledger, userID, start)
	if err != nil {
		return Decision{}, apperr.Temporary(err, "usage metering is temporarily unavailable")
	}
	res := s.cfg.Local.checkAndCount(userID, start, base, limit, provisional)
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
	switch res.Outcome {
	case domain.UsageDenied:
		d.RetryAfter = max(reset.Sub(now), time.Second)
	case domain.UsageNotCounted:
		d.Allowed, d.Idem = true, res.Outcome
	case domain.UsageReplay, domain.UsageReused:
		d.Idem, d.Answer = res.Outcome, res.Answer
	case domain.UsageInUse:
		d.Idem, d.RetryAfter = res.Outcome, max(res.RetryAfter, time.Second)
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

func (l *Local) checkAndCount(userID int64, start time.Time, base, limit int64, provisional bool) domain.UsageResult {
	k := localKey{userID, start}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used.Store(true)
	used := base + l.counts[k]
	if used >= limit {
		return domain.UsageResult{Outcome: domain.UsageDenied, Used: used}
	}
	l.counts[k]++
	if !provisional {
		l.pending[k]++
	}
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
