package warmup

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// phase is where a job in flight is in this process.
type phase int

const (
	phaseAdmitting phase = iota // Enqueue is checking status and taking the lock
	phaseQueued                 // waiting in a queue
	phaseRunning                // a worker or Run is executing it
	phaseFinishing              // writing the final status and releasing the lock
	phaseDone                   // finished or dropped
)

// entry is a job in flight in this process: at most one per user.
type entry struct {
	// Guarded by Manager.mu.
	job   Job
	phase phase

	token    string        // lock token, set before the entry is queued or run
	prev     *Status       // stored status before enqueueing, restored when dropped
	admitted chan struct{} // closed when admission is decided
	done     chan struct{} // closed when finished or dropped

	smu    sync.Mutex // guards status
	status Status

	putMu sync.Mutex // serialises status writes, so an older snapshot never lands last
}

func newEntry(job Job, st Status) *entry {
	return &entry{job: job, status: st, admitted: make(chan struct{}), done: make(chan struct{})}
}

func (e *entry) snapshot() Status {
	e.smu.Lock()
	defer e.smu.Unlock()
	return e.status.clone()
}

func (e *entry) update(f func(*Status)) {
	e.smu.Lock()
	defer e.smu.Unlock()
	f(&e.status)
}

// Manager runs system warmup and the user warmup queue. It is safe for
// concurrent use.
type Manager struct {
	cfg Config
	// admitter is Config.Locks when it is an Admitter and also the status
	// store (Admit writes the status), else nil.
	admitter Admitter

	base       context.Context // cancelled by Stop: running jobs and system warmup
	cancelBase context.CancelFunc
	wg         sync.WaitGroup // workers, system warmup, inline runs

	mu       sync.Mutex
	cond     *sync.Cond // signalled when a job is queued or on stop
	started  bool
	stopped  bool
	inflight map[int64]*entry
	login    []*entry // FIFO; may hold entries claimed elsewhere (skipped)
	system   []*entry
	nLogin   int // queued (or reserved) login jobs
	nSystem  int // queued (or reserved) system jobs
	running  int

	plansMu sync.Mutex
	plans   map[string]domain.Plan // cached Store.Plans (plans come from config)
	plansAt time.Time

	sysMu    sync.Mutex
	sysState SystemStatus
}

// New validates cfg and returns a Manager; call Start to run it.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, inflight: map[int64]*entry{}}
	if a, ok := cfg.Locks.(Admitter); ok && any(cfg.Locks) == any(cfg.Status) {
		m.admitter = a
	}
	m.cond = sync.NewCond(&m.mu)
	m.base, m.cancelBase = context.WithCancel(context.Background())
	m.sysState = m.initialSystemStatus()
	if cfg.Observer != nil {
		cfg.Observer.ObserveQueueDepth(m.queueDepth)
	}
	return m, nil
}

func (m *Manager) queueDepth() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(m.nLogin + m.nSystem)
}

// Start starts the workers and, SystemDelay later, the system warmup. It
// returns at once. Cancelling ctx stops the work like Stop does, without
// waiting. Start runs once; later calls do nothing.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.stopped {
		return
	}
	m.started = true
	context.AfterFunc(ctx, m.cancelBase)
	// Wake the workers when the base context ends, so they exit.
	context.AfterFunc(m.base, func() {
		m.mu.Lock()
		m.stopped = true
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	for range m.cfg.Workers {
		m.wg.Go(m.work)
	}
	m.wg.Go(func() {
		if err := m.cfg.Wait(m.base, m.cfg.SystemDelay); err != nil {
			return
		}
		m.runSystem(m.base)
	})
}

// Stop drops queued jobs (their status goes back to what it was before they
// were enqueued, idle when there was none), cancels running jobs (they end
// failed, "cancelled: shutting down"), releases their locks and waits for
// the workers, the system warmup and inline runs, or for ctx.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopped = true
	var dropped []*entry
	for _, q := range [][]*entry{m.login, m.system} {
		for _, e := range q {
			if e.phase == phaseQueued {
				e.phase = phaseDone
				dropped = append(dropped, e)
			}
		}
	}
	m.login, m.system, m.nLogin, m.nSystem = nil, nil, 0, 0
	m.cond.Broadcast()
	m.mu.Unlock()

	m.cancelBase()
	for _, e := range dropped {
		m.drop(ctx, e)
	}

	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop warmup: %w", ctx.Err())
	}
}

