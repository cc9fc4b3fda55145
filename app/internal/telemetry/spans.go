package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// ChildSpansOnly wraps tp so its tracers start a span only under a recording
// parent span (a request that was sampled in); anywhere else Start returns
// ctx unchanged and a span that does nothing. It is for instrumentation that
// makes a span per call of a client (valkeyotel: one per Valkey command):
// with a sampling ratio below 1, or with no exporter, the unsampled requests
// then pay no span per command, and background loops with no request span
// do not make a one-span trace per command.
func ChildSpansOnly(tp trace.TracerProvider) trace.TracerProvider {
	return childSpansProvider{tp: tp}
}

type childSpansProvider struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (p childSpansProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childSpansTracer{tr: p.tp.Tracer(name, opts...)}
}

type childSpansTracer struct {
	embedded.Tracer
	tr trace.Tracer
}

// noSpan is what an unparented Start returns: its End, SetStatus and
// RecordError are no-ops whatever the caller does with it (the parent span
// itself is never handed out, so a caller's End cannot end it).
var noSpan trace.Span = noop.Span{}

func (t childSpansTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return t.tr.Start(ctx, name, opts...)
}
