package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// meterName is the instrumentation scope of warmpath's own metrics.
const meterName = "github.com/warmpath/warmpath"

// Label values used by the Metrics methods. Other values are accepted, but
// these are the ones dashboards and alerts know.
const (
	WarmupKindLogin  = "login"
	WarmupKindSystem = "system"
	WarmupKindInline = "inline"

	CachePrincipal = "principal"
	CacheUsage     = "usage"
	CacheItems     = "items"

	CacheHit   = "hit"
	CacheMiss  = "miss"
	CacheError = "error"

	SyncApplied   = "applied"
	SyncDuplicate = "duplicate"
	SyncError     = "error"
)

// PoolStats is a snapshot of a database connection pool, shaped after
// pgxpool.Stat so the store can fill it without this package importing pgx.
type PoolStats struct {
	AcquiredConns     int64 // connections in use
	IdleConns         int64 // connections ready to be acquired
	TotalConns        int64 // acquired + idle + constructing
	MaxConns          int64 // the pool's size limit
	ConstructingConns int64 // connections being opened

	AcquireCount         int64         // cumulative successful acquires
	EmptyAcquireCount    int64         // cumulative acquires that had to wait for a connection
	CanceledAcquireCount int64         // cumulative acquires canceled by their context
	AcquireDuration      time.Duration // cumulative time spent acquiring
	EmptyAcquireWaitTime time.Duration // cumulative time waited by acquires that found the pool empty
}

// Metrics are warmpath's own instruments. All methods are safe for concurrent
// use.
type Metrics struct {
	thresholds Thresholds
	limits     [nPhases]time.Duration // per-phase threshold; 0 = none

	phaseDuration  metric.Float64Histogram
	slowPhase      metric.Int64Counter
	warmupJobs     metric.Int64Counter
	warmupDuration metric.Float64Histogram
	cacheRequests  metric.Int64Counter
	firstQuery     metric.Int64Counter
	syncBatches    metric.Int64Counter
	replays        metric.Int64Counter
	reconciled     metric.Int64Counter
	authMetrics    // warmpath_auth_requests_total, warmpath_jwks_refreshes_total

	// Precomputed attribute options: RecordRequest runs on every request
	// and must not allocate attribute sets.
	phaseRecord [nPhases][]metric.RecordOption
	phaseAdd    [nPhases][]metric.AddOption
	addOpts     map[labelKey][]metric.AddOption

	// Observed by callbacks registered in NewMetrics; set later by the
	// packages that own the numbers. An atomic pointer lets them register
	// after New, in any order, without re-registering instruments.
	queueDepth  atomic.Pointer[func() int64]
	syncPending atomic.Pointer[func() int64]
	syncLag     atomic.Pointer[func() float64]
	poolStats   atomic.Pointer[func() PoolStats]
}

