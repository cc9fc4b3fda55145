package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/waittest"
)

// poll calls cond until it returns true or the deadline passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waittest.Until(t, timeout, what, cond)
}

// endSpan starts and ends a span named name under ctx and flushes it to the
// exporter.
func endSpan(t *testing.T, tel *telemetry.Telemetry, ctx context.Context, name string) trace.Span {
	t.Helper()
	_, span := tel.TracerProvider.Tracer("test").Start(ctx, name)
	span.End()
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	return span
}

func TestSpansExportedToGivenExporter(t *testing.T) {
	tel, exp := newTelemetry(t, telemetry.Thresholds{}, map[string]string{
		"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,team=perf%20lab",
	})
	endSpan(t, tel, context.Background(), "auth")
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "auth" {
		t.Fatalf("exported spans = %v, want one named auth", spans)
	}
	attrs := map[string]string{}
	for _, kv := range spans[0].Resource.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{
		"service.name": "warmpath", "service.version": "test",
		"deployment.environment": "ci", "team": "perf lab",
	} {
		if attrs[k] != want {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, attrs[k], want, attrs)
		}
	}
}

func TestServiceNameEnvOverrides(t *testing.T) {
	tel, exp := newTelemetry(t, telemetry.Thresholds{}, map[string]string{
		"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs",
		"OTEL_SERVICE_NAME":        "from-env",
	})
	endSpan(t, tel, context.Background(), "x")
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("got %d spans", len(spans))
	}
	v, _ := spans[0].Resource.Set().Value("service.name")
	if v.AsString() != "from-env" {
		t.Errorf("service.name = %q, want from-env", v.AsString())
	}
}

func TestSamplerFromEnv(t *testing.T) {
	cases := []struct {
		sampler, arg string
		parent       bool // start the span under a sampled remote parent
		wantSampled  bool
	}{
		{"", "", false, true},
		{"always_on", "", false, true},
		{"always_off", "", false, false},
		{"always_off", "", true, false},
		{"traceidratio", "0", false, false},
		{"traceidratio", "1", false, true},
		{"parentbased_always_on", "", false, true},
		{"parentbased_always_off", "", false, false},
		{"parentbased_always_off", "", true, true},
		{"parentbased_traceidratio", "0", false, false},
		{"parentbased_traceidratio", "0", true, true},
		{"bogus", "", false, true}, // falls back to the default
	}
	for _, tc := range cases {
		t.Run(tc.sampler+"/"+tc.arg, func(t *testing.T) {
			tel, exp := newTelemetry(t, telemetry.Thresholds{}, map[string]string{
				"OTEL_TRACES_SAMPLER": tc.sampler, "OTEL_TRACES_SAMPLER_ARG": tc.arg,
			})
			ctx := context.Background()
			if tc.parent {
				ctx = tel.Propagator.Extract(ctx, propagation.MapCarrier{
					"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
				})
			}
			span := endSpan(t, tel, ctx, "s")
			if got := span.SpanContext().IsSampled(); got != tc.wantSampled {
				t.Errorf("sampled = %v, want %v", got, tc.wantSampled)
			}
			if got, want := len(exp.GetSpans()), map[bool]int{true: 1, false: 0}[tc.wantSampled]; got != want {
				t.Errorf("exported %d spans, want %d", got, want)
			}
		})
	}
}

func TestOTLPExporterFromEnv(t *testing.T) {
	var (
		mu      sync.Mutex
		paths   []string
		headers []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		headers = append(headers, r.Header.Get("X-Tenant"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL,
		"OTEL_EXPORTER_OTLP_HEADERS":  "X-Tenant=perf",
	}
	tel, err := telemetry.New(context.Background(), telemetry.Config{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) == 0 || paths[0] != "/v1/traces" || headers[0] != "perf" {
		t.Errorf("OTLP requests: paths %v headers %v, want /v1/traces with X-Tenant=perf", paths, headers)
	}
}

func TestNoExporterRecordsNothingButKeepsTraceIDs(t *testing.T) {
	// Whatever the sampler asks: with no exporter nobody receives a span.
	for _, sampler := range []string{"", "always_on", "parentbased_traceidratio"} {
		t.Run("sampler="+sampler, func(t *testing.T) {
			tel, err := telemetry.New(context.Background(), telemetry.Config{
				Getenv: func(k string) string {
					if k == "OTEL_TRACES_SAMPLER" {
						return sampler
					}
					return ""
				},
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer tel.Shutdown(context.Background())
			tr := tel.TracerProvider.Tracer("test")

			_, root := tr.Start(context.Background(), "x")
			defer root.End()
			if sc := root.SpanContext(); !sc.IsValid() || root.IsRecording() || sc.IsSampled() {
				t.Errorf("root span: valid %v recording %v sampled %v; want a valid id on a span that records nothing",
					sc.IsValid(), root.IsRecording(), sc.IsSampled())
			}

			// A caller's trace id (traceparent, sampled) is kept for the logs.
			tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
			sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
			parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
			_, child := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "y")
			defer child.End()
			if sc := child.SpanContext(); sc.TraceID() != tid || !sc.SpanID().IsValid() || sc.SpanID() == sid || child.IsRecording() {
				t.Errorf("under a remote parent: trace %s span %s recording %v; want trace %s, a fresh span id, not recording",
					sc.TraceID(), sc.SpanID(), child.IsRecording(), tid)
			}
		})
	}
}

func TestExporterRecordsSpans(t *testing.T) {
	tel, exp := newTelemetry(t, telemetry.Thresholds{}, nil)
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	if !span.IsRecording() || !span.SpanContext().IsSampled() {
		t.Errorf("with an exporter: recording %v sampled %v, want both (default sampler parentbased_always_on)", span.IsRecording(), span.SpanContext().IsSampled())
	}
	span.End()
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := exp.GetSpans(); len(got) != 1 || got[0].Name != "x" {
		t.Errorf("exported %v, want the one span x", got.Snapshots())
	}
}

func TestExporterHonoursSamplerRatio(t *testing.T) {
	tel, exp := newTelemetry(t, telemetry.Thresholds{}, map[string]string{
		"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0",
	})
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	if span.IsRecording() || !span.SpanContext().IsValid() {
		t.Errorf("ratio 0: recording %v valid %v, want a valid non-recording span", span.IsRecording(), span.SpanContext().IsValid())
	}
	span.End()
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := exp.GetSpans(); len(got) != 0 {
		t.Errorf("ratio 0 exported %d spans", len(got))
	}
}
