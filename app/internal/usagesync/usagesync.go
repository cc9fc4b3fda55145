// Package usagesync is warmpath's write-behind usage sync: a loop that moves
// the usage deltas counted in the hot cache (Valkey) to the system of record
// (Postgres) in batches, exactly once, through crashes, restarts, outages and
// several instances syncing at the same time.
//
// # Protocol: claim → apply → acknowledge
//
// The queue (Pending; valkey.SyncQueue implements it on Valkey) hands out
// batches. Claiming a batch moves the deltas of up to BatchSize dirty users
// out of their pending hashes into in-flight entries tagged with the batch
// key, and records the batch (owner, lease, deltas). The Syncer then applies
// the deltas to the Ledger with Ledger.ApplyUsageBatch(Key = the batch key),
// which adds the counts and records the key in one Postgres transaction, and
// finally acknowledges the batch (the queue forgets it). A batch whose owner
// stops renewing its lease is taken over by any instance and applied again
// WITH THE SAME KEY, so Postgres counts it once whatever happened before:
//
//   - crash after claim, before apply: the lease expires, another instance
//     applies the recorded deltas (or, if the claim never finished, moves
//     them back to pending); nothing is lost.
//   - crash after apply, before ack: the taker's apply finds the key already
//     recorded (applied=false, nothing changes) and then acknowledges;
//     nothing is doubled.
//   - crash mid-ack: the batch record is deleted last, so it is still there:
//     taken over, re-applied as a no-op, acknowledged again (idempotent).
//   - Postgres down or an ambiguous commit (timeout): the batch stays held by
//     its owner, which keeps renewing the lease and retries the SAME key with
//     capped exponential backoff.
//
// # Liveness, and the last graceful stop
//
// With Config.Liveness, every instance keeps a liveness entry (in Valkey: a
// key with a short TTL, AliveTTL) that a goroutine of Run refreshes. A batch
// whose owner is not alive is taken over at once, without waiting out its
// lease; the lease still protects the batches of an owner that is alive. A
// takeover of a live owner's batch (a stall longer than AliveTTL) costs only
// work done twice: the apply is idempotent by key, and a batch taken while
// its owner was still claiming it is reverted by both.
//
// Flush, the shutdown flush, then works in three phases:
//
//  1. stopping: the instance's own work (in-process deltas, held batches),
//     batches of owners that are not alive, and the dirty index, under the
//     state StateStopping (still alive: nobody takes its batches).
//  2. It leaves (its entry is deleted) and looks at the other entries: an
//     instance that beats (its state changes), one that appeared, or one
//     that is stopping or finishing will finish after it, so it is done. An
//     entry that does not change belongs to an instance that was killed: it
//     waits for it to lapse (at most AliveTTL).
//  3. finishing (StateFinishing), when no other instance is alive: it is the
//     last one, so it repairs lost dirty marks (Config.Sweep), then takes
//     over every batch left by killed instances and drains the dirty index.
//
// So once every instance has stopped gracefully within its deadline,
// Postgres holds every count and the queue is empty. Two instances stopping
// at the same time both leave before they look, so at least one of them
// finishes (both may: that is safe).
//
// Deltas counted in process while Valkey is down (LocalSource, fail-open
// mode) go through the same ApplyUsageBatch path, under keys of their own
// that are kept across retries for the same reason.
//
// Requests never wait for any of this: the loop runs on its own goroutine and
// Trigger only signals it.
package usagesync

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/internal/ctxtime"
)

// Batch results reported to Observer.SyncBatch and in Status.LastBatch; they
// are the values of warmpath_usage_sync_batches_total{result}.
const (
	ResultApplied   = "applied"   // the batch's deltas were added to the ledger
	ResultDuplicate = "duplicate" // the key was already applied: nothing changed
	ResultError     = "error"     // the apply failed; the batch is kept and retried
)

// DefaultBatchSize is the number of users per batch when Config.BatchSize is 0.
const DefaultBatchSize = 100

// DefaultFlushBatchSize is the default Config.FlushBatchSize.
const DefaultFlushBatchSize = 5000