// NewMetrics creates warmpath's instruments on mp. Zero thresholds take the
// defaults.
func NewMetrics(mp metric.MeterProvider, th Thresholds) (*Metrics, error) {
	th = th.withDefaults()
	meter := mp.Meter(meterName)
	m := &Metrics{thresholds: th, addOpts: map[labelKey][]metric.AddOption{}}
	m.limits[PhaseAuth] = th.Auth
	m.limits[PhaseUsageCheck] = th.UsageCheck
	m.limits[PhaseDB] = th.DB
	m.limits[PhaseTotal] = th.Total

	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	m.phaseDuration, err = meter.Float64Histogram("warmpath.phase.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time spent per request phase (auth, usage_check, query, db, total)."))
	check(err)
	m.slowPhase, err = meter.Int64Counter("warmpath.slow_phase",
		metric.WithUnit("{request}"),
		metric.WithDescription("Requests whose phase took longer than its alert threshold."))
	check(err)
	m.warmupJobs, err = meter.Int64Counter("warmpath.warmup.jobs",
		metric.WithUnit("{job}"),
		metric.WithDescription("Finished warmup jobs by kind (login, system, inline) and result."))
	check(err)
	m.warmupDuration, err = meter.Float64Histogram("warmpath.warmup.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of warmup jobs by kind."))
	check(err)
	m.cacheRequests, err = meter.Int64Counter("warmpath.cache.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Cache lookups by cache (principal, usage, items) and result (hit, miss, error)."))
	check(err)
	m.firstQuery, err = meter.Int64Counter("warmpath.first_query",
		metric.WithUnit("{query}"),
		metric.WithDescription("First metered query after each login warmup, by the state the warmup was in."))
	check(err)
	m.syncBatches, err = meter.Int64Counter("warmpath.usage_sync.batches",
		metric.WithUnit("{batch}"),
		metric.WithDescription("Usage write-behind batches by result (applied, duplicate, error)."))
	check(err)
	m.replays, err = meter.Int64Counter("warmpath.idempotent_replays",
		metric.WithUnit("{request}"),
		metric.WithDescription("Requests answered with the stored first answer of their Idempotency-Key."))
	check(err)
	m.reconciled, err = meter.Int64Counter("warmpath.usage.reconciled",
		metric.WithUnit("{request}"),
		metric.WithDescription("Counts whose Valkey outcome was unknown, settled after recovery, by outcome (applied, not_applied)."))
	check(err)

	_, err = meter.Float64ObservableGauge("warmpath.alert_threshold",
		metric.WithUnit("s"),
		metric.WithDescription("Configured alert threshold per phase."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			for i, lim := range m.limits {
				if lim > 0 {
					o.Observe(lim.Seconds(), metric.WithAttributeSet(phaseSet(Phase(i))))
				}
			}
			return nil
		}))
	check(err)
	check(observedInt(meter, "warmpath.warmup.queue_depth", "{job}", "Warmup jobs waiting in the queue.", &m.queueDepth))
	check(observedInt(meter, "warmpath.usage_sync.pending_users", "{user}", "Users with usage not yet written to Postgres.", &m.syncPending))
	_, err = meter.Float64ObservableGauge("warmpath.usage_sync.lag",
		metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest usage delta not yet written to Postgres."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			if f := m.syncLag.Load(); f != nil {
				o.Observe((*f)())
			}
			return nil
		}))
	check(err)
	check(m.registerPool(meter))
	check(m.registerAuth(meter))

	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create instruments: %w", err)
	}

	for i := range nPhases {
		set := phaseSet(i)
		m.phaseRecord[i] = []metric.RecordOption{metric.WithAttributeSet(set)}
		m.phaseAdd[i] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	pre := func(name string, keys []string, values ...[]string) {
		for _, combo := range product(values...) {
			kvs := make([]attribute.KeyValue, len(keys))
			for i, k := range keys {
				kvs[i] = attribute.String(k, combo[i])
			}
			k := labelKey{metric: name, a: combo[0]}
			if len(combo) > 1 {
				k.b = combo[1]
			}
			m.addOpts[k] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
		}
	}
	pre("cache", []string{"cache", "result"},
		[]string{CachePrincipal, CacheUsage, CacheItems}, []string{CacheHit, CacheMiss, CacheError})
	pre("sync", []string{"result"}, []string{SyncApplied, SyncDuplicate, SyncError})
	pre("first", []string{"warmup"}, []string{"ready", "running", "queued", "none", "idle", "failed"})
	pre("reconciled", []string{"outcome"}, []string{ReconciledApplied, ReconciledNotApplied})
	// Exported at 0 from the start: a panel of a healthy system shows 0.
	ctx := context.Background()
	m.replays.Add(ctx, 0)
	for _, o := range []string{ReconciledApplied, ReconciledNotApplied} {
		m.reconciled.Add(ctx, 0, m.addOpts[labelKey{"reconciled", o, ""}]...)
	}
	return m, nil
}

