package valkey_test

import (
	"context"
	"testing"

	"github.com/alicebob/miniredis/v2"
	valkeygo "github.com/valkey-io/valkey-go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

func TestInstrument(t *testing.T) {
	m := miniredis.RunT(t)
	raw, err := valkeygo.NewClient(valkeygo.ClientOption{InitAddress: []string{m.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	wrap, err := valkey.Instrument(tp, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	c := wrap(raw)
	ctx := context.Background()

	// No recording span: metrics only. A nil reply is no error; a wrong
	// type is one; a pipeline is one command, failed if any reply is.
	if err := c.Do(ctx, c.B().Set().Key("s").Value("v").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, c.B().Get().Key("missing").Build()).Error(); !valkeygo.IsValkeyNil(err) {
		t.Fatalf("GET missing: %v, want nil reply", err)
	}
	if err := c.Do(ctx, c.B().Hget().Key("s").Field("f").Build()).Error(); err == nil {
		t.Fatal("HGET on a string succeeded")
	}
	c.DoMulti(ctx, c.B().Get().Key("s").Build(), c.B().Get().Key("s").Build())
	c.DoMulti(ctx, c.B().Get().Key("s").Build(), c.B().Hget().Key("s").Field("f").Build())
	// A node's calls (the sweep's SCAN, SCRIPT LOAD) are instrumented too.
	for _, node := range c.Nodes() {
		if err := node.Do(ctx, node.B().Hget().Key("s").Field("f").Build()).Error(); err == nil {
			t.Fatal("HGET on a string succeeded")
		}
	}
	if n := len(spans.Ended()); n != 0 {
		t.Fatalf("%d spans without a recording parent, want 0", n)
	}
	durations, errs := commandMetrics(t, reader)
	if durations != 6 || errs != 3 {
		t.Fatalf("valkey_command_duration_seconds count %d, valkey_command_errors %d; want 6 and 3", durations, errs)
	}

	// Under a recording span: one client span per call, named after the
	// command, without the statement.
	pctx, parent := tp.Tracer("test").Start(ctx, "request")
	if err := c.Do(pctx, c.B().Get().Key("s").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var got []sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() != "request" {
			got = append(got, s)
		}
	}
	if len(got) != 1 || got[0].Name() != "GET" || got[0].Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("spans under the request = %v, want one GET span beneath it", got)
	}
	attrs := map[string]string{}
	for _, a := range got[0].Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["db.system"] != "valkey" || attrs["db.operation"] != "GET" || attrs["db.statement"] != "" {
		t.Fatalf("span attributes %v, want db.system and db.operation, no statement", attrs)
	}
}

// commandMetrics reads the histogram's count and the error counter's sum.
func commandMetrics(t *testing.T, r sdkmetric.Reader) (durations uint64, errs int64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != valkey.InstrumentationScope {
			continue
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == "valkey_command_duration_seconds" {
					for _, p := range d.DataPoints {
						durations += p.Count
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == "valkey_command_errors" {
					for _, p := range d.DataPoints {
						errs += p.Value
					}
				}
			}
		}
	}
	return durations, errs
}
