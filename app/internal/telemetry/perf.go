package telemetry

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
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
	var msg strings.Builder
	msg.Grow(96)
	writePerfHead(&msg, method, path, b.Total)
	if isTextLogger(l) {
		msg.WriteByte(' ')
		writeBreakdown(&msg, b)
		writeSlow(&msg, slow)
		l.Log(ctx, level, msg.String(), slog.Int("status", status))
		return
	}
	writeSlow(&msg, slow)
	if slow == nil {
		slow = []string{} // a JSON array, never null, so log queries need one shape
	}
	l.LogAttrs(ctx, level, msg.String(),
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
}

// PerfLine returns the seed's text [PERF] line without the slow suffix:
// "[PERF] POST /api/hasNotEngine-ultra-fast - Total: 1.2ms {breakdown: {auth: 0.1, usageCheck: 0.3, query: 0.5}}".
func PerfLine(method, path string, b Breakdown) string {
	var sb strings.Builder
	writePerfHead(&sb, method, path, b.Total)
	sb.WriteByte(' ')
	writeBreakdown(&sb, b)
	return sb.String()
}

func writePerfHead(sb *strings.Builder, method, path string, total time.Duration) {
	sb.WriteString("[PERF] ")
	sb.WriteString(method)
	sb.WriteByte(' ')
	sb.WriteString(path)
	sb.WriteString(" - Total: ")
	sb.WriteString(fmtMS(total))
	sb.WriteString("ms")
}

func writeBreakdown(sb *strings.Builder, b Breakdown) {
	sb.WriteString("{breakdown: {")
	first := true
	for _, p := range [...]struct {
		phase Phase
		d     time.Duration
	}{{PhaseAuth, b.Auth}, {PhaseUsageCheck, b.UsageCheck}, {PhaseQuery, b.Query}, {PhaseDB, b.DB}} {
		if p.d <= 0 {
			continue
		}
		if !first {
			sb.WriteString(", ")
		}
		first = false
		sb.WriteString(p.phase.Log())
		sb.WriteString(": ")
		sb.WriteString(fmtMS(p.d))
	}
	sb.WriteString("}}")
}

func writeSlow(sb *strings.Builder, slow []string) {
	if len(slow) == 0 {
		return
	}
	sb.WriteString(" - slow: ")
	sb.WriteString(strings.Join(slow, ", "))
}

// ms converts d to milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// fmtMS formats d in milliseconds with no trailing zeros ("1.2", "2983").
func fmtMS(d time.Duration) string {
	return strconv.FormatFloat(ms(d), 'f', -1, 64)
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
