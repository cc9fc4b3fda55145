package valkey

import (
	"context"
	"sync/atomic"
	"time"
)

// deadlines gives calls the OpTimeout deadline without a timer each.
//
// context.WithTimeout costs a timer armed and stopped per call (3–4 µs and
// four allocations on the 2-core development machine, two calls per warm
// query). A call whose context can never be cancelled (no Done channel: the
// request contexts of the HTTP layer, which derive from
// context.Background) needs nothing from its parent but its values, so it
// gets a context whose deadline is shared with every call started within
// the same tick: the first tick at or after now+timeout, closed by one timer
// per tick in which calls started. A call's deadline is therefore between
// timeout and timeout+2×tick away (one tick, unless a caller read the clock
// before the one that made the bucket), never sooner.
type deadlines struct {
	timeout time.Duration
	tick    time.Duration
	cur     atomic.Pointer[deadlineBucket]
}

// deadlineBucket is one shared deadline and the channel closed at it.
type deadlineBucket struct {
	at   time.Time
	done chan struct{}
}

// deadlineTick is the width of a shared deadline: 1/64 of the
// timeout, within [1 ms, 10 ms] (at most 8 ms for the default 500 ms).
func deadlineTick(timeout time.Duration) time.Duration {
	return min(max(timeout/64, time.Millisecond), 10*time.Millisecond)
}

func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, tick: deadlineTick(timeout)}
}

// bucket returns a bucket whose deadline is in [now+timeout, now+timeout+2×tick].
func (d *deadlines) bucket(now time.Time) *deadlineBucket {
	want := now.Add(d.timeout)
	for {
		b := d.cur.Load()
		if b != nil && !b.at.Before(want) && b.at.Sub(want) <= 2*d.tick {
			return b
		}
		nb := &deadlineBucket{at: want.Add(d.tick), done: make(chan struct{})}
		if d.cur.CompareAndSwap(b, nb) {
			time.AfterFunc(nb.at.Sub(now), func() { close(nb.done) })
			return nb
		}
	}
}

// opContext is a call's context: its parent's values, a shared deadline.
// Its parent has no Done channel (it can never be cancelled), so the
// deadline is the only way it ends.
type opContext struct {
	context.Context
	b *deadlineBucket
}

func (c *opContext) Deadline() (time.Time, bool) { return c.b.at, true }
func (c *opContext) Done() <-chan struct{}       { return c.b.done }

func (c *opContext) Err() error {
	select {
	case <-c.b.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *opContext) String() string { return "valkey.opContext" }

// noCancel is the CancelFunc of a context that holds no resources.
func noCancel() {}
