package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// The [PERF] line LogPerf writes itself is the line slog's JSON handler
// writes for the same record, byte for byte, whatever the phases, levels,
// slow phases and span; a string that needs escaping takes slog's path.
func TestPerfJSONMatchesSlog(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	spanCtx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff},
		SpanID:  trace.SpanID{0, 1, 2, 3, 4, 5, 6, 0xfe}, TraceFlags: trace.FlagsSampled,
	}))
	durs := []time.Duration{0, 1, 499, 500, time.Microsecond, 1500 * time.Nanosecond, 12345 * time.Nanosecond,
		time.Millisecond, 2983 * time.Millisecond, time.Hour, -3 * time.Microsecond, 1<<63 - 1}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() time.Duration {
		if rng.IntN(3) == 0 {
			return time.Duration(rng.Int64N(int64(10 * time.Second)))
		}
		return durs[rng.IntN(len(durs))]
	}
	slows := [][]string{nil, {}, {"auth"}, {"auth", "usage_check", "total"}}
	for i := range 2000 {
		ctx := context.Background()
		if i%2 == 0 {
			ctx = spanCtx
		}
		now := time.Date(2026, 12, 3, 20, 4, 5, rng.IntN(1e9), time.UTC)
		if i%5 == 0 {
			now = now.In(time.FixedZone("x", 3600)).Truncate(time.Second)
		}
		level := []slog.Level{slog.LevelInfo, slog.LevelWarn}[rng.IntN(2)]
		b := Breakdown{Auth: pick(), UsageCheck: pick(), Query: pick(), DB: pick(), Total: pick()}
		slow := slows[rng.IntN(len(slows))]
		method, path, status := "POST", "/api/hasNotEngine-ultra-fast", 200+rng.IntN(400)
		msg := string(appendSlow(appendPerfHead(nil, method, path, b.Total), slow))

		buf.Reset()
		if err := l.Handler().Handle(ctx, perfRecord(now, level, msg, method, path, status, b, slow)); err != nil {
			t.Fatal(err)
		}
		got, ok := appendPerfJSON(nil, ctx, now, level, method, path, status, b, slow)
		if !ok {
			t.Fatalf("plain strings refused: %q %q %q", method, path, slow)
		}
		if want := buf.String(); string(got) != want {
			t.Fatalf("line %d:\n got %s\nwant %s", i, got, want)
		}
	}

	for _, path := range []string{`/a"b`, `/a\b`, "/a\nb", "/a<b>&", "/é", "/\x7f"} {
		if _, ok := appendPerfJSON(nil, spanCtx, time.Now(), slog.LevelInfo, "POST", path, 200, Breakdown{}, nil); ok {
			t.Errorf("path %q needs escaping, but the direct line took it", path)
		}
		buf.Reset()
		LogPerf(spanCtx, l, "POST", path, 200, Breakdown{Total: time.Millisecond}, nil)
		if !bytes.Contains(buf.Bytes(), []byte(`"path":`)) || bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
			t.Errorf("path %q: slog's line expected, got %q", path, buf.String())
		}
	}
}
