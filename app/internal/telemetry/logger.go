package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zapcore"
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
	out := &lockedWriter{w: w}
	if s, ok := w.(interface{ Sync() error }); ok {
		if _, file := w.(*os.File); !file { // a file's Sync is an fsync, not a flush
			out.sync = s.Sync
		}
	}
	var h slog.Handler
	switch f := strings.ToLower(strings.TrimSpace(format)); f {
	case "", FormatJSON:
		h = slog.NewJSONHandler(out, opts)
		format = FormatJSON
	case FormatText:
		h = slog.NewTextHandler(out, opts)
		format = FormatText
	default:
		return nil, fmt.Errorf("new logger: unknown format %q (want json or text)", format)
	}
	return slog.New(traceHandler{next: h, format: format, out: out, direct: out}), nil
}

// lockedWriter is where a logger's lines go: the handler's and LogPerf's
// own, one whole line per write. When the writer buffers (it has a Sync
// method, as the service's buffered stderr has), a line at WARN or above is
// flushed at once, with every line before it, so what matters is never
// left in a buffer.
type lockedWriter struct {
	mu   sync.Mutex
	w    io.Writer
	sync func() error
}

// Write implements io.Writer for the slog handler.
func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

// write writes a line of LogPerf's, flushing it when level is WARN or above.
func (lw *lockedWriter) write(level slog.Level, p []byte) {
	lw.mu.Lock()
	_, _ = lw.w.Write(p) // a logger has nowhere to report its own failure
	lw.mu.Unlock()
	lw.flush(level)
}

// flush flushes a buffering writer after a line at WARN or above.
func (lw *lockedWriter) flush(level slog.Level) {
	if level >= slog.LevelWarn && lw.sync != nil {
		_ = lw.sync()
	}
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
	out    *lockedWriter
	// direct is out on NewLogger's own handler, nil once attributes or a
	// group are added: LogPerf writes its JSON line straight to it then.
	direct *lockedWriter
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
	err := h.next.Handle(ctx, r)
	h.out.flush(r.Level)
	return err
}

// WithAttrs implements slog.Handler.
func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{next: h.next.WithAttrs(attrs), format: h.format, out: h.out}
}

// WithGroup implements slog.Handler. Note that trace ids of records logged
// through a grouped logger land inside the group, as all record attributes do.
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{next: h.next.WithGroup(name), format: h.format, out: h.out}
}

// isTextLogger reports whether l writes the human text format of NewLogger.
func isTextLogger(l *slog.Logger) bool {
	th, ok := l.Handler().(traceHandler)
	return ok && th.format == FormatText
}

// Log output buffering of BufferStderr.
const (
	logBufferSize  = 64 << 10
	logFlushPeriod = 100 * time.Millisecond
)

// BufferStderr returns the writer the service's logger should write to, and
// a stop that flushes it. A file (the process's stderr) gets a buffer:
// lines reach it in batches, within logFlushPeriod or once logBufferSize
// bytes wait, instead of one write system call per [PERF] line, which cost
// as much as the rest of the line. NewLogger flushes the buffer at once
// after every line at WARN or above. Any other writer (a test's buffer) is
// returned as it is.
func BufferStderr(w io.Writer) (io.Writer, func()) {
	f, ok := w.(*os.File)
	if !ok {
		return w, func() {}
	}
	bw := &zapcore.BufferedWriteSyncer{
		// writeOnly hides the file's Sync (an fsync): flushing the buffer
		// is enough.
		WS:            zapcore.AddSync(writeOnly{f}),
		Size:          logBufferSize,
		FlushInterval: logFlushPeriod,
	}
	return bw, func() { _ = bw.Stop() }
}

type writeOnly struct{ w io.Writer }

func (w writeOnly) Write(p []byte) (int, error) { return w.w.Write(p) }