// drop undoes a queued job that will not run: status restored, lock released.
func (m *Manager) drop(ctx context.Context, e *entry) {
	ctx = context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	id := e.job.UserID
	// Restore the status only while this instance still holds the user's
	// lock: if a login elsewhere took the job over (or the lock expired and
	// someone else warmed the user), the status is theirs now.
	if held, err := m.cfg.Locks.Extend(ctx, id, e.token, m.cfg.LockTTL); err == nil && held {
		if e.prev != nil {
			err = m.cfg.Status.Put(ctx, id, *e.prev, m.finalTTL())
		} else {
			err = m.cfg.Status.Delete(ctx, id)
		}
		if err != nil {
			m.cfg.Logger.WarnContext(ctx, "warmup: restore status of dropped job", "user_id", id, "error", err)
		}
	}
	if _, err := m.cfg.Locks.Release(ctx, id, e.token); err != nil {
		m.cfg.Logger.WarnContext(ctx, "warmup: release lock of dropped job", "user_id", id, "error", err)
	}
	e.update(func(s *Status) {
		if e.prev != nil {
			*s = e.prev.clone()
		} else {
			*s = IdleStatus()
		}
	})
	m.forget(e)
	close(e.done)
}

// finalTTL is how long a ready or failed status is kept: at least TTL, so a
// ready user is not warmed again within it.
func (m *Manager) finalTTL() time.Duration { return max(m.cfg.TTL, m.cfg.CacheTTL) }

// forget removes e from the jobs in flight.
func (m *Manager) forget(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inflight[e.job.UserID] == e {
		delete(m.inflight, e.job.UserID)
	}
}

// Status returns the user's warmup status: this instance's job in flight if
// any, else the shared StatusStore's (so every instance answers the same),
// idle when there is none.
func (m *Manager) Status(ctx context.Context, userID int64) (Status, error) {
	m.mu.Lock()
	e := m.inflight[userID]
	m.mu.Unlock()
	if e != nil {
		// An admitting entry has no state of its own yet; the store knows.
		if st := e.snapshot(); st.State != StateIdle {
			return st, nil
		}
	}
	st, found, err := m.cfg.Status.Get(ctx, userID)
	if err != nil {
		return Status{}, fmt.Errorf("warmup status: %w", err)
	}
	if !found {
		return IdleStatus(), nil
	}
	return st, nil
}

// Enqueue asks for a warmup of job.UserID and returns at once with the
// user's status: ready without enqueueing when the user was warmed within
// TTL; the current status when a job for the user is already queued or
// running (here or on another instance); queued when enqueued. A full queue
// returns ErrQueueFull (with the current status), a stopped Manager
// ErrStopped.
func (m *Manager) Enqueue(ctx context.Context, job Job) (Status, error) {
	st, _, err := m.enqueue(ctx, job)
	return st, err
}

// enqueue is Enqueue; queued reports whether this call queued a new job.
func (m *Manager) enqueue(ctx context.Context, job Job) (st Status, queued bool, err error) {
	if job.UserID <= 0 {
		return Status{}, false, fmt.Errorf("warmup enqueue: invalid user id %d", job.UserID)
	}
	if job.Kind != KindSystem {
		job.Kind = KindLogin
	}
	for {
		m.mu.Lock()
		if m.stopped {
			m.mu.Unlock()
			return Status{}, false, ErrStopped
		}
		if e := m.inflight[job.UserID]; e != nil {
			switch e.phase {
			case phaseAdmitting, phaseFinishing:
				// Another call is deciding for this user, or the job is
				// writing its final status (a few round trips): wait, then
				// look again.
				ch := e.admitted
				if e.phase == phaseFinishing {
					ch = e.done
				}
				m.mu.Unlock()
				select {
				case <-ch:
					continue
				case <-ctx.Done():
					return Status{}, false, fmt.Errorf("warmup enqueue: %w", ctx.Err())
				}
			case phaseQueued:
				if job.Kind == KindLogin && e.job.Kind == KindSystem {
					m.promote(e, job)
				}
			}
			st := e.snapshot()
			m.mu.Unlock()
			return st, false, nil
		}
		e := newEntry(job, IdleStatus())
		m.inflight[job.UserID] = e
		m.mu.Unlock()

		st, err := m.admit(ctx, e)
		close(e.admitted)
		m.mu.Lock()
		owned := e.token != "" // e.token changes under m.mu once a worker starts e
		m.mu.Unlock()
		return st, err == nil && st.State == StateQueued && owned, err
	}
}

