package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// Log formats accepted by NewLogger.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// Redacted replaces the value of secret attributes in logs.
const Redacted = "[REDACTED]"

// isSecretKey reports whether an attribute key names a secret whose value
// never reaches a log line (compared case-insensitively). This package never
// logs request headers; the redaction is a second line of defence for callers
// that slip.
func isSecretKey(key string) bool {
	switch strings.ToLower(key) {
	case "authorization", "token", "admin_token", "password", "cookie", "set-cookie":
		return true
	}
	return false
}

// NewLogger returns a slog logger writing to w. format is "json" (the
// default when empty) or "text"; level is debug, info (the default when
// empty), warn or error. Records logged with a context that carries a valid
// span get trace_id and span_id attributes; attributes named like secrets
// (authorization, token, admin_token, password, cookie) are redacted.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: redact}
	var h slog.Handler
	switch f := strings.ToLower(strings.TrimSpace(format)); f {
	case "", FormatJSON:
		h = slog.NewJSONHandler(w, opts)
		format = FormatJSON
	case FormatText:
		h = slog.NewTextHandler(w, opts)
		format = FormatText
	default:
		return nil, fmt.Errorf("new logger: unknown format %q (want json or text)", format)
	}
	return slog.New(traceHandler{next: h, format: format}), nil
}

// parseLevel parses a LOG_LEVEL value.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("new logger: unknown level %q (want debug, info, warn or error)", s)
	}
}

// redact is the ReplaceAttr hook that blanks secret attributes.
func redact(_ []string, a slog.Attr) slog.Attr {
	if isSecretKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	return a
}

// traceHandler adds the context's trace and span ids to every record.
type traceHandler struct {
	next   slog.Handler
	format string // FormatJSON or FormatText; LogPerf shapes its line by it
}

// Enabled implements slog.Handler.
func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(
			slog.String("trace_id", sc.TraceID().String()),
			slog.String("span_id", sc.SpanID().String()),
		)
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{next: h.next.WithAttrs(attrs), format: h.format}
}

// WithGroup implements slog.Handler. Note that trace ids of records logged
// through a grouped logger land inside the group, as all record attributes do.
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{next: h.next.WithGroup(name), format: h.format}
}

// isTextLogger reports whether l writes the human text format of NewLogger.
func isTextLogger(l *slog.Logger) bool {
	th, ok := l.Handler().(traceHandler)
	return ok && th.format == FormatText
}
