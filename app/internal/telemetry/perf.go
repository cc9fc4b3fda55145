package telemetry

import (
	"context"
	"encoding/hex"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// LogPerf writes the one [PERF] line of a request: at INFO normally, at WARN
// when slow (from Metrics.RecordRequest) is non-empty, naming the slow phases,
// so LOG_LEVEL=warn keeps only slow requests.
//
// With a text logger from NewLogger the message is the seed's shape:
//
//	[PERF] POST /api/hasNotEngine-ultra-fast - Total: 1.2ms {breakdown: {auth: 0.1, usageCheck: 0.3, query: 0.5}}
//
// Otherwise (JSON) the message is "[PERF] POST /api/hasNotEngine-ultra-fast -
// Total: 1.2ms" and the numbers are attributes: method, path, status,
// total_ms, breakdown{auth,usageCheck,query,db} and slow, times in
// milliseconds. Phases that did not run are left out of the text breakdown
// and are 0 in the JSON one. path should be the route or the request path,
// never a URL with a query string (it may carry secrets).
func LogPerf(ctx context.Context, l *slog.Logger, method, path string, status int, b Breakdown, slow []string) {
	level := slog.LevelInfo
	if len(slow) > 0 {
		level = slog.LevelWarn
	}
	if !l.Enabled(ctx, level) {
		return
	}
	th, ok := l.Handler().(traceHandler)
	if ok && th.direct != nil && th.format == FormatJSON && writePerfJSON(ctx, th.direct, time.Now(), level, method, path, status, b, slow) {
		return
	}
	msg := appendPerfHead(make([]byte, 0, 96), method, path, b.Total)
	if ok && th.format == FormatText {
		msg = append(msg, ' ')
		msg = appendBreakdown(msg, b)
		msg = appendSlow(msg, slow)
		l.Log(ctx, level, string(msg), slog.Int("status", status))
		return
	}
	_ = l.Handler().Handle(ctx, perfRecord(time.Now(), level, string(appendSlow(msg, slow)), method, path, status, b, slow))
}

// perfRecord is the JSON [PERF] line as a slog record.
func perfRecord(now time.Time, level slog.Level, msg, method, path string, status int, b Breakdown, slow []string) slog.Record {
	if slow == nil {
		slow = []string{} // a JSON array, never null, so log queries need one shape
	}
	r := slog.NewRecord(now, level, msg, 0)
	r.AddAttrs(
		slog.String("method", method),
		slog.String("path", path),
		slog.Int("status", status),
		slog.Float64("total_ms", ms(b.Total)),
		slog.Group("breakdown",
			slog.Float64(PhaseAuth.Log(), ms(b.Auth)),
			slog.Float64(PhaseUsageCheck.Log(), ms(b.UsageCheck)),
			slog.Float64(PhaseQuery.Log(), ms(b.Query)),
			slog.Float64(PhaseDB.Log(), ms(b.DB)),
		),
		slog.Any("slow", slow),
	)
	return r
}

// perfBufs holds the buffers of writePerfJSON's lines.
var perfBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writePerfJSON writes the JSON [PERF] line exactly as the logger's
// slog.JSONHandler would (TestPerfJSONMatchesSlog holds it to that, byte for
// byte), without slog's generic encoding: slog formats every float through
// encoding/json and every group and []string through reflection, about 3 µs
// and 20 allocations a line, on every request. It writes nothing and reports
// false when a string would need JSON escaping, so that rare line takes
// slog's own path.
func writePerfJSON(ctx context.Context, w *lockedWriter, now time.Time, level slog.Level, method, path string, status int, b Breakdown, slow []string) bool {
	bp := perfBufs.Get().(*[]byte)
	defer perfBufs.Put(bp)
	buf, ok := appendPerfJSON((*bp)[:0], ctx, now, level, method, path, status, b, slow)
	*bp = buf
	if !ok {
		return false
	}
	w.write(level, buf)
	return true
}

// appendPerfJSON appends the line of writePerfJSON to buf; ok is false when
// a string needs escaping.
func appendPerfJSON(buf []byte, ctx context.Context, now time.Time, level slog.Level, method, path string, status int, b Breakdown, slow []string) ([]byte, bool) {
	if !jsonPlain(method) || !jsonPlain(path) {
		return buf, false
	}
	for _, s := range slow {
		if !jsonPlain(s) {
			return buf, false
		}
	}
	buf = append(buf, `{"time":"`...)
	buf = now.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, `","level":"`...)
	buf = append(buf, level.String()...)
	buf = append(buf, `","msg":"`...)
	buf = appendPerfHead(buf, method, path, b.Total)
	buf = appendSlow(buf, slow)
	buf = append(buf, `","method":"`...)
	buf = append(buf, method...)
	buf = append(buf, `","path":"`...)
	buf = append(buf, path...)
	buf = append(buf, `","status":`...)
	buf = strconv.AppendInt(buf, int64(status), 10)
	buf = append(buf, `,"total_ms":`...)
	buf = appendMS(buf, b.Total)
	buf = append(buf, `,"breakdown":{"`...)
	for i, p := range [...]struct {
		phase Phase
		d     time.Duration
	}{{PhaseAuth, b.Auth}, {PhaseUsageCheck, b.UsageCheck}, {PhaseQuery, b.Query}, {PhaseDB, b.DB}} {
		if i > 0 {
			buf = append(buf, `,"`...)
		}
		buf = append(buf, p.phase.Log()...)
		buf = append(buf, `":`...)
		buf = appendMS(buf, p.d)
	}
	buf = append(buf, `},"slow":[`...)
	for i, s := range slow {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		buf = append(buf, s...)
		buf = append(buf, '"')
	}
	buf = append(buf, ']')
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		buf = append(buf, `,"trace_id":"`...)
		buf = hex.AppendEncode(buf, tid[:])
		buf = append(buf, `","span_id":"`...)
		buf = hex.AppendEncode(buf, sid[:])
		buf = append(buf, '"')
	}
	return append(buf, "}\n"...), true
}

