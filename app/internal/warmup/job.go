package warmup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/internal/ctxtime"
)

// plansTTL bounds how long Store.Plans is cached: plans come from config and
// change only with a restart, and a hot-user warmup would otherwise read them
// once per user.
const plansTTL = time.Minute

// execute runs e (claimed: phaseRunning) and returns its final status.
// confirmed says the caller has just taken e's lock; otherwise the lock is
// re-checked first, because a queued job may have outlived it.
func (m *Manager) execute(parent context.Context, e *entry, confirmed bool) Status {
	m.mu.Lock()
	job := e.job
	m.mu.Unlock()
	id := job.UserID

	ctx, cancel := context.WithTimeout(parent, m.cfg.JobTimeout)
	defer cancel()
	// Stop cancels inline runs too, whose parent is the caller's context.
	defer context.AfterFunc(m.base, cancel)()

	if !confirmed {
		if ok, err := m.confirmLock(ctx, id, e.token); !ok {
			if err != nil {
				m.cfg.Logger.WarnContext(ctx, "warmup: job not run: lock", "user_id", id, "error", err)
			} else {
				m.cfg.Logger.DebugContext(ctx, "warmup: job not run: another instance warms the user", "user_id", id)
			}
			m.finishEntry(e)
			if st, found, err := m.cfg.Status.Get(ctx, id); err == nil && found {
				return st
			}
			return e.snapshot()
		}
	}

	ctx, span := m.startSpan(ctx, job)
	defer span.End()

	start := m.cfg.Now()
	e.update(func(s *Status) {
		s.State = StateRunning
		s.StartedAt = &start
		if s.RequestedAt == nil {
			s.RequestedAt = &start
		}
		s.FinishedAt, s.DurationMs, s.Error = nil, nil, ""
		s.Parts = parts(StateRunning, StateRunning)
		if job.TokenHash == nil {
			s.Parts[PartSession] = PartStatus{State: StateSkipped}
		}
	})
	m.put(ctx, e, m.cfg.LockTTL)

	hbCtx, hbStop := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Go(func() { m.heartbeat(hbCtx, e) })
	m.runParts(ctx, job, e)
	hbStop()
	hb.Wait()

	end := m.cfg.Now()
	d := end.Sub(start)
	var final Status
	e.update(func(s *Status) {
		s.FinishedAt = &end
		s.DurationMs = ms(d)
		s.State = StateReady
		var errs []string
		for _, name := range []string{PartSession, PartUsage, PartItems} {
			if p := s.Parts[name]; p.State == StateFailed {
				errs = append(errs, name+": "+p.Error)
			}
		}
		switch {
		case len(errs) == 0:
		case m.base.Err() != nil:
			s.State, s.Error = StateFailed, errShutdown.Error()
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			s.State, s.Error = StateFailed, fmt.Sprintf("timed out after %v: %s", m.cfg.JobTimeout, strings.Join(errs, "; "))
		default:
			s.State, s.Error = StateFailed, strings.Join(errs, "; ")
		}
		final = s.clone()
	})
	m.mu.Lock()
	e.phase = phaseFinishing
	m.mu.Unlock()
	// The final status write and the lock release must happen even when the
	// job was cancelled.
	cleanup, cancelCleanup := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancelCleanup()
	m.put(cleanup, e, m.finalTTL())
	m.release(cleanup, id, e.token)

	result := ResultReady
	if final.State == StateFailed {
		result = ResultFailed
		span.SetStatus(codes.Error, final.Error)
		m.cfg.Logger.WarnContext(ctx, "warmup failed", "user_id", id, "kind", string(job.Kind), "duration", d, "error", final.Error)
	} else {
		m.cfg.Logger.DebugContext(ctx, "warmup ready", "user_id", id, "kind", string(job.Kind), "duration", d)
	}
	m.finishEntry(e)
	if m.cfg.Observer != nil {
		m.cfg.Observer.WarmupJob(ctx, string(job.Kind), result, d)
	}
	return final
}

