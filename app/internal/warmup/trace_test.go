package warmup_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warmpath/warmpath/app/internal/warmup"
)

func TestJobSpanLinksToCause(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	r := newRig()
	r.cfg.Tracer = tp.Tracer("test")
	r.store.addUser(1, "pro", 1)
	m := r.manager(t)
	ctx := context.Background()
	m.Start(ctx)

	cause, reqSpan := tp.Tracer("test").Start(ctx, "request")
	if _, err := m.Enqueue(cause, warmup.Job{UserID: 1, Cause: cause}); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()
	r.obs.next(t)

	var job sdktrace.ReadOnlySpan
	waitFor(t, "the job span to end", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "warmup.job" {
				job = s
				return true
			}
		}
		return false
	})
	if job.Parent().IsValid() {
		t.Errorf("job span has parent %v; want a root linked to the request", job.Parent())
	}
	links := job.Links()
	if len(links) != 1 || links[0].SpanContext.SpanID() != reqSpan.SpanContext().SpanID() {
		t.Errorf("links = %+v; want one to the request span", links)
	}
}