// maxHeld bounds the batches one Syncer keeps for retry before it stops
// claiming more; it only matters when batches fail for a reason other than
// an outage (e.g. a user unknown to the ledger).
const maxHeld = 8

// Ledger is the system of record's batch entry point. ApplyUsageBatch MUST
// add every delta and record batch.Key in one transaction, and MUST change
// nothing and return applied=false for a key it has already recorded.
type Ledger interface {
	ApplyUsageBatch(ctx context.Context, batch domain.UsageBatch) (applied bool, err error)
}

// Batch is a claimed set of deltas and its idempotency key.
type Batch struct {
	// Key identifies the batch in the queue and is its idempotency key in the
	// ledger.
	Key string
	// Deltas are the claimed counts; empty when the claimed users had nothing
	// pending (the batch is then only acknowledged).
	Deltas []domain.UsageDelta
	// Users is how many users were taken from the dirty index for this batch
	// (0: nothing was dirty). A batch with Users == the requested limit
	// means more may be waiting.
	Users int
}

// QueueStats describes what is waiting to reach the ledger.
type QueueStats struct {
	// PendingUsers counts dirty users plus users of claimed, unacknowledged
	// batches.
	PendingUsers int64
	// Oldest is when the oldest waiting delta was counted (zero: nothing
	// waits).
	Oldest time.Time
}

// Pending is the queue of usage deltas waiting for the ledger.
// Implementations MUST be safe for concurrent use by several Syncers in
// several processes.
type Pending interface {
	// Claim takes up to limit dirty users into a new batch owned by owner. A
	// batch with Users == 0 means nothing was dirty.
	Claim(ctx context.Context, owner string, limit int) (Batch, error)
	// Recover takes over batches whose lease expired or whose owner is not
	// alive (Liveness), and returns up to limit of them that must be applied
	// (again) under their own key; fewer than limit means none is left.
	Recover(ctx context.Context, owner string, limit int) ([]Batch, error)
	// Renew extends owner's lease on the batch; false means the batch is no
	// longer owner's (taken over or already acknowledged): the caller must
	// drop it.
	Renew(ctx context.Context, key, owner string) (bool, error)
	// Ack forgets a batch that the ledger holds. It is idempotent.
	Ack(ctx context.Context, b Batch) error
	// Stats reports what waits.
	Stats(ctx context.Context) (QueueStats, error)
}

// Liveness is the roster of running instances (valkey.SyncQueue implements
// it). An owner is alive while its entry exists: Beat creates or refreshes
// it for ttl, Leave deletes it. Pending.Recover takes over the batches of an
// owner that is not alive at once. Implementations MUST be safe for
// concurrent use by several processes.
type Liveness interface {
	// Beat marks owner alive for ttl, in state (a running instance's state
	// changes on every beat; see StateStopping, StateFinishing).
	Beat(ctx context.Context, owner, state string, ttl time.Duration) error
	// Leave marks owner gone at once.
	Leave(ctx context.Context, owner string) error
	// Others returns the state of every alive owner but owner.
	Others(ctx context.Context, owner string) (map[string]string, error)
}

// States an instance announces through Liveness besides its running beats
// ("run:<n>", n growing with every beat).
const (
	// StateStopping: its shutdown flush is finishing its own work; it will
	// then check whether it is the last instance.
	StateStopping = "stopping"
	// StateFinishing: it is the last instance and drains everything left.
	StateFinishing = "finishing"
)

// DefaultAliveTTL is the lifetime of a liveness entry for a sync interval:
// two intervals, between 2s and 5s. Run refreshes it every quarter of it on a
// goroutine of its own (a long batch never delays a beat), so an instance is
// taken for dead only after three missed beats; the bound keeps the wait of
// the last graceful stop for a killed instance's entry (at most one TTL) well
// inside SHUTDOWN_TIMEOUT. It never exceeds DefaultLease, so liveness only
// ever shortens a takeover.
func DefaultAliveTTL(interval time.Duration) time.Duration {
	return min(max(2*interval, 2*time.Second), 5*time.Second)
}