// confirmLock makes sure token holds the user's lock: extended when it still
// does, taken again when it expired and nobody else took it.
func (m *Manager) confirmLock(ctx context.Context, userID int64, token string) (bool, error) {
	if rest, ok := strings.CutPrefix(token, queuedSystemToken); ok {
		// A queued system job starts: swap its token for a running one, so
		// no login can take the lock over any more. A failed swap means a
		// login (here or elsewhere) took over, or the lock expired.
		running := runningSystemToken + rest
		ok, err := m.cfg.Locks.Swap(ctx, userID, token, running, m.cfg.LockTTL)
		if err == nil && !ok {
			// Either a login took the lock over (Acquire fails: skip), or the
			// queued lock expired while the job waited (nobody holds it:
			// take it and run).
			ok, err = m.cfg.Locks.Acquire(ctx, userID, running, m.cfg.LockTTL)
			if ok && err == nil {
				// A login may have taken over, finished and released the lock:
				// a fresh user is not warmed again.
				if st, found, serr := m.cfg.Status.Get(ctx, userID); serr == nil && found && m.fresh(ctx, userID, st, m.cfg.Now()) {
					m.release(context.WithoutCancel(ctx), userID, running)
					return false, nil
				}
			}
		}
		if ok {
			m.mu.Lock()
			if e := m.inflight[userID]; e != nil && e.token == token {
				e.token = running // heartbeat and release use the new token
			}
			m.mu.Unlock()
		}
		return ok, err
	}
	ok, err := m.cfg.Locks.Extend(ctx, userID, token, m.cfg.LockTTL)
	if err != nil {
		return false, fmt.Errorf("extend lock: %w", err)
	}
	if ok {
		return true, nil
	}
	ok, err = m.cfg.Locks.Acquire(ctx, userID, token, m.cfg.LockTTL)
	if err != nil {
		return false, fmt.Errorf("acquire lock: %w", err)
	}
	return ok, nil
}

func (m *Manager) finishEntry(e *entry) {
	m.mu.Lock()
	e.phase = phaseDone
	m.running--
	if m.inflight[e.job.UserID] == e {
		delete(m.inflight, e.job.UserID)
	}
	m.mu.Unlock()
	close(e.done)
}