// promote moves a queued system job to the login queue, taking the login
// job's token so the session part runs. Called with m.mu held.
func (m *Manager) promote(e *entry, login Job) {
	e.job.Kind = KindLogin
	if e.job.TokenHash == nil && login.TokenHash != nil {
		e.job.TokenHash = login.TokenHash
		e.update(func(s *Status) { s.Parts[PartSession] = PartStatus{State: StateIdle} })
	}
	e.job.Cause = login.Cause
	m.nSystem--
	m.nLogin++
	// The stale copy in m.system is skipped: pop takes only queued entries.
	m.login = append(m.login, e)
	m.cond.Signal()
}

// admit decides whether e (registered, admitting) is queued. On any outcome
// but queued it removes e from the jobs in flight.
func (m *Manager) admit(ctx context.Context, e *entry) (Status, error) {
	id, kind := e.job.UserID, e.job.Kind
	now := m.cfg.Now()
	var prev Status
	var found bool
	if m.admitter != nil && m.reserve(kind) {
		st, seen, admitted, err := m.admitFirst(ctx, e, m.admitter, now)
		if err != nil || admitted {
			return st, err
		}
		prev, found = st, seen
	} else {
		var err error
		if prev, found, err = m.cfg.Status.Get(ctx, id); err != nil {
			m.forget(e)
			return Status{}, fmt.Errorf("warmup enqueue: read status: %w", err)
		}
	}
	if found && m.fresh(ctx, id, prev, now) {
		m.forget(e)
		return prev, nil
	}
	current := IdleStatus()
	if found {
		current = prev
	}
	if !m.reserve(kind) {
		m.forget(e)
		return current, ErrQueueFull
	}
	token := newToken(kind)
	got, err := m.cfg.Locks.Acquire(ctx, id, token, m.cfg.LockTTL)
	if err == nil && !got && kind == KindLogin {
		// Login warmups go before system ones across instances too: a system
		// job still queued elsewhere gives its lock up to a login.
		got, err = m.takeOverQueuedSystem(ctx, id, token)
	}
	if err != nil || !got {
		m.unreserve(kind)
		m.forget(e)
		if err != nil {
			return Status{}, fmt.Errorf("warmup enqueue: lock: %w", err)
		}
		return m.heldElsewhere(prev, found, now), nil
	}
	st := Status{State: StateQueued, RequestedAt: &now, Parts: initialParts(e.job)}
	if err := m.cfg.Status.Put(ctx, id, st, m.cfg.LockTTL); err != nil {
		m.release(context.WithoutCancel(ctx), id, token)
		m.unreserve(kind)
		m.forget(e)
		return Status{}, fmt.Errorf("warmup enqueue: write status: %w", err)
	}
	var was *Status
	if found {
		was = &prev
	}
	return m.queue(ctx, e, token, st, was)
}

// admitFirst admits e in one step (a, with a queue slot reserved): the
// first login's path. When the user has a status or the lock is held it
// gives the slot back and returns the status it saw (zero: none) for admit
// to decide on as before (found false: none).
func (m *Manager) admitFirst(ctx context.Context, e *entry, a Admitter, now time.Time) (st Status, found, admitted bool, err error) {
	token := newToken(e.job.Kind)
	queued := Status{State: StateQueued, RequestedAt: &now, Parts: initialParts(e.job)}
	admitted, st, found, err = a.Admit(ctx, e.job.UserID, token, queued, m.cfg.LockTTL)
	if err == nil && admitted {
		st, err = m.queue(ctx, e, token, queued, nil)
		return st, false, true, err
	}
	m.unreserve(e.job.Kind)
	if err != nil {
		// A call that timed out may still have applied: its lock and queued
		// status then hold the user off until LockTTL, as a timed-out
		// Acquire's lock always did (releasing here would cost every
		// enqueue during an outage another Valkey timeout).
		m.forget(e)
		return Status{}, false, false, fmt.Errorf("warmup enqueue: admit: %w", err)
	}
	return st, found, false, nil
}

// newToken is a fresh lock token for a job of kind.
func newToken(kind Kind) string {
	if kind == KindSystem {
		return queuedSystemToken + rand.Text()
	}
	return rand.Text()
}