// LocalSource holds usage counted in process while the shared counter is
// unreachable (usage.Local implements it). Drain hands over and forgets the
// deltas; Restore takes back those that could not be persisted.
type LocalSource interface {
	Drain() []domain.UsageDelta
	Restore([]domain.UsageDelta)
}

// Observer receives the sync's metrics (telemetry.Metrics implements it).
type Observer interface {
	// SyncBatch counts one batch by result (ResultApplied, ResultDuplicate,
	// ResultError).
	SyncBatch(ctx context.Context, result string)
	// ObserveSync registers the sources of the pending-users and lag gauges.
	ObserveSync(pending func() int64, lag func() float64)
}

// Config configures a Syncer. Store and Queue are required.
type Config struct {
	// Interval is the time between passes (SYNC_INTERVAL); default 1s.
	Interval time.Duration
	// BatchSize is the number of users per batch of the background loop;
	// default DefaultBatchSize. Small batches keep each Valkey script and
	// Postgres transaction short, so requests never queue behind one (the
	// perf lab's sync_nonblocking item measures it).
	BatchSize int
	// FlushBatchSize is the batch size of Flush (shutdown), which wants
	// throughput; default BatchSize when that is set, else
	// DefaultFlushBatchSize.
	FlushBatchSize int
	// Store is the ledger the deltas go to.
	Store Ledger
	// Queue holds the pending deltas.
	Queue Pending
	// Local, optional, holds in-process counts from fail-open mode.
	Local LocalSource
	// Observer, optional, receives metrics.
	Observer Observer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now. It is the clock of batch timings, the lag
	// gauge and pacing.
	Now func() time.Time
	// Wait waits d or until ctx ends (ctx.Err() then): the rest between paced
	// batches. Default a timer; injectable, with Now, so tests never sleep.
	Wait func(ctx context.Context, d time.Duration) error
	// InstanceID names this process as a batch owner; default a random id.
	InstanceID string
	// Pace makes the loop rest after each batch of a backlog for Pace times
	// as long as the batch took (default DefaultPace; negative: no rest), so
	// a large flush (a forced sync, a backlog after an outage) shares the
	// machine with requests instead of taking it over. Flush (shutdown) is
	// never paced.
	Pace float64
	// Tracer, optional, records each batch as a trace of its own, linked to
	// the request that forced the sync (TriggerFrom), with the ledger's spans
	// beneath it.
	Tracer trace.Tracer
	// Liveness, optional, is the roster this instance beats in while Run
	// runs, and that Flush uses to find out whether it is the last instance
	// (see the package comment). Without it, a killed instance's batches
	// wait for their lease, and Flush drains only what it can claim.
	Liveness Liveness
	// AliveTTL is the lifetime of this instance's liveness entry; default
	// DefaultAliveTTL(Interval).
	AliveTTL time.Duration
	// Sweep, optional, repairs what a killed instance can leave unfindable
	// (a pending delta whose dirty mark was lost) and reports how many users
	// it repaired; valkey.SyncQueue.Sweep. The last instance's Flush runs it
	// before its final drain.
	Sweep func(ctx context.Context) (repaired int, err error)
	// MaxBackoff caps the wait between retries after a failed pass; default
	// half of DefaultLease(Interval), at most 30s, so that an owner retrying
	// an outage renews its leases in time.
	MaxBackoff time.Duration
}

// DefaultLease is the lease a queue should give batches for a sync interval:
// five intervals, at least 5s. A batch whose owner has not renewed it for
// that long is taken over by another instance.
func DefaultLease(interval time.Duration) time.Duration {
	return max(5*interval, 5*time.Second)
}

// LastBatch describes the most recent batch this Syncer applied or tried.
type LastBatch struct {
	Key        string    `json:"key"`
	Users      int       `json:"users"`
	DurationMs float64   `json:"durationMs"`
	Result     string    `json:"result"`
	At         time.Time `json:"at"`
	Error      string    `json:"error,omitempty"`
}

