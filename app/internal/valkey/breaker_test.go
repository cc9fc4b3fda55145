package valkey

import (
	"context"
	"errors"
	"testing"
	"time"

	valkey "github.com/valkey-io/valkey-go"
)

// scriptedClient answers Do with err and counts calls.
type scriptedClient struct {
	valkey.Client
	err   error
	calls int
}

func (s *scriptedClient) Do(context.Context, valkey.Completed) valkey.ValkeyResult {
	s.calls++
	return valkey.NewErrorResult(s.err)
}

func TestBreakerOpensFailsFastAndProbes(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBreaker(3, time.Second)
	b.now = func() time.Time { return now }
	down := &scriptedClient{err: errors.New("dial tcp: connection refused")}
	c := breakerClient{Client: down, b: b}
	ctx := context.Background()
	var cmd valkey.Completed

	for range 3 {
		if err := c.Do(ctx, cmd).Error(); err == nil || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("the first failures reach the server: %v", err)
		}
	}
	for range 10 {
		if err := c.Do(ctx, cmd).Error(); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("open breaker must fail fast, got %v", err)
		}
	}
	if down.calls != 3 {
		t.Fatalf("server calls = %d, want 3", down.calls)
	}
	now = now.Add(time.Second)
	if err := c.Do(ctx, cmd).Error(); errors.Is(err, ErrBreakerOpen) || down.calls != 4 {
		t.Fatalf("after the cool-down one probe goes out: %v, calls %d", err, down.calls)
	}
	if err := c.Do(ctx, cmd).Error(); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("a failed probe re-opens at once: %v", err)
	}
	now = now.Add(time.Second)
	down.err = valkey.Nil // the server answers again ("not found" is an answer)
	if err := c.Do(ctx, cmd).Error(); !valkey.IsValkeyNil(err) {
		t.Fatalf("probe: %v", err)
	}
	if b.open() {
		t.Fatal("a successful probe closes the breaker")
	}
	for range 5 {
		if err := c.Do(ctx, cmd).Error(); errors.Is(err, ErrBreakerOpen) {
			t.Fatal("closed breaker must let calls through")
		}
	}
}

func TestBreakerIgnoresAnswersAndCallerCancellation(t *testing.T) {
	b := newBreaker(1, time.Hour)
	for _, err := range []error{nil, valkey.Nil, context.Canceled} {
		b.record(err, false)
		if b.open() {
			t.Fatalf("%v must not open the breaker", err)
		}
	}
	b.record(context.DeadlineExceeded, false)
	if !b.open() {
		t.Fatal("a timeout is an outage")
	}
}