// registerPool creates the connection pool instruments, all fed by one
// callback so a scrape takes one consistent snapshot.
func (m *Metrics) registerPool(meter metric.Meter) error {
	var errs []error
	gauge := func(name, desc string) metric.Int64ObservableGauge {
		g, err := meter.Int64ObservableGauge(name, metric.WithUnit("{connection}"), metric.WithDescription(desc))
		if err != nil {
			errs = append(errs, err)
		}
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil {
			errs = append(errs, err)
		}
		return c
	}
	secs := func(name, desc string) metric.Float64ObservableCounter {
		c, err := meter.Float64ObservableCounter(name, metric.WithUnit("s"), metric.WithDescription(desc))
		if err != nil {
			errs = append(errs, err)
		}
		return c
	}
	acquired := gauge("warmpath.db.pool.acquired_conns", "Connections currently acquired from the pool.")
	idle := gauge("warmpath.db.pool.idle_conns", "Idle connections in the pool.")
	total := gauge("warmpath.db.pool.total_conns", "Connections in the pool (acquired, idle and constructing).")
	maxc := gauge("warmpath.db.pool.max_conns", "Maximum size of the pool.")
	constructing := gauge("warmpath.db.pool.constructing_conns", "Connections being opened.")
	acquires := counter("warmpath.db.pool.acquires", "{acquire}", "Successful acquires from the pool.")
	empty := counter("warmpath.db.pool.empty_acquires", "{acquire}", "Acquires that waited because the pool was empty.")
	canceled := counter("warmpath.db.pool.canceled_acquires", "{acquire}", "Acquires canceled by their context.")
	acqDur := secs("warmpath.db.pool.acquire_duration", "Cumulative time spent acquiring connections.")
	emptyWait := secs("warmpath.db.pool.empty_acquire_wait", "Cumulative time acquires waited on an empty pool.")
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		f := m.poolStats.Load()
		if f == nil {
			return nil
		}
		s := (*f)()
		o.ObserveInt64(acquired, s.AcquiredConns)
		o.ObserveInt64(idle, s.IdleConns)
		o.ObserveInt64(total, s.TotalConns)
		o.ObserveInt64(maxc, s.MaxConns)
		o.ObserveInt64(constructing, s.ConstructingConns)
		o.ObserveInt64(acquires, s.AcquireCount)
		o.ObserveInt64(empty, s.EmptyAcquireCount)
		o.ObserveInt64(canceled, s.CanceledAcquireCount)
		o.ObserveFloat64(acqDur, s.AcquireDuration.Seconds())
		o.ObserveFloat64(emptyWait, s.EmptyAcquireWaitTime.Seconds())
		return nil
	}, acquired, idle, total, maxc, constructing, acquires, empty, canceled, acqDur, emptyWait)
	if err != nil {
		return fmt.Errorf("register pool callback: %w", err)
	}
	return nil
}

// Thresholds returns the configured slow-phase thresholds.
func (m *Metrics) Thresholds() Thresholds { return m.thresholds }

// RecordRequest records warmpath_phase_duration_seconds{phase} for every phase
// that ran (non-zero) and always for total, counts
// warmpath_slow_phase_total{phase} for every phase longer than its threshold,
// and returns those phases' names (nil when none). Inside a sampled span the
// measurements carry the trace id as an exemplar.
func (m *Metrics) RecordRequest(ctx context.Context, b Breakdown) (slow []string) {
	durs := [nPhases]time.Duration{b.Auth, b.UsageCheck, b.Query, b.DB, b.Total}
	for i, d := range durs {
		p := Phase(i)
		if d <= 0 && p != PhaseTotal {
			continue
		}
		m.phaseDuration.Record(ctx, d.Seconds(), m.phaseRecord[i]...)
		if lim := m.limits[i]; lim > 0 && d > lim {
			m.slowPhase.Add(ctx, 1, m.phaseAdd[i]...)
			slow = append(slow, p.Metric())
		}
	}
	return slow
}

// WarmupJob records a finished warmup job: warmpath_warmup_jobs_total{kind,result}
// and warmpath_warmup_duration_seconds{kind}. kind is "login", "system" or
// "inline"; result is e.g. "ok" or "error".
func (m *Metrics) WarmupJob(ctx context.Context, kind, result string, d time.Duration) {
	m.warmupJobs.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("result", result)))
	m.warmupDuration.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("kind", kind)))
}

// CacheRequest counts a cache lookup: warmpath_cache_requests_total{cache,result}
// with cache "principal", "usage" or "items" and result "hit", "miss" or "error".
func (m *Metrics) CacheRequest(ctx context.Context, cache, result string) {
	if opts, ok := m.addOpts[labelKey{"cache", cache, result}]; ok {
		m.cacheRequests.Add(ctx, 1, opts...)
		return
	}
	m.cacheRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("cache", cache), attribute.String("result", result)))
}

