// Package ctxtime waits the way every loop of this tree waits: until a
// duration has passed or the context is done, whichever comes first.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx is done (then it returns ctx.Err()). A d
// of zero or less returns at once (ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Every runs f every d (the first time after d) until ctx is done. A run of
// f that outlasts d delays the next one; runs never overlap.
func Every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}
