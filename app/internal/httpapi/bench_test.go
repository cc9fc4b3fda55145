package httpapi

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

type bPrincipals struct{ p domain.Principal }

func (f bPrincipals) Principal(context.Context, domain.TokenHash) (domain.Principal, error) {
	return f.p, nil
}

type bPrincipalCache struct{ p domain.Principal }

func (f bPrincipalCache) Principal(context.Context, domain.TokenHash) (domain.Principal, bool, error) {
	return f.p, true, nil
}
func (bPrincipalCache) PutPrincipal(context.Context, domain.TokenHash, domain.Principal, time.Duration) error {
	return nil
}
func (bPrincipalCache) DropPrincipal(context.Context, domain.TokenHash) error { return nil }

type bCounter struct{}

func (bCounter) Count(context.Context, domain.CountRequest) (domain.UsageResult, error) {
	return domain.UsageResult{Outcome: domain.UsageAllowed, Used: 1}, nil
}
func (bCounter) SeedUsage(context.Context, int64, time.Time, time.Time, int64) error { return nil }
func (bCounter) RefundIdem(context.Context, int64, time.Time, domain.IdemKey) error  { return nil }

type bLedger struct{}

func (bLedger) Usage(context.Context, int64, time.Time) (int64, error) { return 0, nil }

type bItems struct{}

func (bItems) ItemsHaving(context.Context, int64, []string) ([]string, error) { return nil, nil }
func (bItems) UpdateItems(context.Context, int64, []string, []string, int64) (domain.ItemChange, error) {
	return domain.ItemChange{}, nil
}

type bItemCache struct{}

func (bItemCache) HasNot(_ context.Context, _ int64, items []string) ([]string, bool, error) {
	return items[1:], true, nil
}
func (bItemCache) ApplyItems(context.Context, int64, int64, []string, []string) error { return nil }
func (bItemCache) InvalidateItems(context.Context, int64, int64) error                { return nil }

type bWarmup struct{}

func (bWarmup) Enqueue(context.Context, warmup.Job) (warmup.Status, error) {
	return warmup.Status{}, nil
}
func (bWarmup) Run(context.Context, warmup.Job) (warmup.Status, error) { return warmup.Status{}, nil }
func (bWarmup) Status(context.Context, int64) (warmup.Status, error)   { return warmup.Status{}, nil }
func (bWarmup) System() warmup.SystemStatus                            { return warmup.SystemStatus{} }

// BenchmarkWarmQuery drives the Fiber app in memory (no sockets) with a warm
// user: principal cache hit, counter allowed, item cache warm. The feature
// services are the real ones over fakes, so this is the whole request path
// as the process runs it, minus the network and Valkey. Telemetry is the
// OpenTelemetry no-op.
func BenchmarkWarmQuery(b *testing.B) {
	tr := tracenoop.NewTracerProvider()
	metrics, err := telemetry.NewMetrics(metricnoop.NewMeterProvider(), telemetry.Thresholds{})
	if err != nil {
		b.Fatal(err)
	}
	benchWarmQuery(b, tr, metricnoop.NewMeterProvider(), metrics)
}

// discardSpans is a span exporter that drops what it is given: the batch
// processor does all its work, the encoding and the network do not happen.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

// BenchmarkWarmQueryTelemetry is BenchmarkWarmQuery with warmpath's real
// telemetry (SDK tracer and meter providers, Prometheus exporter): with no
// span exporter (the default), and exporting at 1 %, 10 % and 100 %.
func BenchmarkWarmQueryTelemetry(b *testing.B) {
	for _, c := range []struct {
		name, ratio string
		export      bool
	}{{"no-exporter", "", false}, {"export-1pct", "0.01", true}, {"export-10pct", "0.1", true}, {"export-100pct", "1", true}} {
		b.Run(c.name, func(b *testing.B) {
			env := map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": c.ratio}
			cfg := telemetry.Config{Getenv: func(k string) string { return env[k] }}
			if c.export {
				cfg.SpanExporter = discardSpans{}
			}
			tel, err := telemetry.New(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			benchWarmQuery(b, tel.TracerProvider, tel.MeterProvider, tel.Metrics)
		})
	}
}

func benchWarmQuery(b *testing.B, tr trace.TracerProvider, mp metric.MeterProvider, metrics *telemetry.Metrics) {
	b.Helper()
	p := domain.Principal{UserID: 7, TokenID: 1, Plan: domain.Plan{Name: "free", Quota: 1 << 40, Period: domain.PeriodDay, MaxItems: 1000}}
	// The service's own logger (its [PERF] line is written directly).
	logger, err := telemetry.NewLogger(io.Discard, telemetry.FormatJSON, "info")
	if err != nil {
		b.Fatal(err)
	}
	eng := engine.New(engine.Config{Items: engine.NewCachedItems(engine.FromStore(bItems{}), bItemCache{}, metrics, nil)})
	pub, err := NewServer(Config{
		Logger:         logger,
		TracerProvider: tr,
		MeterProvider:  mp,
		Metrics:        metrics,
		Auth:           auth.New(auth.Config{Store: auth.NewCachedStore(bPrincipals{p}, bPrincipalCache{p}, metrics, 0)}),
		Query: query.New(query.Config{
			Usage: usage.New(usage.Config{Counter: bCounter{}, Ledger: bLedger{}, Observer: metrics, FailOpen: true}),
			Items: eng, Warmup: bWarmup{}, Observer: metrics, Strategy: "async", Tracer: tr.Tracer(""),
		}),
		Items:  eng,
		Warmup: bWarmup{},
	})
	if err != nil {
		b.Fatal(err)
	}
	tok, _, _ := auth.NewToken()
	h := pub.App.Handler()
	body := []byte(`{"items":["https://example.com/a","https://example.com/new"]}`)
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/api/hasNotEngine-ultra-fast")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.SetBody(body)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	var rc fasthttp.RequestCtx
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rc.Init(&req, addr, nil)
		h(&rc)
		if rc.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", rc.Response.StatusCode(), rc.Response.Body())
		}
	}
}