// jsonPlain reports whether s is printable ASCII that JSON encoders leave
// as it is (no quote, backslash or HTML character).
func jsonPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// PerfLine returns the seed's text [PERF] line without the slow suffix:
// "[PERF] POST /api/hasNotEngine-ultra-fast - Total: 1.2ms {breakdown: {auth: 0.1, usageCheck: 0.3, query: 0.5}}".
func PerfLine(method, path string, b Breakdown) string {
	buf := appendPerfHead(make([]byte, 0, 96), method, path, b.Total)
	buf = append(buf, ' ')
	return string(appendBreakdown(buf, b))
}

func appendPerfHead(buf []byte, method, path string, total time.Duration) []byte {
	buf = append(buf, "[PERF] "...)
	buf = append(buf, method...)
	buf = append(buf, ' ')
	buf = append(buf, path...)
	buf = append(buf, " - Total: "...)
	buf = appendMS(buf, total)
	return append(buf, "ms"...)
}

func appendBreakdown(buf []byte, b Breakdown) []byte {
	buf = append(buf, "{breakdown: {"...)
	first := true
	for _, p := range [...]struct {
		phase Phase
		d     time.Duration
	}{{PhaseAuth, b.Auth}, {PhaseUsageCheck, b.UsageCheck}, {PhaseQuery, b.Query}, {PhaseDB, b.DB}} {
		if p.d <= 0 {
			continue
		}
		if !first {
			buf = append(buf, ", "...)
		}
		first = false
		buf = append(buf, p.phase.Log()...)
		buf = append(buf, ": "...)
		buf = appendMS(buf, p.d)
	}
	return append(buf, "}}"...)
}

func appendSlow(buf []byte, slow []string) []byte {
	if len(slow) == 0 {
		return buf
	}
	buf = append(buf, " - slow: "...)
	for i, s := range slow {
		if i > 0 {
			buf = append(buf, ", "...)
		}
		buf = append(buf, s...)
	}
	return buf
}

// ms converts d to milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// appendMS appends d in milliseconds with no trailing zeros ("1.2",
// "2983"), as encoding/json writes a float of this size (rounded to the
// microsecond, a duration's milliseconds are 0 or between 1e-6 and 1e21).
func appendMS(buf []byte, d time.Duration) []byte {
	return strconv.AppendFloat(buf, ms(d), 'f', -1, 64)
}

// ServerTiming returns the Server-Timing header value for b, in milliseconds
// with three decimals: "auth;dur=0.123, usage;dur=0.456, query;dur=0.789,
// total;dur=1.500". Phases that did not run are left out; total is always
// there. db appears when it ran (it overlaps usage and query).
func ServerTiming(b Breakdown) string {
	buf := make([]byte, 0, 96)
	add := func(p Phase, d time.Duration) {
		if len(buf) > 0 {
			buf = append(buf, ", "...)
		}
		buf = append(buf, p.ServerTiming()...)
		buf = append(buf, ";dur="...)
		buf = strconv.AppendFloat(buf, float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	if b.Auth > 0 {
		add(PhaseAuth, b.Auth)
	}
	if b.UsageCheck > 0 {
		add(PhaseUsageCheck, b.UsageCheck)
	}
	if b.Query > 0 {
		add(PhaseQuery, b.Query)
	}
	if b.DB > 0 {
		add(PhaseDB, b.DB)
	}
	add(PhaseTotal, max(b.Total, 0))
	return string(buf)
}
