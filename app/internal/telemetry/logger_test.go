package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/telemetry"
)

func newLogger(t *testing.T, format, level string) (*slog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	l, err := telemetry.NewLogger(&buf, format, level)
	if err != nil {
		t.Fatalf("NewLogger(%q, %q): %v", format, level, err)
	}
	return l, &buf
}

// jsonLines decodes one JSON object per line.
func jsonLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

func TestNewLoggerTraceIDs(t *testing.T) {
	tel := telemetry.Disabled()
	ctx, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "x")
	defer span.End()
	sc := span.SpanContext()

	t.Run("json", func(t *testing.T) {
		l, buf := newLogger(t, "", "")
		l.InfoContext(ctx, "with span")
		l.Info("without context")
		lines := jsonLines(t, buf)
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want 2", len(lines))
		}
		if lines[0]["trace_id"] != sc.TraceID().String() || lines[0]["span_id"] != sc.SpanID().String() {
			t.Errorf("line with span: trace_id %v span_id %v, want %s %s", lines[0]["trace_id"], lines[0]["span_id"], sc.TraceID(), sc.SpanID())
		}
		if _, ok := lines[1]["trace_id"]; ok {
			t.Errorf("line without span has trace_id: %v", lines[1])
		}
	})
	t.Run("text", func(t *testing.T) {
		l, buf := newLogger(t, "text", "info")
		l.With("component", "test").InfoContext(ctx, "with span")
		out := buf.String()
		for _, want := range []string{"trace_id=" + sc.TraceID().String(), "span_id=" + sc.SpanID().String(), "component=test", "level=INFO"} {
			if !strings.Contains(out, want) {
				t.Errorf("text line %q lacks %q", out, want)
			}
		}
	})
}

func TestNewLoggerRedactsSecrets(t *testing.T) {
	l, buf := newLogger(t, "json", "debug")
	const secret = "wp_s3cr3t-token-value"
	l.Info("request",
		"Authorization", "Bearer "+secret,
		"token", secret,
		"ADMIN_TOKEN", secret,
		"password", secret,
		slog.Group("req", "authorization", secret),
		"user", "u1",
	)
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Fatalf("secret leaked: %s", out)
	}
	line := jsonLines(t, buf)[0]
	for _, k := range []string{"Authorization", "token", "ADMIN_TOKEN", "password"} {
		if line[k] != telemetry.Redacted {
			t.Errorf("%s = %v, want %s", k, line[k], telemetry.Redacted)
		}
	}
	if line["user"] != "u1" {
		t.Errorf("non-secret attribute changed: user = %v", line["user"])
	}
}

