package usagesync

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestBatchSpanLinksToTheForcingRequest(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	q := newFakeQueue(map[int64]int64{1: 3, 2: 4})
	s := newSyncer(t, Config{Interval: time.Hour, Store: newFakeLedger(), Queue: q, Tracer: tp.Tracer("test")})
	runSyncer(t, s)

	reqCtx, req := tp.Tracer("test").Start(context.Background(), "POST /admin/sync")
	s.TriggerFrom(reqCtx)
	req.End()

	eventually(t, "a batch span", func() bool {
		for _, sp := range rec.Ended() {
			if sp.Name() == "usage.sync.batch" {
				return true
			}
		}
		return false
	})
	for _, sp := range rec.Ended() {
		if sp.Name() != "usage.sync.batch" {
			continue
		}
		if sp.Parent().IsValid() {
			t.Fatalf("a batch is a trace of its own, got parent %v", sp.Parent())
		}
		if len(sp.Links()) != 1 || sp.Links()[0].SpanContext.SpanID() != req.SpanContext().SpanID() {
			t.Fatalf("want a link to the forcing request, got %+v", sp.Links())
		}
		return
	}
}
