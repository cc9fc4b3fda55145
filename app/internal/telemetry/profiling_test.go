package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

func TestStartProfilingPushesToServer(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/ingest" {
			mu.Lock()
			// units=samples marks the CPU profile, the one span ids land on.
			names = append(names, r.URL.Query().Get("units")+" "+r.URL.Query().Get("name"))
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	stop, err := telemetry.StartProfiling(telemetry.ProfilingConfig{
		ServerAddress: srv.URL,
		AppName:       "warmpath-test",
		Tags:          map[string]string{"env": "ci"},
		UploadRate:    100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("StartProfiling: %v", err)
	}
	// Stop before the server closes (defers run last-in first-out).
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()

	// Pyroscope names a series "app{tag=value,...}".
	poll(t, 15*time.Second, "a CPU profile push naming the app and its tags", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(names, func(n string) bool {
			return strings.HasPrefix(n, "samples warmpath-test{") && strings.Contains(n, "env=ci")
		})
	})
}

func TestStartProfilingNoopWithoutAddress(t *testing.T) {
	stop, err := telemetry.StartProfiling(telemetry.ProfilingConfig{})
	if err != nil || stop == nil {
		t.Fatalf("StartProfiling without address: stop nil %v, err %v; want a no-op stop", stop == nil, err)
	}
	if err := stop(); err != nil {
		t.Errorf("no-op stop: %v", err)
	}
}

func TestProfilingConfigFromEnv(t *testing.T) {
	env := map[string]string{
		"PYROSCOPE_SERVER_ADDRESS": "http://pyroscope:4040",
		"PYROSCOPE_TAGS":           "region=eu,instance=a",
	}
	cfg, err := telemetry.ProfilingConfigFromEnv(func(k string) string { return env[k] }, "warmpath", nil)
	if err != nil {
		t.Fatalf("ProfilingConfigFromEnv: %v", err)
	}
	if cfg.ServerAddress != "http://pyroscope:4040" || cfg.AppName != "warmpath" || cfg.Tags["region"] != "eu" || cfg.Tags["instance"] != "a" {
		t.Errorf("config = %+v", cfg)
	}
}

// startProfiler runs a pyroscope profiler that pushes to a server that
// discards everything, and stops both at the end of the test.
func startProfiler(t *testing.T) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	stop, err := telemetry.StartProfiling(telemetry.ProfilingConfig{ServerAddress: srv.URL, AppName: "warmpath-test"})
	if err != nil {
		t.Fatalf("StartProfiling: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		srv.Close()
		if telemetry.Profiling() {
			t.Error("Profiling() after stop")
		}
	})
	if !telemetry.Profiling() {
		t.Fatal("Profiling() false with a profiler running")
	}
}

func TestWithRouteLabels(t *testing.T) {
	label := func() (route string, same bool) {
		ctx := context.Background()
		telemetry.WithRouteLabels(ctx, "/api/items", func(got context.Context) {
			route, _ = pprof.Label(got, "route")
			same = got == ctx
		})
		return route, same
	}
	// No profiler: no label, and not even a new context (no pprof.Do).
	if route, same := label(); route != "" || !same {
		t.Errorf("without a profiler: route label %q, same context %v; want none and the same", route, same)
	}
	startProfiler(t)
	if route, _ := label(); route != "/api/items" {
		t.Errorf("with a profiler: route label = %q, want /api/items", route)
	}
}

func TestWrapTracerProviderLabelsSpanID(t *testing.T) {
	startProfiler(t)
	tel, _ := newTelemetry(t, telemetry.Thresholds{}, nil) // span ids label sampled spans only
	tp := telemetry.WrapTracerProvider(tel.TracerProvider)
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	var route string
	telemetry.WithRouteLabels(ctx, "/api/items", func(ctx context.Context) {
		route, _ = pprof.Label(ctx, "route")
		id, _ := pprof.Label(ctx, "span_id")
		if id != span.SpanContext().SpanID().String() {
			t.Errorf("span_id label = %q, want %s", id, span.SpanContext().SpanID())
		}
	})
	if route != "/api/items" {
		t.Errorf("route label lost under a wrapped span: %q", route)
	}
}
