package telemetry_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	otelmetric "go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// newTelemetry builds a Telemetry with an in-memory span exporter and the
// given environment, and shuts it down at the end of the test.
func newTelemetry(t *testing.T, th telemetry.Thresholds, env map[string]string) (*telemetry.Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(context.Background(), telemetry.Config{
		ServiceName:    "warmpath",
		ServiceVersion: "test",
		Thresholds:     th,
		Getenv:         func(k string) string { return env[k] },
		SpanExporter:   exp,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel, exp
}

// scrape GETs the metrics handler with the given Accept header.
func scrape(t *testing.T, tel *telemetry.Telemetry, accept string) (body, contentType string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	b, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatalf("read scrape: %v", err)
	}
	return string(b), rec.Header().Get("Content-Type")
}

// families scrapes in the classic text format and parses it.
func families(t *testing.T, tel *telemetry.Telemetry) map[string]*dto.MetricFamily {
	t.Helper()
	body, _ := scrape(t, tel, "text/plain")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return fams
}

// labelValues returns, for family name, the sorted distinct values of label.
func labelValues(t *testing.T, fams map[string]*dto.MetricFamily, name, label string) []string {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	var vals []string
	for _, m := range f.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(vals, lp.GetValue()) {
				vals = append(vals, lp.GetValue())
			}
		}
	}
	slices.Sort(vals)
	return vals
}

// value returns the value of the series of family name whose labels equal
// want (counter, gauge or untyped; for histograms the sample count).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if len(want) == 0 && len(got) != 0 || len(want) > 0 && !cmp.Equal(got, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

var testThresholds = telemetry.Thresholds{
	Total:      100 * time.Millisecond,
	Auth:       10 * time.Millisecond,
	DB:         50 * time.Millisecond,
	UsageCheck: 20 * time.Millisecond,
}

// exercise calls every Metrics method once with every contract label value.
func exercise(ctx context.Context, m *telemetry.Metrics) {
	m.RecordRequest(ctx, telemetry.Breakdown{
		Auth: time.Millisecond, UsageCheck: time.Millisecond, Query: time.Millisecond,
		DB: time.Millisecond, Total: 4 * time.Millisecond,
	})
	for _, kind := range []string{"login", "system", "inline"} {
		m.WarmupJob(ctx, kind, "ok", 5*time.Millisecond)
	}
	m.WarmupJob(ctx, "login", "error", time.Millisecond)
	for _, c := range []string{"principal", "usage", "items"} {
		for _, r := range []string{"hit", "miss", "error"} {
			m.CacheRequest(ctx, c, r)
		}
	}
	for _, s := range []string{"ready", "running", "queued", "none"} {
		m.FirstQuery(ctx, s)
	}
	for _, r := range []string{"applied", "duplicate", "error"} {
		m.SyncBatch(ctx, r)
	}
	m.ObserveQueueDepth(func() int64 { return 7 })
	m.ObserveSync(func() int64 { return 3 }, func() float64 { return 1.5 })
	m.ObservePool(func() telemetry.PoolStats {
		return telemetry.PoolStats{
			AcquiredConns: 2, IdleConns: 3, TotalConns: 5, MaxConns: 10, ConstructingConns: 0,
			AcquireCount: 42, EmptyAcquireCount: 4, CanceledAcquireCount: 1,
			AcquireDuration: 1500 * time.Millisecond, EmptyAcquireWaitTime: 250 * time.Millisecond,
		}
	})
}

