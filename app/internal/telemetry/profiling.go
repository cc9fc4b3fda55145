package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	otelpyroscope "github.com/grafana/otel-profiling-go"
	"github.com/grafana/pyroscope-go"
	"go.opentelemetry.io/otel/trace"
)

// ProfilingConfig configures StartProfiling.
type ProfilingConfig struct {
	// ServerAddress is the pyroscope server (PYROSCOPE_SERVER_ADDRESS); empty
	// disables profiling.
	ServerAddress string
	// AppName is the pyroscope application name ("warmpath").
	AppName string
	// Tags are static labels on every profile (e.g. instance, env).
	Tags map[string]string
	// Logger receives pyroscope's messages (nil discards them).
	Logger *slog.Logger
	// BasicAuthUser and BasicAuthPassword authenticate to the server.
	BasicAuthUser, BasicAuthPassword string
	// UploadRate is how often profiles are pushed; zero means pyroscope's
	// default (15s). Tests set it short.
	UploadRate time.Duration
}

// ProfilingConfigFromEnv reads PYROSCOPE_SERVER_ADDRESS,
// PYROSCOPE_APPLICATION_NAME (default appName), PYROSCOPE_BASIC_AUTH_USER,
// PYROSCOPE_BASIC_AUTH_PASSWORD and PYROSCOPE_TAGS ("k=v,k2=v2") through
// getenv.
func ProfilingConfigFromEnv(getenv func(string) string, appName string, l *slog.Logger) (ProfilingConfig, error) {
	cfg := ProfilingConfig{
		ServerAddress:     getenv("PYROSCOPE_SERVER_ADDRESS"),
		AppName:           appName,
		Logger:            l,
		BasicAuthUser:     getenv("PYROSCOPE_BASIC_AUTH_USER"),
		BasicAuthPassword: getenv("PYROSCOPE_BASIC_AUTH_PASSWORD"),
	}
	if name := getenv("PYROSCOPE_APPLICATION_NAME"); name != "" {
		cfg.AppName = name
	}
	tags, err := parseKeyValues(getenv("PYROSCOPE_TAGS"))
	if err != nil {
		return ProfilingConfig{}, fmt.Errorf("parse PYROSCOPE_TAGS: %w", err)
	}
	if len(tags) > 0 {
		cfg.Tags = tags
	}
	return cfg, nil
}

// Block and mutex sampling rates set when profiling starts. They are process
// wide (they also feed /debug/pprof) and cheap at these rates: one in five
// mutex contention events, block events sampled about every 10µs of blocking.
const (
	mutexProfileFraction = 5
	blockProfileRate     = int(10 * time.Microsecond)
)

// StartProfiling pushes CPU, allocation, in-use, goroutine, mutex and block
// profiles to a pyroscope server. With an empty ServerAddress it does
// nothing and returns a no-op stop. stop flushes and ends the session.
func StartProfiling(cfg ProfilingConfig) (stop func() error, err error) {
	if cfg.ServerAddress == "" {
		return func() error { return nil }, nil
	}
	if cfg.AppName == "" {
		cfg.AppName = "warmpath"
	}
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	runtime.SetBlockProfileRate(blockProfileRate)
	p, err := pyroscope.Start(pyroscope.Config{
		ApplicationName:   cfg.AppName,
		ServerAddress:     cfg.ServerAddress,
		Tags:              cfg.Tags,
		BasicAuthUser:     cfg.BasicAuthUser,
		BasicAuthPassword: cfg.BasicAuthPassword,
		UploadRate:        cfg.UploadRate,
		Logger:            pyroscopeLogger{l: l},
		ProfileTypes: []pyroscope.ProfileType{
			pyroscope.ProfileCPU,
			pyroscope.ProfileAllocObjects,
			pyroscope.ProfileAllocSpace,
			pyroscope.ProfileInuseObjects,
			pyroscope.ProfileInuseSpace,
			pyroscope.ProfileGoroutines,
			pyroscope.ProfileMutexCount,
			pyroscope.ProfileMutexDuration,
			pyroscope.ProfileBlockCount,
			pyroscope.ProfileBlockDuration,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start pyroscope: %w", err)
	}
	profilers.Add(1)
	var once sync.Once
	return func() error {
		once.Do(func() { profilers.Add(-1) })
		return p.Stop()
	}, nil
}

// profilers counts the pyroscope sessions running in this process. Like the
// profilers themselves (the CPU profile, the mutex and block rates) it is
// process-wide state, which is why it is a package variable.
var profilers atomic.Int32

// Profiling reports whether a continuous profiler (pyroscope) is running,
// that is whether WithRouteLabels labels anything.
func Profiling() bool { return profilers.Load() > 0 }

// WrapTracerProvider puts span ids on CPU samples taken while a span runs,
// so a trace links to its profile in Grafana.
func WrapTracerProvider(tp trace.TracerProvider) trace.TracerProvider {
	return otelpyroscope.NewTracerProvider(tp)
}

// WithRouteLabels runs fn with the pprof label route=route while a
// pyroscope profiler runs (Profiling), so its CPU profiles (pyroscope turns
// labels into tags) split by endpoint, and so do /debug/pprof profiles
// taken meanwhile. Otherwise it runs fn(ctx) as it is: pprof.Do costs
// about 0.3µs and three allocations a request (a label map, a context, two
// goroutine label switches), spent on every request for profiles that are
// almost never taken. A /debug/pprof CPU profile taken without pyroscope is
// not split by route; profile with pyroscope on to get that. Pass the
// route template, not the raw path.
func WithRouteLabels(ctx context.Context, route string, fn func(ctx context.Context)) {
	if !Profiling() {
		fn(ctx)
		return
	}
	pprof.Do(ctx, pprof.Labels("route", route), fn)
}

// pyroscopeLogger adapts slog to pyroscope's logger. Pyroscope's info
// messages are per-upload chatter, so they go to DEBUG.
type pyroscopeLogger struct{ l *slog.Logger }

func (p pyroscopeLogger) Infof(format string, args ...any) {
	if !p.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	p.l.Debug("pyroscope: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (p pyroscopeLogger) Debugf(format string, args ...any) {
	if !p.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	p.l.Debug("pyroscope: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (p pyroscopeLogger) Errorf(format string, args ...any) {
	p.l.Error("pyroscope: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}