// Status is the answer of GET /admin/sync.
type Status struct {
	PendingUsers            int64      `json:"pendingUsers"`
	OldestPendingAgeSeconds float64    `json:"oldestPendingAgeSeconds"`
	LastBatch               *LastBatch `json:"lastBatch"`
	Triggered               int64      `json:"triggered"`
	// HeldBatches are batches of this instance waiting for a retry.
	HeldBatches int `json:"heldBatches"`
}

// Syncer runs the sync loop. It is safe for concurrent use.
type Syncer struct {
	cfg     Config
	log     *slog.Logger
	trigger chan struct{}

	mu    sync.Mutex // serialises passes (the loop and Flush)
	held  []Batch    // own batches claimed, not yet applied+acknowledged
	local *domain.UsageBatch

	triggered    atomic.Int64
	heldN        atomic.Int64
	pendingUsers atomic.Int64
	oldestMs     atomic.Int64 // unix ms of the oldest pending delta, 0 if none
	last         atomic.Pointer[LastBatch]
	cause        atomic.Pointer[trace.SpanContext] // the request that forced the sync
	// passCause (guarded by mu) is the cause taken by the running pass: only
	// the batches of the pass a request forced link to it, not later ones.
	passCause *trace.SpanContext
	beats     atomic.Int64 // running beats sent (their state is "run:<n>")
}

// DefaultPace is the default Config.Pace: a backlog is flushed at half of
// full speed (a rest as long as each batch), so requests keep most of the
// machine while a backlog drains.
const DefaultPace = 1.0

// New returns a Syncer; it does nothing until Run or Flush.
func New(cfg Config) (*Syncer, error) {
	if cfg.Store == nil {
		return nil, errors.New("usagesync: Store is required")
	}
	if cfg.Queue == nil {
		return nil, errors.New("usagesync: Queue is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.FlushBatchSize <= 0 {
		// A batch size chosen by the caller applies to Flush too.
		cfg.FlushBatchSize = cmp.Or(cfg.BatchSize, DefaultFlushBatchSize)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Wait == nil {
		cfg.Wait = ctxtime.Sleep
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = "i-" + rand.Text()[:12]
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Pace == 0 {
		cfg.Pace = DefaultPace
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = min(DefaultLease(cfg.Interval)/2, 30*time.Second)
	}
	if cfg.AliveTTL <= 0 {
		cfg.AliveTTL = DefaultAliveTTL(cfg.Interval)
	}
	s := &Syncer{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "usagesync", "instance", cfg.InstanceID),
		trigger: make(chan struct{}, 1),
	}
	if cfg.Observer != nil {
		cfg.Observer.ObserveSync(s.pendingUsers.Load, s.lagSeconds)
	}
	return s, nil
}

// Trigger asks the loop for a pass now. It never blocks: triggers that
// arrive while one is already waiting are coalesced into it.
func (s *Syncer) Trigger() {
	s.triggered.Add(1)
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// TriggerFrom is Trigger on behalf of the request in ctx: the batches of the
// pass it causes carry a span link to that request.
func (s *Syncer) TriggerFrom(ctx context.Context) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		s.cause.Store(&sc)
	}
	s.Trigger()
}

// Run syncs every Interval (and on Trigger) until ctx is done, then returns
// nil. After a failed pass it waits with capped exponential backoff instead.
// At shutdown the caller flushes what is left with Flush and its own
// deadline.
//
// With Config.Liveness, Run beats (announces this instance alive) before its
// first pass and then every AliveTTL/4 on a goroutine of its own, until ctx
// is done; it has stopped beating when Run returns.
func (s *Syncer) Run(ctx context.Context) error {
	if s.cfg.Liveness != nil {
		// Alive before the first claim: a batch whose owner has no entry
		// is taken over at once.
		s.beat(ctx, s.runState())
		var beating sync.WaitGroup
		beating.Go(func() { s.beatEvery(ctx, s.runState) })
		defer beating.Wait()
	}
	timer := time.NewTimer(s.cfg.Interval)
	defer timer.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.trigger:
		}
		drained, err := s.pass(ctx, true)
		s.refreshStats(ctx)
		wait := s.cfg.Interval
		if err == nil && !drained {
			// A backlog: the pass stopped after an interval's work so that
			// stats, lease renewals and takeovers stay current; go on now.
			wait = 0
		}
		switch {
		case err != nil && ctx.Err() == nil:
			backoff = s.nextBackoff(backoff)
			wait = backoff
			s.log.Warn("usage sync pass failed; retrying", "err", err, "retryIn", backoff)
		case err == nil:
			backoff = 0
		}
		// Go ≥ 1.23 timers: Reset needs no drain.
		timer.Reset(wait)
	}
}