func TestMetricsScrapeNamesAndLabels(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	exercise(context.Background(), tel.Metrics)
	fams := families(t, tel)

	labels := []struct {
		name, label string
		want        []string
	}{
		{"warmpath_phase_duration_seconds", "phase", []string{"auth", "db", "query", "total", "usage_check"}},
		{"warmpath_alert_threshold_seconds", "phase", []string{"auth", "db", "total", "usage_check"}},
		{"warmpath_warmup_jobs_total", "kind", []string{"inline", "login", "system"}},
		{"warmpath_warmup_jobs_total", "result", []string{"error", "ok"}},
		{"warmpath_warmup_duration_seconds", "kind", []string{"inline", "login", "system"}},
		{"warmpath_cache_requests_total", "cache", []string{"items", "principal", "usage"}},
		{"warmpath_cache_requests_total", "result", []string{"error", "hit", "miss"}},
		{"warmpath_first_query_total", "warmup", []string{"none", "queued", "ready", "running"}},
		{"warmpath_usage_sync_batches_total", "result", []string{"applied", "duplicate", "error"}},
	}
	for _, tc := range labels {
		if diff := cmp.Diff(tc.want, labelValues(t, fams, tc.name, tc.label)); diff != "" {
			t.Errorf("%s{%s} values (-want +got):\n%s", tc.name, tc.label, diff)
		}
	}

	values := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"warmpath_alert_threshold_seconds", map[string]string{"phase": "total"}, 0.1},
		{"warmpath_alert_threshold_seconds", map[string]string{"phase": "auth"}, 0.01},
		{"warmpath_alert_threshold_seconds", map[string]string{"phase": "db"}, 0.05},
		{"warmpath_alert_threshold_seconds", map[string]string{"phase": "usage_check"}, 0.02},
		{"warmpath_phase_duration_seconds", map[string]string{"phase": "total"}, 1},
		{"warmpath_warmup_jobs_total", map[string]string{"kind": "login", "result": "error"}, 1},
		{"warmpath_cache_requests_total", map[string]string{"cache": "usage", "result": "hit"}, 1},
		{"warmpath_first_query_total", map[string]string{"warmup": "ready"}, 1},
		{"warmpath_usage_sync_batches_total", map[string]string{"result": "duplicate"}, 1},
		{"warmpath_warmup_queue_depth", nil, 7},
		{"warmpath_usage_sync_pending_users", nil, 3},
		{"warmpath_usage_sync_lag_seconds", nil, 1.5},
		{"warmpath_db_pool_acquired_conns", nil, 2},
		{"warmpath_db_pool_idle_conns", nil, 3},
		{"warmpath_db_pool_total_conns", nil, 5},
		{"warmpath_db_pool_max_conns", nil, 10},
		{"warmpath_db_pool_constructing_conns", nil, 0},
		{"warmpath_db_pool_acquires_total", nil, 42},
		{"warmpath_db_pool_empty_acquires_total", nil, 4},
		{"warmpath_db_pool_canceled_acquires_total", nil, 1},
		{"warmpath_db_pool_acquire_duration_seconds_total", nil, 1.5},
		{"warmpath_db_pool_empty_acquire_wait_seconds_total", nil, 0.25},
	}
	for _, tc := range values {
		got, ok := value(t, fams, tc.name, tc.labels)
		if !ok {
			t.Errorf("%s%v: series missing", tc.name, tc.labels)
			continue
		}
		if got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}

	// Runtime and process collectors are on the same registry.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("runtime metric %s missing", name)
		}
	}

	// Nothing sneaks in with an exporter naming surprise.
	for name, f := range fams {
		if strings.HasSuffix(name, "_ratio") || strings.Contains(name, "_total_total") || strings.HasSuffix(name, "_milliseconds") {
			t.Errorf("unexpected metric name %s", name)
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.HasPrefix(lp.GetName(), "otel_scope") {
					t.Fatalf("%s has scope label %s", name, lp.GetName())
				}
			}
		}
	}

	// Duration histograms use the contract buckets.
	if diff := cmp.Diff(telemetry.DurationBuckets(), bucketBounds(t, fams, "warmpath_phase_duration_seconds")); diff != "" {
		t.Errorf("bucket bounds (-want +got):\n%s", diff)
	}
}

// bucketBounds returns the finite bucket bounds of the first series of a
// histogram family.
func bucketBounds(t *testing.T, fams map[string]*dto.MetricFamily, name string) []float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok || len(f.GetMetric()) == 0 || f.GetMetric()[0].GetHistogram() == nil {
		t.Fatalf("histogram %s missing", name)
	}
	var bounds []float64
	for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue // the text parser adds the implicit +Inf bucket
		}
		bounds = append(bounds, b.GetUpperBound())
	}
	return bounds
}

func TestDefaultThresholdGauges(t *testing.T) {
	tel := telemetry.Disabled()
	fams := families(t, tel)
	for phase, want := range map[string]float64{"total": 3, "auth": 0.5, "db": 1, "usage_check": 0.2} {
		got, ok := value(t, fams, "warmpath_alert_threshold_seconds", map[string]string{"phase": phase})
		if !ok || got != want {
			t.Errorf("threshold %s = %v (present %v), want %v", phase, got, ok, want)
		}
	}
	if got, want := tel.Metrics.Thresholds(), telemetry.DefaultThresholds(); got != want {
		t.Errorf("Thresholds() = %+v, want %+v", got, want)
	}
}