// FirstQuery counts the first metered query after a login warmup by the state
// that warmup was in: warmpath_first_query_total{warmup="ready|running|queued|none"}.
func (m *Metrics) FirstQuery(ctx context.Context, warmupState string) {
	if opts, ok := m.addOpts[labelKey{"first", warmupState, ""}]; ok {
		m.firstQuery.Add(ctx, 1, opts...)
		return
	}
	m.firstQuery.Add(ctx, 1, metric.WithAttributes(attribute.String("warmup", warmupState)))
}

// The outcomes of warmpath_usage_reconciled_total.
const (
	ReconciledApplied    = "applied"
	ReconciledNotApplied = "not_applied"
)

// IdempotentReplay counts a request answered with its key's stored first
// answer: warmpath_idempotent_replays_total.
func (m *Metrics) IdempotentReplay(ctx context.Context) { m.replays.Add(ctx, 1) }

// UsageReconciled counts n settled counts of unknown outcome:
// warmpath_usage_reconciled_total{outcome="applied|not_applied"}.
func (m *Metrics) UsageReconciled(ctx context.Context, outcome string, n int64) {
	m.reconciled.Add(ctx, n, m.addOpts[labelKey{"reconciled", outcome, ""}]...)
}

// SyncBatch counts a usage write-behind batch:
// warmpath_usage_sync_batches_total{result="applied|duplicate|error"}.
func (m *Metrics) SyncBatch(ctx context.Context, result string) {
	if opts, ok := m.addOpts[labelKey{"sync", result, ""}]; ok {
		m.syncBatches.Add(ctx, 1, opts...)
		return
	}
	m.syncBatches.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

// observedInt registers the gauge name, read from the function src holds
// when it is collected (no sample while it holds none).
func observedInt(meter metric.Meter, name, unit, desc string, src *atomic.Pointer[func() int64]) error {
	_, err := meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if f := src.Load(); f != nil {
				o.Observe((*f)())
			}
			return nil
		}))
	return err
}

// ObserveQueueDepth makes f the source of warmpath_warmup_queue_depth. A later
// call replaces f; nil stops reporting.
func (m *Metrics) ObserveQueueDepth(f func() int64) { storeFunc(&m.queueDepth, f, f == nil) }

// ObserveSync makes pendingUsers and lagSeconds the sources of
// warmpath_usage_sync_pending_users and warmpath_usage_sync_lag_seconds.
// A later call replaces them; nil stops reporting that gauge.
func (m *Metrics) ObserveSync(pendingUsers func() int64, lagSeconds func() float64) {
	storeFunc(&m.syncPending, pendingUsers, pendingUsers == nil)
	storeFunc(&m.syncLag, lagSeconds, lagSeconds == nil)
}

// ObservePool makes stats the source of the warmpath_db_pool_* metrics:
// gauges acquired_conns, idle_conns, total_conns, max_conns,
// constructing_conns; counters acquires_total, empty_acquires_total,
// canceled_acquires_total, acquire_duration_seconds_total,
// empty_acquire_wait_seconds_total. A later call replaces stats.
func (m *Metrics) ObservePool(stats func() PoolStats) { storeFunc(&m.poolStats, stats, stats == nil) }

// storeFunc stores f, or clears p when f is nil.
func storeFunc[F any](p *atomic.Pointer[F], f F, isNil bool) {
	if isNil {
		p.Store(nil)
		return
	}
	p.Store(&f)
}

// phaseSet is the attribute set {phase=p.Metric()}.
func phaseSet(p Phase) attribute.Set {
	return attribute.NewSet(attribute.String("phase", p.Metric()))
}

// labelKey identifies one precomputed label combination of one metric.
type labelKey struct{ metric, a, b string }

// product returns the cartesian product of the value lists.
func product(lists ...[]string) [][]string {
	out := [][]string{{}}
	for _, l := range lists {
		var next [][]string
		for _, prefix := range out {
			for _, v := range l {
				next = append(next, append(append([]string(nil), prefix...), v))
			}
		}
		out = next
	}
	return out
}