func TestNewLoggerLevels(t *testing.T) {
	cases := []struct {
		level string
		want  []string // messages that get through, of debug, info, warn, error
	}{
		{"debug", []string{"d", "i", "w", "e"}},
		{"", []string{"i", "w", "e"}},
		{"info", []string{"i", "w", "e"}},
		{"WARN", []string{"w", "e"}},
		{"error", []string{"e"}},
	}
	for _, tc := range cases {
		t.Run(tc.level, func(t *testing.T) {
			l, buf := newLogger(t, "json", tc.level)
			l.Debug("d")
			l.Info("i")
			l.Warn("w")
			l.Error("e")
			var got []string
			for _, line := range jsonLines(t, buf) {
				got = append(got, line["msg"].(string))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewLoggerRejectsBadInput(t *testing.T) {
	if _, err := telemetry.NewLogger(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("format xml: want error")
	}
	if _, err := telemetry.NewLogger(&bytes.Buffer{}, "json", "verbose"); err == nil {
		t.Error("level verbose: want error")
	}
}

// seedBreakdown is the golden example from the brief.
var seedBreakdown = telemetry.Breakdown{
	Auth:       100 * time.Microsecond,
	UsageCheck: 300 * time.Microsecond,
	Query:      500 * time.Microsecond,
	Total:      1200 * time.Microsecond,
}

const seedPerfLine = "[PERF] POST /api/hasNotEngine-ultra-fast - Total: 1.2ms {breakdown: {auth: 0.1, usageCheck: 0.3, query: 0.5}}"

// textMsg extracts the msg value of a slog text line.
func textMsg(t *testing.T, line string) string {
	t.Helper()
	m := regexp.MustCompile(`msg=("(?:[^"\\]|\\.)*"|\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no msg in %q", line)
	}
	if strings.HasPrefix(m[1], `"`) {
		s, err := strconv.Unquote(m[1])
		if err != nil {
			t.Fatalf("unquote msg %s: %v", m[1], err)
		}
		return s
	}
	return m[1]
}

func TestLogPerfText(t *testing.T) {
	if got := telemetry.PerfLine("POST", "/api/hasNotEngine-ultra-fast", seedBreakdown); got != seedPerfLine {
		t.Errorf("PerfLine:\n got %q\nwant %q", got, seedPerfLine)
	}
	l, buf := newLogger(t, "text", "info")
	telemetry.LogPerf(context.Background(), l, "POST", "/api/hasNotEngine-ultra-fast", 200, seedBreakdown, nil)
	line := strings.TrimSpace(buf.String())
	if got := textMsg(t, line); got != seedPerfLine {
		t.Errorf("text msg:\n got %q\nwant %q", got, seedPerfLine)
	}
	if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "status=200") {
		t.Errorf("text line %q: want level=INFO and status=200", line)
	}
}

func TestLogPerfJSON(t *testing.T) {
	l, buf := newLogger(t, "json", "info")
	b := seedBreakdown
	b.DB = 250 * time.Microsecond
	telemetry.LogPerf(context.Background(), l, "POST", "/api/hasNotEngine-ultra-fast", 200, b, nil)
	lines := jsonLines(t, buf)
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1", len(lines))
	}
	got := lines[0]
	delete(got, "time")
	want := map[string]any{
		"level":    "INFO",
		"msg":      "[PERF] POST /api/hasNotEngine-ultra-fast - Total: 1.2ms",
		"method":   "POST",
		"path":     "/api/hasNotEngine-ultra-fast",
		"status":   float64(200),
		"total_ms": 1.2,
		"breakdown": map[string]any{
			"auth": 0.1, "usageCheck": 0.3, "query": 0.5, "db": 0.25,
		},
		"slow": []any{},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON line (-want +got):\n%s", diff)
	}
}

func TestLogPerfWarnsWhenSlow(t *testing.T) {
	tel := telemetry.Disabled() // default thresholds: auth 500ms, total 3s
	ctx := context.Background()
	slowB := telemetry.Breakdown{Auth: 2488 * time.Millisecond, UsageCheck: 400 * time.Millisecond, Query: 95 * time.Millisecond, Total: 2983 * time.Millisecond}
	fastB := telemetry.Breakdown{Auth: time.Millisecond, Total: 2 * time.Millisecond}

	t.Run("json", func(t *testing.T) {
		l, buf := newLogger(t, "json", "info")
		slow := tel.Metrics.RecordRequest(ctx, slowB)
		telemetry.LogPerf(ctx, l, "POST", "/api/hasNotEngine-ultra-fast", 200, slowB, slow)
		telemetry.LogPerf(ctx, l, "POST", "/api/hasNotEngine-ultra-fast", 200, fastB, tel.Metrics.RecordRequest(ctx, fastB))
		lines := jsonLines(t, buf)
		if len(lines) != 2 {
			t.Fatalf("got %d lines, want 2", len(lines))
		}
		if lines[0]["level"] != "WARN" {
			t.Errorf("slow request level = %v, want WARN", lines[0]["level"])
		}
		if msg := lines[0]["msg"].(string); !strings.Contains(msg, "slow: auth, usage_check") {
			t.Errorf("slow msg %q does not name the slow phases", msg)
		}
		if diff := cmp.Diff([]any{"auth", "usage_check"}, lines[0]["slow"]); diff != "" {
			t.Errorf("slow attr (-want +got):\n%s", diff)
		}
		if lines[1]["level"] != "INFO" {
			t.Errorf("fast request level = %v, want INFO", lines[1]["level"])
		}
	})
	t.Run("text", func(t *testing.T) {
		l, buf := newLogger(t, "text", "info")
		telemetry.LogPerf(ctx, l, "POST", "/p", 200, slowB, []string{"auth"})
		line := buf.String()
		if !strings.Contains(line, "level=WARN") || !strings.HasSuffix(textMsg(t, line), "}} - slow: auth") {
			t.Errorf("text slow line %q: want WARN naming auth", line)
		}
	})
	t.Run("warn level keeps only slow", func(t *testing.T) {
		l, buf := newLogger(t, "json", "warn")
		telemetry.LogPerf(ctx, l, "POST", "/p", 200, fastB, nil)
		telemetry.LogPerf(ctx, l, "POST", "/p", 200, slowB, []string{"auth"})
		if lines := jsonLines(t, buf); len(lines) != 1 || lines[0]["level"] != "WARN" {
			t.Errorf("LOG_LEVEL=warn lines = %v, want only the slow one", lines)
		}
	})
}

func TestServerTiming(t *testing.T) {
	if got, want := telemetry.ServerTiming(telemetry.Breakdown{
		Auth: 123 * time.Microsecond, UsageCheck: 456 * time.Microsecond, Query: 789 * time.Microsecond, Total: 1500 * time.Microsecond,
	}), "auth;dur=0.123, usage;dur=0.456, query;dur=0.789, total;dur=1.500"; got != want {
		t.Errorf("ServerTiming:\n got %q\nwant %q", got, want)
	}

	// RFC 8941-ish list: comma-separated tokens with a dur parameter, each
	// phase no longer than total, phases that did not run omitted.
	member := regexp.MustCompile(`^([a-z][a-z0-9_-]*);dur=(\d+\.\d{3})$`)
	cases := []struct {
		b         telemetry.Breakdown
		wantNames []string
	}{
		{telemetry.Breakdown{Total: 0}, []string{"total"}},
		{telemetry.Breakdown{Auth: 2488 * time.Millisecond, Total: 2983 * time.Millisecond}, []string{"auth", "total"}},
		{telemetry.Breakdown{Auth: 1, UsageCheck: 2, Query: 3, DB: 2, Total: 9}, []string{"auth", "usage", "query", "db", "total"}},
	}
	for _, tc := range cases {
		v := telemetry.ServerTiming(tc.b)
		var names []string
		durs := map[string]float64{}
		for m := range strings.SplitSeq(v, ", ") {
			p := member.FindStringSubmatch(m)
			if p == nil {
				t.Fatalf("member %q of %q is not name;dur=ms.sss", m, v)
			}
			d, _ := strconv.ParseFloat(p[2], 64)
			names = append(names, p[1])
			durs[p[1]] = d
		}
		if diff := cmp.Diff(tc.wantNames, names); diff != "" {
			t.Errorf("%q names (-want +got):\n%s", v, diff)
		}
		for n, d := range durs {
			if d > durs["total"] {
				t.Errorf("%q: %s (%v) > total (%v)", v, n, d, durs["total"])
			}
		}
	}
}

// The [PERF] line of a warm query, in JSON under a span, as every request
// writes it at the default level.
func BenchmarkLogPerf(b *testing.B) {
	l, err := telemetry.NewLogger(io.Discard, "json", "info")
	if err != nil {
		b.Fatal(err)
	}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
	}))
	br := telemetry.Breakdown{
		Auth: 12 * time.Microsecond, UsageCheck: 310 * time.Microsecond,
		Query: 21 * time.Microsecond, Total: 402 * time.Microsecond,
	}
	b.ReportAllocs()
	for b.Loop() {
		telemetry.LogPerf(ctx, l, "POST", "/api/hasNotEngine-ultra-fast", 200, br, nil)
	}
}