// queue puts e, admitted under token with status st (prev: the status it
// replaced, if any), in its queue.
func (m *Manager) queue(ctx context.Context, e *entry, token string, st Status, prev *Status) (Status, error) {
	kind := e.job.Kind
	cleanup := context.WithoutCancel(ctx)
	m.mu.Lock()
	e.token = token
	e.prev = prev
	e.update(func(s *Status) { *s = st.clone() })
	if m.stopped {
		m.mu.Unlock()
		m.unreserve(kind)
		m.drop(cleanup, e)
		return Status{}, ErrStopped
	}
	e.phase = phaseQueued
	if kind == KindLogin {
		m.login = append(m.login, e)
	} else {
		m.system = append(m.system, e)
	}
	m.cond.Signal()
	m.mu.Unlock()
	return st.clone(), nil
}

// queuedSystemToken starts the lock token of a system job while it waits in
// a queue. Such a lock may be taken over by a login warmup on any instance;
// the job swaps it for a running token (runningSystemToken) when it starts,
// so a running job is never taken over.
//
// Why a lock with two kinds of token rather than a plain "who runs" lock:
// correctness does not rest on it (the item set is installed by versioned
// scripts, the counter by set-if-absent; a duplicate job only repeats work),
// but three things warmup promises do. (1) Dedup at admission across
// instances: every instance starting together enqueues the same hot users,
// and only the lock taken at enqueue time makes the others answer "held
// elsewhere" instead of queueing duplicates. (2) A dropped job (Stop)
// restores the shared status only while it still holds the lock; without a
// queued lock that needs a compare-and-set on the status instead, the same
// machinery in another place. (3) Login before system across instances, yet
// never a second job beside a running one: the queued token may be swapped
// away by a login, the running one may not. A lock taken only when a job
// starts keeps (3) but loses (1) and (2), so it stays.
const (
	queuedSystemToken  = "sq:"
	runningSystemToken = "sr:"
)

// takeOverQueuedSystem takes the user's lock from a system job that is still
// queued (here or on another instance). The job finds its lock gone when it
// would start, and skips.
func (m *Manager) takeOverQueuedSystem(ctx context.Context, userID int64, token string) (bool, error) {
	holder, held, err := m.cfg.Locks.Holder(ctx, userID)
	if err != nil || !held || !strings.HasPrefix(holder, queuedSystemToken) {
		return false, err
	}
	return m.cfg.Locks.Swap(ctx, userID, holder, token, m.cfg.LockTTL)
}

// heldElsewhere is the status to answer when another instance holds the
// user's lock: its stored queued/running status, or queued when it has not
// written one yet.
func (m *Manager) heldElsewhere(prev Status, found bool, now time.Time) Status {
	if found && (prev.State == StateQueued || prev.State == StateRunning) {
		return prev
	}
	return Status{State: StateQueued, RequestedAt: &now, Parts: parts(StateIdle, StateIdle)}
}

func initialParts(job Job) map[string]PartStatus {
	if job.TokenHash == nil {
		return parts(StateSkipped, StateIdle)
	}
	return parts(StateIdle, StateIdle)
}

// fresh reports whether st says the user was warmed within TTL and the item
// set is still cached (a change the cache could not apply drops it; the user
// must then be warmed again even within TTL).
func (m *Manager) fresh(ctx context.Context, userID int64, st Status, now time.Time) bool {
	if st.State != StateReady || st.FinishedAt == nil || now.Sub(*st.FinishedAt) >= m.cfg.TTL {
		return false
	}
	_, warm, err := m.cfg.Items.ItemsWarm(ctx, userID)
	return err == nil && warm
}

// reserve takes a queue slot for kind; system jobs only up to their share.
func (m *Manager) reserve(kind Kind) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nLogin+m.nSystem >= m.cfg.QueueSize {
		return false
	}
	if kind == KindSystem {
		if m.nSystem >= m.cfg.SystemQueueSize {
			return false
		}
		m.nSystem++
		return true
	}
	m.nLogin++
	return true
}

func (m *Manager) unreserve(kind Kind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unreserveLocked(kind)
}

func (m *Manager) unreserveLocked(kind Kind) {
	if kind == KindSystem {
		m.nSystem = max(m.nSystem-1, 0)
	} else {
		m.nLogin = max(m.nLogin-1, 0)
	}
}