// Flush is the shutdown flush: call it once, after Run has returned, with
// the shutdown deadline. It syncs until nothing this instance can claim is
// pending, or ctx is done. On failure, batches claimed from the queue stay
// there for another (or the restarted) instance; in-process deltas that
// could not be persisted are handed back to Local.
//
// With Config.Liveness it then leaves the roster and, if it is the last
// instance alive, finishes everything left in the queue, including the
// batches of instances killed earlier, waiting (within ctx) for their
// liveness entries to lapse: see the package comment.
func (s *Syncer) Flush(ctx context.Context) error {
	if s.cfg.Liveness == nil {
		return s.drain(ctx)
	}
	// Even when cut short: what is left is then taken over at once by
	// another instance instead of after its lease.
	defer s.leave(ctx)
	stop := s.beatWhile(ctx, StateStopping)
	err := s.drain(ctx)
	stop()
	if err != nil {
		return s.withLeft(ctx, err)
	}
	s.leave(ctx)
	last, err := s.awaitLast(ctx)
	if err != nil {
		return s.withLeft(ctx, err)
	}
	if !last {
		return nil
	}
	stop = s.beatWhile(ctx, StateFinishing)
	defer stop()
	s.log.Info("last instance to stop: finishing every batch left in the queue")
	if s.cfg.Sweep != nil {
		n, err := s.cfg.Sweep(ctx)
		switch {
		case err != nil:
			s.log.Warn("usage sync sweep before the final drain failed", "err", err)
		case n > 0:
			s.log.Warn("usage sync sweep before the final drain repaired users", "users", n)
		}
	}
	if err := s.drain(ctx); err != nil {
		return s.withLeft(ctx, err)
	}
	return nil
}