// The service's stderr is buffered: an INFO line arrives within the flush
// period, a WARN line at once with every line before it, and stop leaves
// nothing behind.
func TestBufferStderr(t *testing.T) {
	if w, stop := telemetry.BufferStderr(&bytes.Buffer{}); w == nil {
		t.Fatal("nil writer for a buffer")
	} else if _, ok := w.(*bytes.Buffer); !ok {
		t.Errorf("a buffer came back as %T, want it unchanged", w)
	} else {
		stop()
	}

	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := func() string {
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	w, stop := telemetry.BufferStderr(f)
	l, err := telemetry.NewLogger(w, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := telemetry.Breakdown{Total: time.Millisecond}
	telemetry.LogPerf(ctx, l, "POST", "/first", 200, b, nil)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(read(), "/first") {
		if time.Now().After(deadline) {
			t.Fatal("an INFO line never reached the file")
		}
		time.Sleep(10 * time.Millisecond)
	}

	telemetry.LogPerf(ctx, l, "POST", "/second", 200, b, nil)
	telemetry.LogPerf(ctx, l, "POST", "/slow", 200, b, []string{"total"})
	if got := read(); !strings.Contains(got, "/second") || !strings.Contains(got, "/slow") {
		t.Errorf("after a slow [PERF] line the file lacks it or the line before:\n%s", got)
	}
	l.Info("third")
	l.Error("failed")
	if got := read(); !strings.Contains(got, `"third"`) || !strings.Contains(got, `"failed"`) {
		t.Errorf("after an ERROR line the file lacks it or the line before:\n%s", got)
	}
	l.Info("last")
	stop()
	if got := read(); !strings.Contains(got, `"last"`) {
		t.Errorf("stop left a line in the buffer:\n%s", got)
	}
}