func (m *Manager) release(ctx context.Context, userID int64, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if _, err := m.cfg.Locks.Release(ctx, userID, token); err != nil {
		m.cfg.Logger.WarnContext(ctx, "warmup: release lock", "user_id", userID, "error", err)
	}
}

// claim turns a queued entry into a running one. Called with m.mu held.
func (m *Manager) claim(e *entry) {
	e.phase = phaseRunning
	m.unreserveLocked(e.job.Kind)
	m.running++
}

// pop takes the next queued job, login first. Called with m.mu held.
func (m *Manager) pop() *entry {
	for _, q := range []*[]*entry{&m.login, &m.system} {
		for len(*q) > 0 {
			e := (*q)[0]
			(*q)[0] = nil
			*q = (*q)[1:]
			if e.phase == phaseQueued {
				m.claim(e)
				return e
			}
		}
	}
	return nil
}

// next blocks until a job is queued (and claims it) or the Manager stops.
func (m *Manager) next() *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if m.stopped {
			return nil
		}
		if e := m.pop(); e != nil {
			return e
		}
		m.cond.Wait()
	}
}

func (m *Manager) work() {
	for e := m.next(); e != nil; e = m.next() {
		m.execute(m.base, e, false)
	}
}

// Run is the inline strategy: it warms the user in the caller's goroutine
// and returns the final status. It still honours TTL (a fresh user returns
// ready at once) and dedup: a job queued here is taken over, one running here
// is waited for, and one running on another instance is waited for by
// polling the shared status every PollInterval. ctx bounds the wait and the
// job.
func (m *Manager) Run(ctx context.Context, job Job) (Status, error) {
	if job.UserID <= 0 {
		return Status{}, fmt.Errorf("warmup run: invalid user id %d", job.UserID)
	}
	job.Kind = KindInline
	for {
		m.mu.Lock()
		if m.stopped {
			m.mu.Unlock()
			return Status{}, ErrStopped
		}
		if e := m.inflight[job.UserID]; e != nil {
			switch e.phase {
			case phaseQueued:
				m.claim(e)
				e.job.Kind = KindInline
				if e.job.TokenHash == nil && job.TokenHash != nil {
					e.job.TokenHash = job.TokenHash
				}
				e.job.Cause = job.Cause
				m.wg.Add(1)
				m.mu.Unlock()
				defer m.wg.Done()
				return m.execute(ctx, e, false), nil
			default:
				admitting := e.phase == phaseAdmitting
				ch := e.done
				if admitting {
					ch = e.admitted
				}
				m.mu.Unlock()
				select {
				case <-ch:
				case <-ctx.Done():
					return Status{}, fmt.Errorf("warmup run: %w", ctx.Err())
				}
				if admitting {
					continue
				}
				return e.snapshot(), nil
			}
		}
		m.mu.Unlock()

		now := m.cfg.Now()
		prev, found, err := m.cfg.Status.Get(ctx, job.UserID)
		if err != nil {
			return Status{}, fmt.Errorf("warmup run: read status: %w", err)
		}
		if found && m.fresh(ctx, job.UserID, prev, now) {
			return prev, nil
		}
		token := rand.Text()
		got, err := m.cfg.Locks.Acquire(ctx, job.UserID, token, m.cfg.LockTTL)
		if err != nil {
			return Status{}, fmt.Errorf("warmup run: lock: %w", err)
		}
		if !got {
			// Another instance warms the user: wait for it to finish (the
			// status turns fresh) or give up its lock.
			if err := m.cfg.Wait(ctx, m.cfg.PollInterval); err != nil {
				return Status{}, fmt.Errorf("warmup run: %w", err)
			}
			continue
		}

		m.mu.Lock()
		if m.stopped || m.inflight[job.UserID] != nil {
			// Stopped, or a local Enqueue got in between: back off and look
			// again.
			m.mu.Unlock()
			m.release(ctx, job.UserID, token)
			continue
		}
		e := newEntry(job, Status{State: StateQueued, RequestedAt: &now, Parts: initialParts(job)})
		e.token = token
		if found {
			e.prev = &prev
		}
		e.phase = phaseRunning
		close(e.admitted)
		m.inflight[job.UserID] = e
		m.running++
		m.wg.Add(1)
		m.mu.Unlock()
		defer m.wg.Done()
		return m.execute(ctx, e, true), nil
	}
}

// errShutdown is the error of jobs cancelled by Stop.
var errShutdown = errors.New("cancelled: shutting down")
