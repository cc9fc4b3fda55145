package valkey

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

func TestOpCtxSharedDeadline(t *testing.T) {
	const timeout = 40 * time.Millisecond
	c := conn{opTimeout: timeout, deadlines: newDeadlines(timeout)}
	tick := deadlineTick(timeout)
	parent := context.WithValue(context.Background(), ctxKey{}, "v")

	before := time.Now()
	ctx, cancel := c.opCtx(parent)
	after := time.Now()
	defer cancel()
	if _, ok := ctx.(*opContext); !ok {
		t.Fatalf("opCtx of an uncancellable context = %T, want the shared-deadline context", ctx)
	}
	dl, ok := ctx.Deadline()
	if !ok || dl.Before(before.Add(timeout)) || dl.After(after.Add(timeout+2*tick)) {
		t.Fatalf("deadline %v after the call started, want in [%v, %v]", dl.Sub(before), timeout, timeout+2*tick)
	}
	if v := ctx.Value(ctxKey{}); v != "v" {
		t.Fatalf("Value = %v, want the parent's", v)
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("Err before the deadline = %v", err)
	}
	// Calls in the same tick share the deadline (and its one timer).
	ctx2, _ := c.opCtx(parent)
	if ctx2.Done() != ctx.Done() {
		t.Fatal("two calls started at once got different deadlines")
	}

	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done never closed")
	}
	if time.Now().Before(dl) {
		t.Fatalf("Done closed %v before the deadline", time.Until(dl))
	}
	if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err after the deadline = %v, want DeadlineExceeded", err)
	}
	// Later calls get a later deadline, never the expired one.
	ctx3, _ := c.opCtx(parent)
	if dl3, _ := ctx3.Deadline(); !dl3.After(dl) || ctx3.Err() != nil {
		t.Fatalf("a call after the deadline got deadline %v (expired one %v), Err %v", dl3, dl, ctx3.Err())
	}
}

func TestOpCtxCancellableParent(t *testing.T) {
	const timeout = time.Hour
	c := conn{opTimeout: timeout, deadlines: newDeadlines(timeout)}

	// A parent that can be cancelled keeps a context of its own: cancelling
	// the parent ends the call.
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, cancel := c.opCtx(parent)
	defer cancel()
	if _, ok := ctx.(*opContext); ok {
		t.Fatal("a cancellable parent got the shared deadline, which would ignore its cancellation")
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > timeout {
		t.Fatalf("deadline %v, %v; want within %v", dl, ok, timeout)
	}
	cancelParent()
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the parent was cancelled = %v", err)
	}

	// A parent ending sooner is used as it is.
	soon, cancelSoon := context.WithTimeout(context.Background(), time.Minute)
	defer cancelSoon()
	if ctx, _ := c.opCtx(soon); ctx != soon {
		t.Fatalf("a parent ending before the timeout was wrapped: %T", ctx)
	}
}

func TestDeadlineBucketsConcurrent(t *testing.T) {
	const timeout = 20 * time.Millisecond
	d := newDeadlines(timeout)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				now := time.Now()
				b := d.bucket(now)
				if b.at.Before(now.Add(timeout)) || b.at.After(now.Add(timeout+2*d.tick)) {
					t.Errorf("bucket at %v from now, want in [%v, %v]", b.at.Sub(now), timeout, timeout+2*d.tick)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkOpCtx(b *testing.B) {
	c := conn{opTimeout: DefaultOpTimeout, deadlines: newDeadlines(DefaultOpTimeout)}
	parent := context.WithValue(context.Background(), ctxKey{}, 1)
	b.Run("shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := c.opCtx(parent)
			_ = ctx.Done()
			cancel()
		}
	})
	b.Run("timer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(parent, DefaultOpTimeout)
			_ = ctx.Done()
			cancel()
		}
	})
}
