package warmup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// StepStatus is the progress of one system warmup step. DurationMs is the
// step's wall time from its first attempt to its outcome, backoff included.
type StepStatus struct {
	Name       string   `json:"name"`
	State      State    `json:"state"`
	Attempts   int      `json:"attempts"`
	DurationMs *float64 `json:"durationMs"`
	Error      string   `json:"error,omitempty"`
}

// HotUsersStatus counts what the hot-user step did with the most recently
// active users.
type HotUsersStatus struct {
	Limit    int `json:"limit"`    // SYSTEM_WARMUP_HOT_USERS
	Found    int `json:"found"`    // ids the store returned
	Enqueued int `json:"enqueued"` // queued as system jobs
	Warm     int `json:"warm"`     // not enqueued: ready within TTL, or already queued or running
	Skipped  int `json:"skipped"`  // not enqueued: the queue's system share was full
	Failed   int `json:"failed"`   // not enqueued: an error
}

// QueueStatus is the user warmup queue right now.
type QueueStatus struct {
	Depth          int `json:"depth"`          // queued jobs, login + system
	Login          int `json:"login"`          // queued login jobs
	System         int `json:"system"`         // queued system jobs
	Capacity       int `json:"capacity"`       // WARMUP_QUEUE_SIZE
	SystemCapacity int `json:"systemCapacity"` // the system jobs' share of it
	Workers        int `json:"workers"`        // WARMUP_WORKERS
	Running        int `json:"running"`        // jobs running now (workers and inline)
}

// SystemStatus is the system warmup's progress and the queue's state, shaped
// for GET /admin/warmup and /readyz?verbose. State is idle before the
// system warmup starts, running, then ready, or failed when a step failed
// for good (Error names them; serving is never affected).
type SystemStatus struct {
	State      State          `json:"state"`
	StartedAt  *time.Time     `json:"startedAt"`
	FinishedAt *time.Time     `json:"finishedAt"`
	DurationMs *float64       `json:"durationMs"`
	Error      string         `json:"error,omitempty"`
	Steps      []StepStatus   `json:"steps"`
	HotUsers   HotUsersStatus `json:"hotUsers"`
	Queue      QueueStatus    `json:"queue"`
}

func (m *Manager) initialSystemStatus() SystemStatus {
	st := SystemStatus{State: StateIdle, HotUsers: HotUsersStatus{Limit: m.cfg.HotUsers}}
	for _, s := range m.cfg.SystemSteps {
		st.Steps = append(st.Steps, StepStatus{Name: s.Name, State: StateIdle})
	}
	st.Steps = append(st.Steps, StepStatus{Name: HotUsersStep, State: StateIdle})
	return st
}

// System returns the system warmup's progress and the queue's state.
func (m *Manager) System() SystemStatus {
	m.sysMu.Lock()
	st := m.sysState
	st.Steps = append([]StepStatus(nil), m.sysState.Steps...)
	m.sysMu.Unlock()

	m.mu.Lock()
	st.Queue = QueueStatus{
		Depth:          m.nLogin + m.nSystem,
		Login:          m.nLogin,
		System:         m.nSystem,
		Capacity:       m.cfg.QueueSize,
		SystemCapacity: m.cfg.SystemQueueSize,
		Workers:        m.cfg.Workers,
		Running:        m.running,
	}
	m.mu.Unlock()
	return st
}

func (m *Manager) sys(f func(*SystemStatus)) {
	m.sysMu.Lock()
	defer m.sysMu.Unlock()
	f(&m.sysState)
}

