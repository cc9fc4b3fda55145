// Package clocktest is a manual clock for tests: time moves only when a test
// (or a fake that "takes time") advances it, so time-dependent logic is
// checked without sleeping.
package clocktest

import (
	"context"
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock that reads start until advanced.
func New(start time.Time) *Clock { return &Clock{t: start} }

// Now is the clock's time; pass it where a func() time.Time is injected.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Wait passes d on the clock at once (an injectable wait/sleep); it returns
// ctx's error, as a real wait cut short would.
func (c *Clock) Wait(ctx context.Context, d time.Duration) error {
	c.Advance(d)
	return ctx.Err()
}
