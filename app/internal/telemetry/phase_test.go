package telemetry

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
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

// A phase gets a child span under a recording request span and at the
// root, and none under a request span that does not record (not sampled):
// fn then runs under the request's span, and the phase's time is still
// added. StartPhase/End likewise.
func TestPhaseSpansOnlyWhereRecorded(t *testing.T) {
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler
		parent  bool
		want    []string
	}{
		{"sampled request", sdktrace.AlwaysSample(), true, []string{"request", PhaseAuth.Span(), PhaseQuery.Span()}},
		{"root", sdktrace.AlwaysSample(), false, []string{PhaseAuth.Span(), PhaseQuery.Span()}},
		{"request not sampled", sdktrace.ParentBased(sdktrace.NeverSample()), true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tr := sdktrace.NewTracerProvider(sdktrace.WithSampler(c.sampler), sdktrace.WithSpanProcessor(rec)).Tracer("")
			var tm Timings
			ctx := WithTimings(context.Background(), &tm)
			var req trace.Span
			if c.parent {
				ctx, req = tr.Start(ctx, "request")
			}
			own := c.want != nil // a phase span of its own
			err := RunPhase(ctx, tr, PhaseAuth, func(inner context.Context) error {
				got := trace.SpanFromContext(inner)
				under := req != nil && got.SpanContext().Equal(req.SpanContext())
				if own && (under || !got.IsRecording()) {
					t.Errorf("fn's span %v, want its own recording phase span", got.SpanContext())
				}
				if !own && !under {
					t.Errorf("fn's span %v, want the request's (no phase span under a span that does not record)", got.SpanContext())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now().Add(-time.Millisecond)
			_, run := StartPhase(ctx, tr, PhaseQuery, start)
			run.End(start.Add(time.Millisecond), errors.New("boom"))
			if req != nil {
				req.End()
			}
			var names []string
			for _, s := range rec.Ended() {
				names = append(names, s.Name())
			}
			slices.Sort(names)
			want := slices.Sorted(slices.Values(c.want))
			if !slices.Equal(names, want) {
				t.Errorf("spans %v, want %v", names, want)
			}
			if tm.Get(PhaseQuery) != time.Millisecond || tm.Get(PhaseAuth) <= 0 {
				t.Errorf("timings %+v, want both phases added", tm.Breakdown())
			}
		})
	}
}