// runSystem runs the system steps in order, then the hot-user step. A failed
// step never stops the others.
func (m *Manager) runSystem(ctx context.Context) {
	start := m.cfg.Now()
	m.sys(func(s *SystemStatus) { s.State, s.StartedAt = StateRunning, &start })
	m.cfg.Logger.InfoContext(ctx, "system warmup started", "steps", len(m.cfg.SystemSteps)+1)

	for i, step := range m.cfg.SystemSteps {
		if ctx.Err() != nil {
			break
		}
		m.runStep(ctx, i, step.Name, step.Run)
	}
	hot := len(m.cfg.SystemSteps)
	switch {
	case ctx.Err() != nil:
	case m.cfg.HotUsers == 0:
		m.sys(func(s *SystemStatus) { s.Steps[hot].State = StateSkipped })
	default:
		m.runStep(ctx, hot, HotUsersStep, m.warmHotUsers)
	}

	end := m.cfg.Now()
	m.sys(func(s *SystemStatus) {
		s.FinishedAt, s.DurationMs = &end, ms(end.Sub(start))
		var failed []string
		for _, st := range s.Steps {
			if st.State == StateFailed || st.State == StateIdle || st.State == StateRunning {
				failed = append(failed, st.Name)
			}
		}
		s.State = StateReady
		if len(failed) > 0 {
			s.State, s.Error = StateFailed, "steps not ready: "+strings.Join(failed, ", ")
		}
	})
	m.cfg.Logger.InfoContext(ctx, "system warmup finished", "duration", end.Sub(start), "state", string(m.System().State))
}

// runStep runs one step with bounded attempts and exponential backoff.
func (m *Manager) runStep(ctx context.Context, idx int, name string, run func(context.Context) error) {
	start := m.cfg.Now()
	backoff := m.cfg.StepBackoff
	for attempt := 1; ; attempt++ {
		m.sys(func(s *SystemStatus) { s.Steps[idx].State, s.Steps[idx].Attempts = StateRunning, attempt })
		actx, cancel := context.WithTimeout(ctx, m.cfg.JobTimeout)
		err := run(actx)
		cancel()
		d := m.cfg.Now().Sub(start)
		if err == nil {
			m.sys(func(s *SystemStatus) {
				s.Steps[idx].State, s.Steps[idx].DurationMs, s.Steps[idx].Error = StateReady, ms(d), ""
			})
			m.cfg.Logger.InfoContext(ctx, "system warmup step ready", "step", name, "attempts", attempt, "duration", d)
			return
		}
		m.cfg.Logger.WarnContext(ctx, "system warmup step failed", "step", name, "attempt", attempt, "error", err)
		final := attempt >= m.cfg.StepAttempts || ctx.Err() != nil
		m.sys(func(s *SystemStatus) {
			s.Steps[idx].Error, s.Steps[idx].DurationMs = err.Error(), ms(d)
			if final {
				s.Steps[idx].State = StateFailed
			}
		})
		if final {
			return
		}
		if err := m.cfg.Wait(ctx, backoff); err != nil {
			m.sys(func(s *SystemStatus) { s.Steps[idx].State = StateFailed })
			return
		}
		backoff = min(backoff*2, m.cfg.StepMaxBackoff)
	}
}

// warmHotUsers enqueues the most recently active users as system jobs. It
// never blocks on a full queue: it stops and counts the rest as skipped.
// Only reading the list fails the step (and is retried).
func (m *Manager) warmHotUsers(ctx context.Context) error {
	ids, err := m.cfg.Store.RecentlyActiveUsers(ctx, m.cfg.HotUsers)
	if err != nil {
		return fmt.Errorf("recently active users: %w", err)
	}
	m.sys(func(s *SystemStatus) { s.HotUsers = HotUsersStatus{Limit: m.cfg.HotUsers, Found: len(ids)} })
	for i, id := range ids {
		_, queued, err := m.enqueue(ctx, Job{UserID: id, Kind: KindSystem})
		switch {
		case errors.Is(err, ErrQueueFull):
			m.sys(func(s *SystemStatus) { s.HotUsers.Skipped = len(ids) - i })
			m.cfg.Logger.InfoContext(ctx, "system warmup: queue full, hot users skipped", "skipped", len(ids)-i)
			return nil
		case errors.Is(err, ErrStopped) || ctx.Err() != nil:
			return nil
		case err != nil:
			m.sys(func(s *SystemStatus) { s.HotUsers.Failed++ })
			m.cfg.Logger.WarnContext(ctx, "system warmup: enqueue hot user", "user_id", id, "error", err)
		case queued:
			m.sys(func(s *SystemStatus) { s.HotUsers.Enqueued++ })
		default:
			m.sys(func(s *SystemStatus) { s.HotUsers.Warm++ })
		}
	}
	return nil
}