func TestRecordRequestSlowOnlyPastThreshold(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	ctx := context.Background()
	steps := []struct {
		name string
		b    telemetry.Breakdown
		want []string
	}{
		{"all at threshold", telemetry.Breakdown{
			Auth: 10 * time.Millisecond, UsageCheck: 20 * time.Millisecond, DB: 50 * time.Millisecond,
			Query: time.Second, Total: 100 * time.Millisecond,
		}, nil},
		{"auth past", telemetry.Breakdown{Auth: 10*time.Millisecond + 1, Total: 11 * time.Millisecond}, []string{"auth"}},
		{"usage and db past", telemetry.Breakdown{
			UsageCheck: 21 * time.Millisecond, DB: 51 * time.Millisecond, Total: 80 * time.Millisecond,
		}, []string{"usage_check", "db"}},
		{"total past", telemetry.Breakdown{Auth: time.Millisecond, Total: 101 * time.Millisecond}, []string{"total"}},
	}
	for _, s := range steps {
		got := tel.Metrics.RecordRequest(ctx, s.b)
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Errorf("%s: slow (-want +got):\n%s", s.name, diff)
		}
	}
	fams := families(t, tel)
	for phase, want := range map[string]float64{"auth": 1, "usage_check": 1, "db": 1, "total": 1} {
		got, _ := value(t, fams, "warmpath_slow_phase_total", map[string]string{"phase": phase})
		if got != want {
			t.Errorf("slow_phase_total{phase=%q} = %v, want %v", phase, got, want)
		}
	}
	if got, ok := value(t, fams, "warmpath_slow_phase_total", map[string]string{"phase": "query"}); ok {
		t.Errorf("query has no threshold but slow_phase_total{phase=query} = %v", got)
	}
	// Zero phases are not recorded; total always is.
	for phase, want := range map[string]float64{"auth": 3, "usage_check": 2, "db": 2, "query": 1, "total": 4} {
		got, _ := value(t, fams, "warmpath_phase_duration_seconds", map[string]string{"phase": phase})
		if got != want {
			t.Errorf("phase_duration count{phase=%q} = %v, want %v", phase, got, want)
		}
	}
}

func TestExemplarCarriesTraceID(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	ctx, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "request")
	traceID := span.SpanContext().TraceID().String()
	if !span.SpanContext().IsSampled() {
		t.Fatal("default sampler should sample a root span")
	}
	tel.Metrics.RecordRequest(ctx, telemetry.Breakdown{Auth: 2 * time.Millisecond, Total: 3 * time.Millisecond})
	span.End()

	body, ct := scrape(t, tel, "application/openmetrics-text; version=1.0.0")
	if !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("content type %q, want OpenMetrics", ct)
	}
	re := regexp.MustCompile(`^warmpath_phase_duration_seconds_bucket\{phase="(auth|total)",le="[^"]+"\} \d+ # \{([^}]*)\}`)
	found := map[string]bool{}
	for line := range strings.SplitSeq(body, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if strings.Contains(m[2], `trace_id="`+traceID+`"`) {
			found[m[1]] = true
		}
	}
	if !found["auth"] || !found["total"] {
		t.Errorf("exemplar with trace_id %s on auth/total buckets: got %v\n%s", traceID, found, grepLines(body, "warmpath_phase_duration_seconds_bucket"))
	}

	// Outside a sampled span there is no exemplar.
	tel2, _ := newTelemetry(t, testThresholds, nil)
	tel2.Metrics.RecordRequest(context.Background(), telemetry.Breakdown{Total: time.Millisecond})
	body2, _ := scrape(t, tel2, "application/openmetrics-text")
	if strings.Contains(grepLines(body2, "warmpath_phase_duration_seconds_bucket"), "trace_id") {
		t.Error("exemplar recorded without a span")
	}

	// Nor in a span no exporter receives: its trace id would lead nowhere.
	tel3 := telemetry.Disabled()
	ctx3, span3 := tel3.TracerProvider.Tracer("test").Start(context.Background(), "request")
	tel3.Metrics.RecordRequest(ctx3, telemetry.Breakdown{Auth: 2 * time.Millisecond, Total: 3 * time.Millisecond})
	span3.End()
	body3, _ := scrape(t, tel3, "application/openmetrics-text")
	if !span3.SpanContext().IsValid() || strings.Contains(grepLines(body3, "warmpath_phase_duration_seconds_bucket"), "trace_id") {
		t.Errorf("no exporter: span valid %v; want a valid id and no exemplar:\n%s", span3.SpanContext().IsValid(), grepLines(body3, "warmpath_phase_duration_seconds_bucket"))
	}
}