func (m *Manager) startSpan(ctx context.Context, job Job) (context.Context, trace.Span) {
	if m.cfg.Tracer == nil {
		return ctx, trace.SpanFromContext(context.Background()) // no-op span
	}
	opts := []trace.SpanStartOption{
		trace.WithAttributes(
			attribute.Int64("warmpath.user_id", job.UserID),
			attribute.String("warmpath.warmup.kind", string(job.Kind)),
		),
	}
	if job.Cause != nil {
		if sc := trace.SpanContextFromContext(job.Cause); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	return m.cfg.Tracer.Start(ctx, "warmup.job", opts...)
}

// put writes e's current status. Writes of one entry are serialised and each
// snapshots the status under the lock, so the last write is the newest.
func (m *Manager) put(ctx context.Context, e *entry, ttl time.Duration) {
	e.putMu.Lock()
	defer e.putMu.Unlock()
	st := e.snapshot()
	if err := m.cfg.Status.Put(ctx, e.job.UserID, st, ttl); err != nil {
		m.cfg.Logger.WarnContext(ctx, "warmup: write status", "user_id", e.job.UserID, "state", string(st.State), "error", err)
	}
}

// heartbeat keeps the lock and the running status alive while a job runs
// longer than a third of LockTTL.
func (m *Manager) heartbeat(ctx context.Context, e *entry) {
	ctxtime.Every(ctx, max(m.cfg.LockTTL/3, time.Millisecond), func() {
		ok, err := m.cfg.Locks.Extend(ctx, e.job.UserID, e.token, m.cfg.LockTTL)
		if err == nil && !ok {
			m.cfg.Logger.WarnContext(ctx, "warmup: lock lost while running", "user_id", e.job.UserID)
		}
		m.put(ctx, e, m.cfg.LockTTL)
	})
}

// runParts runs the items part concurrently with the session → usage chain
// (usage needs the plan, which the principal carries).
func (m *Manager) runParts(ctx context.Context, job Job, e *entry) {
	var wg sync.WaitGroup
	wg.Go(func() {
		m.part(ctx, e, PartItems, func(ctx context.Context) error { return m.warmItems(ctx, job.UserID) })
	})
	var plan *domain.Plan
	if job.TokenHash != nil {
		m.part(ctx, e, PartSession, func(ctx context.Context) error {
			p, err := m.warmSession(ctx, job)
			if err == nil {
				plan = &p.Plan
			}
			return err
		})
	}
	m.part(ctx, e, PartUsage, func(ctx context.Context) error { return m.warmUsage(ctx, job.UserID, plan) })
	wg.Wait()
}

// part runs one part, records its state and duration and publishes progress.
func (m *Manager) part(ctx context.Context, e *entry, name string, f func(context.Context) error) {
	start := m.cfg.Now()
	err := f(ctx)
	ps := PartStatus{State: StateReady, DurationMs: ms(m.cfg.Now().Sub(start))}
	if err != nil {
		ps.State, ps.Error = StateFailed, err.Error()
	}
	e.update(func(s *Status) { s.Parts[name] = ps })
	if ctx.Err() == nil {
		m.put(ctx, e, m.cfg.LockTTL)
	}
}

// warmSession caches the principal of the job's token.
func (m *Manager) warmSession(ctx context.Context, job Job) (domain.Principal, error) {
	p, err := m.cfg.Store.Principal(ctx, *job.TokenHash)
	if err != nil {
		return domain.Principal{}, fmt.Errorf("load principal: %w", err)
	}
	if p.UserID != job.UserID {
		return domain.Principal{}, fmt.Errorf("load principal: the token belongs to another user")
	}
	if err := m.cfg.Sessions.PutPrincipal(ctx, *job.TokenHash, p, m.cfg.CacheTTL); err != nil {
		return domain.Principal{}, fmt.Errorf("cache principal: %w", err)
	}
	return p, nil
}

// warmUsage seeds the usage counter of the current period (Usage.Seed, as a
// request on a cold counter does). plan is the principal's when known, else
// read from the store.
func (m *Manager) warmUsage(ctx context.Context, userID int64, plan *domain.Plan) error {
	var period domain.Period
	if plan != nil {
		period = plan.Period
	} else {
		u, err := m.cfg.Store.User(ctx, userID)
		if err != nil {
			return fmt.Errorf("load user: %w", err)
		}
		p, err := m.plan(ctx, u.Plan)
		if err != nil {
			return fmt.Errorf("load plan %q: %w", u.Plan, err)
		}
		period = p.Period
	}
	if err := m.cfg.Usage.Seed(ctx, userID, period); err != nil {
		return fmt.Errorf("seed usage counter: %w", err)
	}
	return nil
}

// plan returns the named plan from a cached copy of Store.Plans.
func (m *Manager) plan(ctx context.Context, name string) (domain.Plan, error) {
	m.plansMu.Lock()
	defer m.plansMu.Unlock()
	now := m.cfg.Now()
	if p, ok := m.plans[name]; ok && now.Sub(m.plansAt) < plansTTL {
		return p, nil
	}
	list, err := m.cfg.Store.Plans(ctx)
	if err != nil {
		return domain.Plan{}, err
	}
	m.plans = make(map[string]domain.Plan, len(list))
	for _, p := range list {
		m.plans[p.Name] = p
	}
	m.plansAt = now
	p, ok := m.plans[name]
	if !ok {
		return domain.Plan{}, domain.ErrUnknownPlan
	}
	return p, nil
}

// warmItems loads a consistent snapshot of the user's set into the cache. A
// write that lands during the load makes Finish refuse the snapshot
// (domain.ErrStaleSnapshot): the load is retried up to ItemsAttempts times.
func (m *Manager) warmItems(ctx context.Context, userID int64) error {
	for attempt := 1; ; attempt++ {
		l := m.cfg.Items.BeginItemsLoad(userID)
		version, err := m.cfg.Store.LoadItems(ctx, userID, m.cfg.ChunkSize, func(chunk []string) error {
			return l.Add(ctx, chunk)
		})
		if err != nil {
			m.abort(ctx, l)
			return fmt.Errorf("load items: %w", err)
		}
		err = l.Finish(ctx, version, m.cfg.CacheTTL)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, domain.ErrStaleSnapshot):
			m.abort(ctx, l)
			return fmt.Errorf("install items: %w", err)
		case attempt >= m.cfg.ItemsAttempts:
			// Finish has dropped the stale snapshot already.
			return fmt.Errorf("the item set kept changing during the load (%d attempts): %w", attempt, err)
		}
		m.cfg.Logger.DebugContext(ctx, "warmup: item set changed during the load, loading again", "user_id", userID, "attempt", attempt)
	}
}

func (m *Manager) abort(ctx context.Context, l ItemLoad) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := l.Abort(ctx); err != nil {
		m.cfg.Logger.WarnContext(ctx, "warmup: abort items load", "error", err)
	}
}
