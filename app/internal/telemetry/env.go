package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DurationBuckets returns the histogram bucket bounds, in seconds, of every
// duration histogram (unit "s"): 100µs to 10s, dense where warmpath's hot path
// lives (sub-millisecond to tens of milliseconds). A fresh slice each call.
func DurationBuckets() []float64 {
	return []float64{
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	}
}

// newResource describes the service. Precedence, lowest first: Config,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME; the operator's environment
// wins over code defaults, as the OpenTelemetry spec asks.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	envAttrs, err := parseKeyValues(cfg.Getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		return nil, fmt.Errorf("parse OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(envAttrs)) {
		attrs = append(attrs, attribute.String(k, envAttrs[k]))
	}
	if name := cfg.Getenv("OTEL_SERVICE_NAME"); name != "" {
		attrs = append(attrs, attribute.String("service.name", name))
	}
	// Later duplicates win in resource.New, which gives the precedence above.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil {
		return nil, fmt.Errorf("new resource: %w", err)
	}
	return res, nil
}

// parseKeyValues parses the W3C-baggage-like "k1=v1,k2=v2" lists used by
// OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS; values are
// percent-decoded.
func parseKeyValues(s string) (map[string]string, error) {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid entry %q: want key=value", part)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("invalid value for %q: %w", k, err)
		}
		out[k] = dv
	}
	return out, nil
}

// newOTLPExporter returns an OTLP/HTTP span exporter when an endpoint is
// configured, or nil when none is.
func newOTLPExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
		if base == "" {
			return nil, nil
		}
		// The generic endpoint is a base URL; the signal path is appended
		// (OTLP exporter spec), unlike the traces-specific one.
		endpoint = strings.TrimRight(base, "/") + "/v1/traces"
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
	headers := getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
	if headers == "" {
		headers = getenv("OTEL_EXPORTER_OTLP_HEADERS")
	}
	if headers != "" {
		h, err := parseKeyValues(headers)
		if err != nil {
			// The values may be credentials: name the variable, never echo it.
			return nil, fmt.Errorf("parse OTLP headers: malformed list")
		}
		opts = append(opts, otlptracehttp.WithHeaders(h))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp http exporter: %w", err)
	}
	return exp, nil
}

// samplerFromEnv builds the sampler from OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG. Unknown values fall back to the default
// (parentbased_always_on) with a warning, as the spec asks, rather than
// refusing to start.
func samplerFromEnv(getenv func(string) string, l *slog.Logger) sdktrace.Sampler {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() float64 {
		if arg == "" {
			return 1
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			l.Warn("telemetry: invalid OTEL_TRACES_SAMPLER_ARG, using 1.0", "value", arg)
			return 1
		}
		return r
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio())
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio()))
	default:
		l.Warn("telemetry: unknown OTEL_TRACES_SAMPLER, using parentbased_always_on", "value", name)
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}

// exemplarFilterFromEnv reads OTEL_METRICS_EXEMPLAR_FILTER (trace_based by
// default: an exemplar only when the measurement happens in a sampled span).
func exemplarFilterFromEnv(getenv func(string) string, l *slog.Logger) exemplar.Filter {
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_METRICS_EXEMPLAR_FILTER"))); v {
	case "", "trace_based":
		return exemplar.TraceBasedFilter
	case "always_on":
		return exemplar.AlwaysOnFilter
	case "always_off":
		return exemplar.AlwaysOffFilter
	default:
		l.Warn("telemetry: unknown OTEL_METRICS_EXEMPLAR_FILTER, using trace_based", "value", v)
		return exemplar.TraceBasedFilter
	}
}

// newMeterProvider wires the OTel SDK to a Prometheus exporter on reg, plus
// the Go runtime and process collectors.
func newMeterProvider(res *resource.Resource, reg *prometheus.Registry, getenv func(string) string, l *slog.Logger) (*sdkmetric.MeterProvider, error) {
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// Explicit, so names do not change if the library default does:
		// "warmpath.phase.duration" with unit "s" → warmpath_phase_duration_seconds,
		// counters get _total.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		// No otel_scope_* labels on every series: names are unique across
		// scopes here, and the labels only bloat dashboards' queries.
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	if err := registerRuntimeCollectors(reg); err != nil {
		return nil, err
	}
	return sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(res),
		sdkmetric.WithReader(exp),
		sdkmetric.WithExemplarFilter(exemplarFilterFromEnv(getenv, l)),
		sdkmetric.WithView(views()...),
	), nil
}

// views sets the duration buckets on every seconds histogram (ours and
// semconv's http.server.request.duration) and drops otelfiber's millisecond
// duration histogram.
func views() []sdkmetric.View {
	return []sdkmetric.View{
		sdkmetric.NewView(
			sdkmetric.Instrument{Name: "*", Kind: sdkmetric.InstrumentKindHistogram, Unit: "s"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: DurationBuckets()}},
		),
		// otelfiber v2.2.3 records the old semconv http.server.duration in
		// milliseconds; a view cannot rescale values, so it is dropped (the
		// HTTP layer records http.server.request.duration in seconds itself).
		// One duration metric per idea.
		sdkmetric.NewView(
			sdkmetric.Instrument{Name: "http.server.duration", Unit: "ms"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}},
		),
	}
}
