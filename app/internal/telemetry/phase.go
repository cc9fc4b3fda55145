package telemetry

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// Phase is one phase of a request. Each phase has one name per medium, fixed
// by DESIGN.md, and this table is the only place they are spelled: the label
// of the phase metrics and THRESHOLD_* (Metric), the child span (Span), the
// Server-Timing entry (ServerTiming) and the [PERF] line's breakdown key
// (Log). Use the methods; never the strings.
type Phase uint8

// The phases, in pipeline order (the order of RecordRequest's slow result).
const (
	PhaseAuth Phase = iota
	PhaseUsageCheck
	PhaseQuery
	PhaseDB
	PhaseTotal
	nPhases
)

var phaseNames = [nPhases]struct{ metric, span, timing, log string }{
	PhaseAuth:       {metric: "auth", span: "auth", timing: "auth", log: "auth"},
	PhaseUsageCheck: {metric: "usage_check", span: "usage.check", timing: "usage", log: "usageCheck"},
	PhaseQuery:      {metric: "query", span: "engine.query", timing: "query", log: "query"},
	// db overlaps the other phases (it is time spent inside them); it has no
	// span of its own (pgx's spans are its children), nor has total (the
	// server span).
	PhaseDB:    {metric: "db", timing: "db", log: "db"},
	PhaseTotal: {metric: "total", timing: "total"},
}

// Metric is the phase's label value on warmpath_phase_duration_seconds,
// warmpath_slow_phase_total and warmpath_alert_threshold_seconds.
func (p Phase) Metric() string { return phaseNames[p].metric }

// Span is the name of the phase's child span of the request span.
func (p Phase) Span() string { return phaseNames[p].span }

// ServerTiming is the phase's name in the Server-Timing header.
func (p Phase) ServerTiming() string { return phaseNames[p].timing }

// Log is the phase's key in the [PERF] line's breakdown.
func (p Phase) Log() string { return phaseNames[p].log }

// String is the metric name.
func (p Phase) String() string { return p.Metric() }

// Timings accumulates one request's time per phase. The HTTP middleware puts
// one in the request's context (WithTimings); whoever spends time in a phase
// adds it (AddPhase, RunPhase), so the store wrapper counts DB time wherever
// it is spent (auth, usage, the query) without any API carrying it. Safe for
// concurrent use (an inline warmup may add from another goroutine).
type Timings struct{ d [nPhases]atomic.Int64 }

// Add adds d to phase p.
func (t *Timings) Add(p Phase, d time.Duration) { t.d[p].Add(int64(d)) }

// Get returns the time accumulated in phase p.
func (t *Timings) Get(p Phase) time.Duration { return time.Duration(t.d[p].Load()) }

// Breakdown returns a snapshot of t.
func (t *Timings) Breakdown() Breakdown {
	return Breakdown{Auth: t.Get(PhaseAuth), UsageCheck: t.Get(PhaseUsageCheck), Query: t.Get(PhaseQuery), DB: t.Get(PhaseDB), Total: t.Get(PhaseTotal)}
}

type timingsKey struct{}

// WithTimings returns ctx carrying t.
func WithTimings(ctx context.Context, t *Timings) context.Context {
	return context.WithValue(ctx, timingsKey{}, t)
}

// TimingsFrom returns the Timings in ctx, or nil outside a request.
func TimingsFrom(ctx context.Context) *Timings {
	t, _ := ctx.Value(timingsKey{}).(*Timings)
	return t
}

// AddPhase adds the time since start to phase p of the request in ctx (none
// outside a request). Use as `defer telemetry.AddPhase(ctx, PhaseDB, time.Now())`.
func AddPhase(ctx context.Context, p Phase, start time.Time) {
	if t := TimingsFrom(ctx); t != nil {
		t.Add(p, time.Since(start))
	}
}

// RunPhase runs fn as phase p of the request in ctx: inside a child span
// named p.Span(), its duration added to the request's Timings. A failure
// that is the server's fault marks the span as an error; a refusal (a 4xx)
// does not.
func RunPhase(ctx context.Context, tr trace.Tracer, p Phase, fn func(ctx context.Context) error) error {
	return RunSpan(ctx, tr, p, p.Span(), fn)
}

// RunSpan is RunPhase with a span of another name, for work that counts in
// phase p but is not its usual span (an item change counts as query time
// under "engine.update").
//
// Under a request span that is not recording (not sampled, or no exporter:
// the default) no child span is made at all: it could only be another
// non-recording span, an allocation and a span id per phase that nothing
// receives; fn runs in ctx, under the request's span.
func RunSpan(ctx context.Context, tr trace.Tracer, p Phase, span string, fn func(ctx context.Context) error) error {
	t := TimingsFrom(ctx)
	var sp trace.Span
	if recording(ctx) {
		ctx, sp = tr.Start(ctx, span)
	}
	start := time.Now()
	err := fn(ctx)
	if t != nil {
		t.Add(p, time.Since(start))
	}
	if sp == nil {
		return err
	}
	if err != nil && apperr.IsFault(err) {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, "failed")
	}
	sp.End()
	return err
}

// recording reports whether a phase in ctx gets a span (see RunSpan): not
// under a span that does not record. Every standard sampler gives a child
// the decision of its parent's trace (parent-based, or by the trace id), so
// such a child would not record either. Without a span in ctx (outside a
// request) the tracer's sampler decides.
func recording(ctx context.Context) bool {
	sp := trace.SpanFromContext(ctx)
	return sp.IsRecording() || !sp.SpanContext().IsValid()
}
