package telemetry

import (
	"context"
	"errors"
	"testing"
	"time"

	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// The names are DESIGN.md's; this table test is where a rename must show.
func TestPhaseNames(t *testing.T) {
	for _, tc := range []struct {
		p                         Phase
		metric, span, timing, log string
	}{
		{PhaseAuth, "auth", "auth", "auth", "auth"},
		{PhaseUsageCheck, "usage_check", "usage.check", "usage", "usageCheck"},
		{PhaseQuery, "query", "engine.query", "query", "query"},
		{PhaseDB, "db", "", "db", "db"},
		{PhaseTotal, "total", "", "total", ""},
	} {
		if got := [4]string{tc.p.Metric(), tc.p.Span(), tc.p.ServerTiming(), tc.p.Log()}; got != [4]string{tc.metric, tc.span, tc.timing, tc.log} {
			t.Errorf("phase %d: names %q, want %q", tc.p, got, [4]string{tc.metric, tc.span, tc.timing, tc.log})
		}
	}
}

func TestTimingsThroughTheContext(t *testing.T) {
	AddPhase(context.Background(), PhaseDB, time.Now()) // outside a request: no-op, no panic
	var tm Timings
	ctx := WithTimings(context.Background(), &tm)
	tr := tracenoop.NewTracerProvider().Tracer("")
	err := RunPhase(ctx, tr, PhaseQuery, func(ctx context.Context) error {
		start := time.Now().Add(-2 * time.Millisecond)
		AddPhase(ctx, PhaseDB, start) // a store call inside the phase
		AddPhase(ctx, PhaseDB, start) // and another
		return errors.New("boom")
	})
	if err == nil {
		t.Fatal("RunPhase lost fn's error")
	}
	b := tm.Breakdown()
	if b.DB < 4*time.Millisecond {
		t.Errorf("db = %v, want the sum of both calls (>= 4ms)", b.DB)
	}
	if b.Query < 0 || b.Auth != 0 || b.UsageCheck != 0 {
		t.Errorf("breakdown %+v: only query and db should have run", b)
	}
	if !apperr.IsFault(err) || apperr.IsFault(apperr.New(apperr.QuotaExceeded, "no")) {
		t.Error("IsFault: a plain error is a fault, a refusal is not")
	}
}