// drain syncs until nothing is pending or ctx is done (see Flush).
func (s *Syncer) drain(ctx context.Context) error {
	var backoff time.Duration
	for {
		drained, err := s.pass(ctx, false)
		if err == nil && drained {
			s.refreshStats(ctx)
			return nil
		}
		if err == nil {
			continue
		}
		backoff = s.nextBackoff(backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.restoreLocal()
			return fmt.Errorf("usage sync flush: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// awaitLast reports whether no other instance is alive. An entry whose
// state changes (a running instance beats), one that appears, or one that is
// stopping or finishing means another instance will finish after this one:
// false. Entries that stay as they were belong to killed instances: it waits
// for them to lapse (at most AliveTTL), then reports true.
func (s *Syncer) awaitLast(ctx context.Context) (bool, error) {
	poll := min(max(s.cfg.AliveTTL/20, 10*time.Millisecond), 100*time.Millisecond)
	var first map[string]string
	for {
		others, err := s.cfg.Liveness.Others(ctx, s.cfg.InstanceID)
		if err != nil {
			return false, fmt.Errorf("usage sync: find the other instances: %w", err)
		}
		if len(others) == 0 {
			return true, nil
		}
		for owner, state := range others {
			prev, seen := first[owner]
			if state == StateStopping || state == StateFinishing || (first != nil && (!seen || prev != state)) {
				s.log.Info("usage sync: another instance is alive; it finishes the queue", "other", owner, "state", state)
				return false, nil
			}
		}
		if first == nil {
			first = others
			s.log.Info("usage sync: waiting for the liveness of instances that stopped beating (killed) to lapse, to finish their batches",
				"instances", ownersOf(others), "within", s.cfg.AliveTTL)
		}
		if err := ctxtime.Sleep(ctx, poll); err != nil {
			return false, fmt.Errorf("usage sync: waiting for the liveness of %v to lapse: %w", ownersOf(others), err)
		}
	}
}

// withLeft adds to a failed flush's error what it leaves in the queue.
func (s *Syncer) withLeft(ctx context.Context, err error) error {
	qs, serr := s.cfg.Queue.Stats(context.WithoutCancel(ctx))
	if serr != nil {
		return err
	}
	return fmt.Errorf("%w; left in the queue: %d users (dirty or in open batches)", err, qs.PendingUsers)
}

// runState is the state of a running beat: it changes on every beat, so
// that a stopping instance tells a running one from a killed one.
func (s *Syncer) runState() string { return "run:" + strconv.FormatInt(s.beats.Add(1), 10) }

// beat announces this instance alive in state for AliveTTL. A failure is
// only logged: the cost of a missed beat is that another instance may take
// this one's batches over, which is safe.
func (s *Syncer) beat(ctx context.Context, state string) {
	if err := s.cfg.Liveness.Beat(ctx, s.cfg.InstanceID, state, s.cfg.AliveTTL); err != nil && ctx.Err() == nil {
		s.log.Debug("usage sync liveness beat failed", "err", err)
	}
}

// beatEvery beats every AliveTTL/4 until ctx is done.
func (s *Syncer) beatEvery(ctx context.Context, state func() string) {
	ctxtime.Every(ctx, max(s.cfg.AliveTTL/4, time.Millisecond), func() { s.beat(ctx, state()) })
}

// beatWhile beats in state now and then every AliveTTL/4 until stop, which
// returns once no beat can follow (so a Leave after it is final).
func (s *Syncer) beatWhile(ctx context.Context, state string) (stop func()) {
	s.beat(ctx, state)
	ctx, cancel := context.WithCancel(ctx)
	var beating sync.WaitGroup
	beating.Go(func() { s.beatEvery(ctx, func() string { return state }) })
	return func() {
		cancel()
		beating.Wait()
	}
}

// leave deletes this instance's liveness entry, even after ctx is done.
func (s *Syncer) leave(ctx context.Context) {
	if err := s.cfg.Liveness.Leave(context.WithoutCancel(ctx), s.cfg.InstanceID); err != nil {
		s.log.Warn("usage sync: could not leave the roster; this instance counts as alive until its entry lapses", "err", err, "within", s.cfg.AliveTTL)
	}
}

// Status reports what waits and the last batch, for GET /admin/sync.
func (s *Syncer) Status(ctx context.Context) (Status, error) {
	st := Status{
		LastBatch:   s.last.Load(),
		Triggered:   s.triggered.Load(),
		HeldBatches: int(s.heldN.Load()),
	}
	qs, err := s.cfg.Queue.Stats(ctx)
	if err != nil {
		return st, fmt.Errorf("usage sync status: %w", err)
	}
	s.storeStats(qs)
	st.PendingUsers = qs.PendingUsers
	if !qs.Oldest.IsZero() {
		st.OldestPendingAgeSeconds = max(s.cfg.Now().Sub(qs.Oldest).Seconds(), 0)
	}
	return st, nil
}

// pass runs one sync pass: own held batches, in-process deltas, batches of
// dead owners, then new batches until the dirty index is drained. drained
// reports that nothing was left to claim and nothing is held.
func (s *Syncer) pass(ctx context.Context, paced bool) (drained bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.heldN.Store(int64(len(s.held))) }()
	s.passCause = s.cause.Swap(nil)

	// In-process deltas first: they exist because Valkey is down, so they
	// must not wait for any Valkey call below to succeed.
	localErr := s.flushLocal(ctx)

	var firstErr error
	keep := s.held[:0]
	for i, b := range s.held {
		ok, err := s.cfg.Queue.Renew(ctx, b.Key, s.cfg.InstanceID)
		if err != nil {
			// The queue is unreachable: keep everything, try again later.
			s.held = append(keep, s.held[i:]...)
			return false, errors.Join(localErr, fmt.Errorf("renew batch %s: %w", b.Key, err))
		}
		if !ok {
			s.log.Info("usage batch taken over by another instance", "key", b.Key)
			continue
		}
		if err := s.applyAndAck(ctx, b); err != nil {
			keep = append(keep, b)
			if outage(err) {
				s.held = append(keep, s.held[i+1:]...)
				return false, errors.Join(localErr, err)
			}
			firstErr = cmpErr(firstErr, err)
		}
	}
	s.held = keep

	recovered, err := s.cfg.Queue.Recover(ctx, s.cfg.InstanceID, maxHeld)
	if err != nil {
		return false, errors.Join(localErr, firstErr, fmt.Errorf("recover batches: %w", err))
	}
	for i, b := range recovered {
		s.log.Info("usage batch taken over from a dead owner", "key", b.Key, "users", b.Users)
		if err := s.applyAndAck(ctx, b); err != nil {
			s.held = append(s.held, recovered[i:]...)
			return false, errors.Join(localErr, firstErr, err)
		}
	}
	// A full Recover may have left more: not drained yet.
	moreRecover := len(recovered) >= maxHeld

	passStart := s.cfg.Now()
	for len(s.held) < maxHeld {
		if paced && s.cfg.Now().Sub(passStart) >= s.cfg.Interval {
			// Long backlog: hand back to Run (see there) instead of
			// holding the loop for the whole drain.
			return false, errors.Join(localErr, firstErr)
		}
		if err := ctx.Err(); err != nil {
			return false, errors.Join(localErr, firstErr, err)
		}
		started := s.cfg.Now()
		size := s.cfg.BatchSize
		if !paced {
			size = s.cfg.FlushBatchSize
		}
		b, err := s.cfg.Queue.Claim(ctx, s.cfg.InstanceID, size)
		if err != nil {
			return false, errors.Join(localErr, firstErr, fmt.Errorf("claim batch: %w", err))
		}
		if b.Users == 0 {
			break
		}
		err = s.applyAndAck(ctx, b)
		if paced && err == nil && b.Users == size && s.cfg.Pace > 0 {
			// A backlog: rest before the next batch (see Config.Pace).
			if werr := s.cfg.Wait(ctx, time.Duration(float64(s.cfg.Now().Sub(started))*s.cfg.Pace)); werr != nil {
				return false, errors.Join(localErr, firstErr, werr)
			}
		}
		if err != nil {
			s.held = append(s.held, b)
			if outage(err) {
				return false, errors.Join(localErr, firstErr, err)
			}
			firstErr = cmpErr(firstErr, err)
			continue
		}
		if b.Users < size {
			break
		}
	}
	err = errors.Join(localErr, firstErr)
	return err == nil && len(s.held) == 0 && s.local == nil && !moreRecover, err
}

// applyAndAck applies b under its key and acknowledges it.
func (s *Syncer) applyAndAck(ctx context.Context, b Batch) error {
	if len(b.Deltas) > 0 {
		if _, err := s.apply(ctx, domain.UsageBatch{Key: b.Key, Deltas: b.Deltas}); err != nil {
			return err
		}
	}
	if err := s.cfg.Queue.Ack(ctx, b); err != nil {
		// Applied but not acknowledged: kept, the retry is a ledger no-op.
		return fmt.Errorf("ack batch %s: %w", b.Key, err)
	}
	return nil
}

// flushLocal persists in-process deltas. A batch that fails is kept with its
// key and retried as it is: its commit may have happened (a timeout), and
// only the same key makes the retry safe.
func (s *Syncer) flushLocal(ctx context.Context) error {
	if s.cfg.Local == nil {
		return nil
	}
	if s.local == nil {
		deltas := s.cfg.Local.Drain()
		if len(deltas) == 0 {
			return nil
		}
		s.local = &domain.UsageBatch{Key: "local:" + s.cfg.InstanceID + ":" + rand.Text()[:16], Deltas: deltas}
	}
	if _, err := s.apply(ctx, *s.local); err != nil {
		return fmt.Errorf("persist in-process usage: %w", err)
	}
	s.local = nil
	return nil
}

// restoreLocal hands an unpersisted in-process batch back to Local when the
// Syncer gives up (Flush out of time), so the counts stay visible in process.
func (s *Syncer) restoreLocal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local == nil || s.cfg.Local == nil {
		return
	}
	s.log.Warn("in-process usage not persisted; handed back", "key", s.local.Key, "deltas", len(s.local.Deltas))
	s.cfg.Local.Restore(s.local.Deltas)
	s.local = nil
}

// apply writes one batch to the ledger and records the outcome.
func (s *Syncer) apply(ctx context.Context, b domain.UsageBatch) (bool, error) {
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithAttributes(
		attribute.String("warmpath.sync.batch", b.Key),
		attribute.Int("warmpath.sync.users", countUsers(b.Deltas)),
	)}
	if cause := s.passCause; cause != nil {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: *cause}))
	}
	ctx, span := s.cfg.Tracer.Start(ctx, "usage.sync.batch", opts...)
	defer span.End()
	start := s.cfg.Now()
	applied, err := s.cfg.Store.ApplyUsageBatch(ctx, b)
	end := s.cfg.Now()
	result := ResultApplied
	switch {
	case err != nil:
		result = ResultError
		span.RecordError(err)
		span.SetStatus(codes.Error, "apply failed")
	case !applied:
		result = ResultDuplicate
	}
	span.SetAttributes(attribute.String("warmpath.sync.result", result))
	lb := &LastBatch{
		Key:        b.Key,
		Users:      countUsers(b.Deltas),
		DurationMs: float64(end.Sub(start).Microseconds()) / 1000,
		Result:     result,
		At:         end,
	}
	if err != nil {
		lb.Error = err.Error()
	}
	s.last.Store(lb)
	if s.cfg.Observer != nil {
		s.cfg.Observer.SyncBatch(ctx, result)
	}
	if err != nil {
		return false, fmt.Errorf("apply usage batch %s: %w", b.Key, err)
	}
	if !applied {
		s.log.Info("usage batch already applied; acknowledging", "key", b.Key)
	}
	return applied, nil
}

