package valkey

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	valkey "github.com/valkey-io/valkey-go"
)

// ErrBreakerOpen is returned without a network round trip while the circuit
// breaker is open: Valkey failed several times in a row and is given a short
// rest before it is probed again. It wraps as an outage (ErrUnavailable).
var ErrBreakerOpen = errors.New("valkey circuit breaker open")

// Breaker defaults.
const (
	DefaultBreakerFailures = 3
	DefaultBreakerCooldown = time.Second
)

// breaker is a consecutive-failure circuit breaker. While Valkey is down,
// every request would otherwise wait out OpTimeout on each of its Valkey
// calls before degrading; with the breaker open they degrade at once (to
// Postgres, to in-process counting, or to a clear 503), and one probe per
// cool-down finds out when Valkey is back.
type breaker struct {
	failures  int32
	cooldown  time.Duration
	now       func() time.Time
	streak    atomic.Int32
	openUntil atomic.Int64 // unix nanos; 0 = closed
	probing   atomic.Bool
}

func newBreaker(failures int, cooldown time.Duration) *breaker {
	return &breaker{failures: int32(failures), cooldown: cooldown, now: time.Now}
}

// allow reports whether a call may go out, and whether it is the probe.
func (b *breaker) allow() (ok, probe bool) {
	until := b.openUntil.Load()
	if until == 0 {
		return true, false
	}
	if b.now().UnixNano() < until {
		return false, false
	}
	// Cool-down over: exactly one caller probes; the rest keep failing fast.
	if b.probing.CompareAndSwap(false, true) {
		return true, true
	}
	return false, false
}

// record feeds a call's outcome back.
func (b *breaker) record(err error, probe bool) {
	if !outage(err) {
		b.streak.Store(0)
		if b.openUntil.Load() != 0 {
			b.openUntil.Store(0)
		}
		if probe {
			b.probing.Store(false)
		}
		return
	}
	if probe || b.streak.Add(1) >= b.failures {
		b.streak.Store(0)
		b.openUntil.Store(b.now().Add(b.cooldown).UnixNano())
		b.probing.Store(false)
	}
}

// open reports whether the breaker currently refuses calls.
func (b *breaker) open() bool {
	until := b.openUntil.Load()
	return until != 0 && b.now().UnixNano() < until
}

// outage tells a connectivity failure from an answer (nil, a script error)
// and from the caller giving up (its own cancellation).
func outage(err error) bool {
	if err == nil || valkey.IsValkeyNil(err) || errors.Is(err, context.Canceled) {
		return false
	}
	if ve, ok := valkey.IsValkeyErr(err); ok {
		return transient(ve)
	}
	return true
}

// breakerClient is a valkey.Client whose calls go through a breaker. Scripts
// (valkey.Lua.Exec) use Do, so they are covered too.
type breakerClient struct {
	valkey.Client
	b *breaker
}

func (c breakerClient) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	return c.one(func() valkey.ValkeyResult { return c.Client.Do(ctx, cmd) })
}

func (c breakerClient) DoCache(ctx context.Context, cmd valkey.Cacheable, ttl time.Duration) valkey.ValkeyResult {
	return c.one(func() valkey.ValkeyResult { return c.Client.DoCache(ctx, cmd, ttl) })
}

func (c breakerClient) DoMulti(ctx context.Context, cmds ...valkey.Completed) []valkey.ValkeyResult {
	return c.multi(len(cmds), func() []valkey.ValkeyResult { return c.Client.DoMulti(ctx, cmds...) })
}

func (c breakerClient) DoMultiCache(ctx context.Context, multi ...valkey.CacheableTTL) []valkey.ValkeyResult {
	return c.multi(len(multi), func() []valkey.ValkeyResult { return c.Client.DoMultiCache(ctx, multi...) })
}

// one runs a single call through the breaker.
func (c breakerClient) one(call func() valkey.ValkeyResult) valkey.ValkeyResult {
	ok, probe := c.b.allow()
	if !ok {
		return valkey.NewErrorResult(ErrBreakerOpen)
	}
	r := call()
	c.b.record(r.Error(), probe)
	return r
}

// multi runs a pipeline of n commands through the breaker.
func (c breakerClient) multi(n int, call func() []valkey.ValkeyResult) []valkey.ValkeyResult {
	ok, probe := c.b.allow()
	if !ok {
		return failAll(n)
	}
	rs := call()
	c.b.record(firstErr(rs), probe)
	return rs
}

func failAll(n int) []valkey.ValkeyResult {
	rs := make([]valkey.ValkeyResult, n)
	for i := range rs {
		rs[i] = valkey.NewErrorResult(ErrBreakerOpen)
	}
	return rs
}

// firstErr returns the first outage among results, else the first error.
func firstErr(rs []valkey.ValkeyResult) error {
	var first error
	for _, r := range rs {
		if err := r.Error(); err != nil {
			if outage(err) {
				return err
			}
			if first == nil {
				first = err
			}
		}
	}
	return first
}