// grepLines returns body's lines that contain s.
func grepLines(body, s string) string {
	var out []string
	for line := range strings.SplitSeq(body, "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestObserversCanBeReplaced(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	if _, ok := value(t, families(t, tel), "warmpath_warmup_queue_depth", nil); ok {
		t.Error("queue depth reported before an observer was registered")
	}
	tel.Metrics.ObserveQueueDepth(func() int64 { return 1 })
	tel.Metrics.ObserveQueueDepth(func() int64 { return 2 })
	if got, _ := value(t, families(t, tel), "warmpath_warmup_queue_depth", nil); got != 2 {
		t.Errorf("queue depth = %v, want 2 (the latest observer)", got)
	}
	tel.Metrics.ObserveQueueDepth(nil)
	if _, ok := value(t, families(t, tel), "warmpath_warmup_queue_depth", nil); ok {
		t.Error("queue depth still reported after observer cleared")
	}
}

func BenchmarkRecordRequest(b *testing.B) {
	tel := telemetry.Disabled()
	ctx, span := tel.TracerProvider.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	br := telemetry.Breakdown{
		Auth: 100 * time.Microsecond, UsageCheck: 300 * time.Microsecond,
		Query: 500 * time.Microsecond, DB: 200 * time.Microsecond, Total: 1200 * time.Microsecond,
	}
	b.ReportAllocs()
	for b.Loop() {
		tel.Metrics.RecordRequest(ctx, br)
	}
}

func BenchmarkServerTiming(b *testing.B) {
	br := telemetry.Breakdown{
		Auth: 100 * time.Microsecond, UsageCheck: 300 * time.Microsecond,
		Query: 500 * time.Microsecond, Total: 1200 * time.Microsecond,
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = telemetry.ServerTiming(br)
	}
}

// The HTTP layer's semconv histogram gets the contract buckets; otelfiber
// v2.2.3's http.server.duration in milliseconds is dropped by a view, and its
// in-flight up-down counter with unit "1" must not come out as _ratio.
func TestViewsForHTTPInstruments(t *testing.T) {
	tel, _ := newTelemetry(t, testThresholds, nil)
	meter := tel.MeterProvider.Meter("github.com/gofiber/contrib/otelfiber")
	ctx := context.Background()
	dur, err := meter.Float64Histogram("http.server.duration", otelmetric.WithUnit("ms"))
	if err != nil {
		t.Fatal(err)
	}
	dur.Record(ctx, 12)
	active, err := meter.Int64UpDownCounter("http.server.active_requests", otelmetric.WithUnit("1"))
	if err != nil {
		t.Fatal(err)
	}
	active.Add(ctx, 2)

	// What the HTTP layer records, from its own scope.
	req, err := tel.MeterProvider.Meter("github.com/warmpath/warmpath/app/internal/httpapi").
		Float64Histogram("http.server.request.duration", otelmetric.WithUnit("s"))
	if err != nil {
		t.Fatal(err)
	}
	req.Record(ctx, 0.003)

	fams := families(t, tel)
	if diff := cmp.Diff(telemetry.DurationBuckets(), bucketBounds(t, fams, "http_server_request_duration_seconds")); diff != "" {
		t.Errorf("http_server_request_duration_seconds buckets (-want +got):\n%s", diff)
	}
	for name := range fams {
		if strings.HasPrefix(name, "http_server_duration") {
			t.Errorf("millisecond duration metric %s exported", name)
		}
	}
	if got, ok := value(t, fams, "http_server_active_requests", nil); !ok || got != 2 {
		t.Errorf("http_server_active_requests = %v (present %v), want 2", got, ok)
	}
}
