// Package telemetry sets up warmpath's observability: slog loggers that carry
// trace ids, OpenTelemetry traces and metrics (exported to Prometheus with
// exemplars), the per-request [PERF] log line and Server-Timing header, and
// continuous profiling with pyroscope.
//
// Nothing here touches global OpenTelemetry state except the text map
// propagator; callers decide whether to install the providers globally
// (Telemetry.SetGlobal).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Thresholds are the per-phase durations past which a request is slow: it is
// logged at WARN and counted in warmpath_slow_phase_total. A zero threshold
// disables the check for that phase.
type Thresholds struct {
	Total, Auth, DB, UsageCheck time.Duration
}

// DefaultThresholds returns the thresholds from DESIGN.md: total 3s, auth
// 500ms, db 1s, usage check 200ms.
func DefaultThresholds() Thresholds {
	return Thresholds{
		Total:      3 * time.Second,
		Auth:       500 * time.Millisecond,
		DB:         time.Second,
		UsageCheck: 200 * time.Millisecond,
	}
}

// withDefaults fills every zero field of t from DefaultThresholds.
func (t Thresholds) withDefaults() Thresholds {
	d := DefaultThresholds()
	if t.Total <= 0 {
		t.Total = d.Total
	}
	if t.Auth <= 0 {
		t.Auth = d.Auth
	}
	if t.DB <= 0 {
		t.DB = d.DB
	}
	if t.UsageCheck <= 0 {
		t.UsageCheck = d.UsageCheck
	}
	return t
}

// Breakdown is one request's time per phase (a snapshot of Timings). Zero
// means the phase did not run.
type Breakdown struct {
	Auth, UsageCheck, Query, DB, Total time.Duration
}

// Config configures New.
type Config struct {
	// ServiceName is the service.name resource attribute ("warmpath").
	// OTEL_SERVICE_NAME overrides it.
	ServiceName string
	// ServiceVersion is the service.version resource attribute.
	ServiceVersion string
	// Thresholds are the slow-phase thresholds; zero fields take defaults.
	Thresholds Thresholds
	// Getenv reads OTEL_* variables (nil means os.Getenv). Injected so tests
	// need not touch the process environment.
	Getenv func(string) string
	// Logger receives setup messages (nil discards them).
	Logger *slog.Logger
	// SpanExporter overrides the exporter (tests: tracetest.NewInMemoryExporter).
	// When nil: OTLP over HTTP if OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; otherwise no span is
	// recorded, whatever OTEL_TRACES_SAMPLER says (nobody would receive it):
	// spans are non-recording, which still carry a valid trace id (the
	// caller's, from traceparent, or a fresh one) so log lines and [PERF]
	// lines keep trace_id, but cost no attributes, events or export, and
	// leave no exemplars (those come from sampled spans only).
	SpanExporter sdktrace.SpanExporter
}

// Telemetry holds the providers and metrics of one process.
type Telemetry struct {
	// TracerProvider creates the tracers; wrap it with WrapTracerProvider to
	// put span ids on CPU profiles.
	TracerProvider trace.TracerProvider
	// MeterProvider creates the meters; its metrics come out on MetricsHandler.
	MeterProvider metric.MeterProvider
	// Metrics are warmpath's own instruments.
	Metrics *Metrics
	// Registry is the fresh Prometheus registry behind MetricsHandler (not
	// the global default registry).
	Registry *prometheus.Registry
	// Propagator is tracecontext + baggage.
	Propagator propagation.TextMapPropagator

	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
	logger *slog.Logger
}

// New builds the tracer provider, the meter provider with its Prometheus
// exporter on a fresh registry, and warmpath's metrics. It sets the global
// text map propagator but not the global providers (see SetGlobal). Call
// Shutdown to flush spans.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "warmpath"
	}
	cfg.Thresholds = cfg.Thresholds.withDefaults()

	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("telemetry: build resource: %w", err)
	}

	exporter := cfg.SpanExporter
	if exporter == nil {
		exporter, err = newOTLPExporter(ctx, cfg.Getenv)
		if err != nil {
			return nil, fmt.Errorf("telemetry: create span exporter: %w", err)
		}
	}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exporter != nil {
		tpOpts = append(tpOpts,
			sdktrace.WithSampler(samplerFromEnv(cfg.Getenv, cfg.Logger)),
			sdktrace.WithBatcher(exporter))
	} else {
		// NeverSample keeps the parent's trace id (and tracestate) and makes a
		// fresh span id: a non-recording span, the cheapest one the SDK makes
		// that logs can still name.
		tpOpts = append(tpOpts, sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	reg := prometheus.NewRegistry()
	mp, err := newMeterProvider(res, reg, cfg.Getenv, cfg.Logger)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: create meter provider: %w", err)
	}
	m, err := NewMetrics(mp, cfg.Thresholds)
	if err != nil {
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: create metrics: %w", err)
	}

	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	// The propagator is stateless and identical on every call, so setting it
	// here is safe even when several Telemetry values exist (tests).
	otel.SetTextMapPropagator(prop)

	if exporter == nil {
		cfg.Logger.Debug("telemetry: no span exporter configured; spans are not recorded (trace ids only, for logs)")
	}
	return &Telemetry{
		TracerProvider: tp,
		MeterProvider:  mp,
		Metrics:        m,
		Registry:       reg,
		Propagator:     prop,
		tp:             tp,
		mp:             mp,
		logger:         cfg.Logger,
	}, nil
}

// Disabled returns a Telemetry that exports nothing, for tests: spans are
// non-recording (valid trace ids, nothing kept), and Metrics are real instruments on a fresh registry
// with default thresholds. The environment is not read.
func Disabled() *Telemetry {
	t, err := New(context.Background(), Config{
		ServiceName: "warmpath",
		Getenv:      func(string) string { return "" },
	})
	if err != nil {
		// Without environment input New has no failure path left; reaching
		// this is a programming error in this package.
		panic(fmt.Sprintf("telemetry: disabled setup: %v", err))
	}
	return t
}

// SetGlobal installs the tracer provider, meter provider and propagator as
// the OpenTelemetry globals, and routes OpenTelemetry's internal errors to the
// logger, so instrumentation libraries that use the globals (otelfiber,
// otelpgx, valkey.Instrument) report here.
func (t *Telemetry) SetGlobal() {
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(t.Propagator)
	l := t.logger
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		l.Warn("opentelemetry error", "err", err)
	}))
}

// MetricsHandler serves the registry in the OpenMetrics format (when the
// scraper asks for it, which is what carries exemplars) or the classic text
// format otherwise.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		Registry:          t.Registry, // counts its own scrape errors
		ErrorHandling:     promhttp.ContinueOnError,
	})
}

// ForceFlush exports all spans that have ended but are still buffered in the
// batch span processor.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if err := t.tp.ForceFlush(ctx); err != nil {
		return fmt.Errorf("flush spans: %w", err)
	}
	return nil
}

// Shutdown flushes pending spans and stops both providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if err := t.tp.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown tracer provider: %w", err))
	}
	if err := t.mp.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown meter provider: %w", err))
	}
	return errors.Join(errs...)
}

// registerRuntimeCollectors adds the Go runtime and process collectors.
func registerRuntimeCollectors(reg *prometheus.Registry) error {
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("register go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("register process collector: %w", err)
	}
	return nil
}
