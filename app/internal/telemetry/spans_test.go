package telemetry_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

func TestChildSpansOnly(t *testing.T) {
	tel, exp := newTelemetry(t, telemetry.Thresholds{}, map[string]string{
		// Roots sampled out, so one provider gives both kinds of parent.
		"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0",
	})
	always, alwaysExp := newTelemetry(t, telemetry.Thresholds{}, nil)
	child := telemetry.ChildSpansOnly(always.TracerProvider).Tracer("client")

	flush := func() {
		t.Helper()
		for _, x := range []*telemetry.Telemetry{tel, always} {
			if err := x.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("no parent", func(t *testing.T) {
		ctx := context.Background()
		got, span := child.Start(ctx, "GET")
		span.End()
		flush()
		if got != ctx || span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("without a parent: new context %v, recording %v, valid %v; want none of them", got != ctx, span.IsRecording(), span.SpanContext().IsValid())
		}
		if n := len(alwaysExp.GetSpans()); n != 0 {
			t.Errorf("%d spans exported for a call outside any span", n)
		}
	})
	t.Run("unsampled parent", func(t *testing.T) {
		ctx, parent := tel.TracerProvider.Tracer("server").Start(context.Background(), "request")
		if parent.IsRecording() {
			t.Fatal("ratio 0 recorded the parent")
		}
		got, span := child.Start(ctx, "GET")
		span.End()
		if got != ctx || span.IsRecording() {
			t.Errorf("under an unsampled parent: new context %v, recording %v", got != ctx, span.IsRecording())
		}
		if !trace.SpanFromContext(got).SpanContext().Equal(parent.SpanContext()) {
			t.Error("the context lost its parent span")
		}
		parent.End()
		flush()
		if n := len(alwaysExp.GetSpans()) + len(exp.GetSpans()); n != 0 {
			t.Errorf("%d spans exported under an unsampled parent", n)
		}
	})
	t.Run("recording parent", func(t *testing.T) {
		ctx, parent := always.TracerProvider.Tracer("server").Start(context.Background(), "request")
		_, span := child.Start(ctx, "GET")
		if !span.IsRecording() {
			t.Fatal("child of a recording parent does not record")
		}
		span.End()
		// The caller's End ended its own span, never the parent.
		if !parent.IsRecording() {
			t.Error("ending the child ended the parent")
		}
		parent.End()
		flush()
		spans := alwaysExp.GetSpans()
		if len(spans) != 2 || spans[0].Name != "GET" || spans[0].Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("exported %v, want GET as the child of request", spans.Snapshots())
		}
	})
}