func (s *Syncer) refreshStats(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	qs, err := s.cfg.Queue.Stats(ctx)
	if err != nil {
		s.log.Debug("usage sync stats unavailable", "err", err)
		return
	}
	s.storeStats(qs)
}

func (s *Syncer) storeStats(qs QueueStats) {
	s.pendingUsers.Store(qs.PendingUsers)
	if qs.Oldest.IsZero() {
		s.oldestMs.Store(0)
	} else {
		s.oldestMs.Store(qs.Oldest.UnixMilli())
	}
}

// lagSeconds is the age of the oldest pending delta as of the last pass.
func (s *Syncer) lagSeconds() float64 {
	ms := s.oldestMs.Load()
	if ms == 0 {
		return 0
	}
	return max(s.cfg.Now().Sub(time.UnixMilli(ms)).Seconds(), 0)
}

func (s *Syncer) nextBackoff(cur time.Duration) time.Duration {
	if cur <= 0 {
		return min(max(s.cfg.Interval/4, 50*time.Millisecond), s.cfg.MaxBackoff)
	}
	return min(2*cur, s.cfg.MaxBackoff)
}

// outage reports errors that will hit every batch alike (a dependency down,
// a deadline), as opposed to a problem with one batch's content.
func outage(err error) bool {
	return errors.Is(err, domain.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// ownersOf lists the owners of a liveness map, sorted (for logs).
func ownersOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for o := range m {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

func countUsers(ds []domain.UsageDelta) int {
	if len(ds) == 0 {
		return 0
	}
	seen := make(map[int64]struct{}, len(ds))
	for _, d := range ds {
		seen[d.UserID] = struct{}{}
	}
	return len(seen)
}
