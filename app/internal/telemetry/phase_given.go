package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// PhaseRun is a phase of the request whose end the caller gives (StartPhase,
// End): for one call whose time belongs to two phases, split after the fact
// (the usage count that also answers the query in one Valkey round trip,
// each step timed by the server).
type PhaseRun struct {
	span  trace.Span
	t     *Timings
	p     Phase
	start time.Time
}

// StartPhase starts phase p of the request in ctx at start: a child span
// named p.Span() with that start time, when the request's span records (see
// RunSpan). End records it.
func StartPhase(ctx context.Context, tr trace.Tracer, p Phase, start time.Time, opts ...trace.SpanStartOption) (context.Context, PhaseRun) {
	run := PhaseRun{t: TimingsFrom(ctx), p: p, start: start}
	if recording(ctx) {
		ctx, run.span = tr.Start(ctx, p.Span(), append(opts, trace.WithTimestamp(start))...)
	}
	return ctx, run
}

// End ends the phase at end: its span ends then and end − start is added to
// the request's Timings. err is the phase's outcome, marked as RunPhase
// marks it.
func (r PhaseRun) End(end time.Time, err error) {
	if r.t != nil {
		r.t.Add(r.p, end.Sub(r.start))
	}
	if r.span == nil {
		return
	}
	if err != nil && apperr.IsFault(err) {
		r.span.RecordError(err)
		r.span.SetStatus(codes.Error, "failed")
	}
	r.span.End(trace.WithTimestamp(end))
}
