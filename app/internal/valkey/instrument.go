package valkey

import (
	"context"
	"time"

	valkey "github.com/valkey-io/valkey-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentationScope names the meter and tracer of Instrument.
const InstrumentationScope = "github.com/warmpath/warmpath/app/internal/valkey"

var (
	spanKind     = trace.WithSpanKind(trace.SpanKindClient)
	dbSystemAttr = attribute.String("db.system", "valkey")
)

// Instrument returns a Config.Wrap that gives a client what an operator needs of every command and
// costs little on the warm path (valkeyotel, which it replaces, built
// attributes and walked the command per call whether or not anyone
// recorded a span):
//
//   - valkey_command_duration_seconds (histogram, s) and
//     valkey_command_errors_total (counter; a nil reply is no error) for
//     every Do, DoMulti and DoCache, without attributes (a split by command
//     would cost an attribute set per call);
//   - a client span per call only under a recording span (a request sampled
//     in): named after the command, with db.system and db.operation; never
//     the statement (keys hold token hashes).
//
// A node of Nodes is instrumented the same way. Dedicated connections and
// pub/sub are not instrumented (the service uses
// neither).
func Instrument(tp trace.TracerProvider, mp metric.MeterProvider) (wrap func(valkey.Client) valkey.Client, err error) {
	m := mp.Meter(InstrumentationScope)
	duration, err := m.Float64Histogram("valkey_command_duration_seconds",
		// Its buckets are the service's view for every histogram in
		// seconds (telemetry.DurationBuckets).
		metric.WithUnit("s"), metric.WithDescription("Duration of Valkey commands (a pipeline is one)."))
	if err != nil {
		return nil, err
	}
	errs, err := m.Int64Counter("valkey_command_errors",
		metric.WithDescription("Valkey commands that failed (a nil reply is no failure)."))
	if err != nil {
		return nil, err
	}
	tracer := tp.Tracer(InstrumentationScope)
	return func(client valkey.Client) valkey.Client {
		return &instrumented{Client: client, tracer: tracer, duration: duration, errors: errs}
	}, nil
}

type instrumented struct {
	valkey.Client
	tracer   trace.Tracer
	duration metric.Float64Histogram
	errors   metric.Int64Counter
}

// start begins a span named after the command when ctx's span records.
func (c *instrumented) start(ctx context.Context, tokens func() []string) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	op := "unknown"
	if t := tokens(); len(t) > 0 {
		op = t[0]
	}
	return c.tracer.Start(ctx, op, spanKind, trace.WithAttributes(dbSystemAttr, attribute.String("db.operation", op)))
}

func (c *instrumented) end(ctx context.Context, span trace.Span, began time.Time, err error) {
	c.duration.Record(ctx, time.Since(began).Seconds())
	failed := err != nil && !valkey.IsValkeyNil(err)
	if failed {
		c.errors.Add(ctx, 1)
	}
	if span == nil {
		return
	}
	if failed {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// observe runs one call (do) with its metrics and, under a recording span,
// its span.
func observe[R any](c *instrumented, ctx context.Context, tokens func() []string, do func(context.Context) R, errOf func(R) error) R {
	began := time.Now()
	sctx, span := c.start(ctx, tokens)
	r := do(sctx)
	c.end(ctx, span, began, errOf(r))
	return r
}

func resultError(r valkey.ValkeyResult) error { return r.Error() }

func (c *instrumented) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	return observe(c, ctx, cmd.Commands, func(ctx context.Context) valkey.ValkeyResult { return c.Client.Do(ctx, cmd) }, resultError)
}

func (c *instrumented) DoCache(ctx context.Context, cmd valkey.Cacheable, ttl time.Duration) valkey.ValkeyResult {
	return observe(c, ctx, cmd.Commands, func(ctx context.Context) valkey.ValkeyResult { return c.Client.DoCache(ctx, cmd, ttl) }, resultError)
}

func (c *instrumented) DoMulti(ctx context.Context, multi ...valkey.Completed) []valkey.ValkeyResult {
	first := func() []string {
		if len(multi) == 0 {
			return nil
		}
		return multi[0].Commands()
	}
	return observe(c, ctx, first, func(ctx context.Context) []valkey.ValkeyResult { return c.Client.DoMulti(ctx, multi...) }, firstError)
}

func (c *instrumented) DoMultiCache(ctx context.Context, multi ...valkey.CacheableTTL) []valkey.ValkeyResult {
	first := func() []string {
		if len(multi) == 0 {
			return nil
		}
		return multi[0].Cmd.Commands()
	}
	return observe(c, ctx, first, func(ctx context.Context) []valkey.ValkeyResult { return c.Client.DoMultiCache(ctx, multi...) }, firstError)
}

// Nodes returns the client's nodes, each instrumented like the client: the
// per-node calls (LoadScripts' SCRIPT LOAD, SyncQueue.Sweep's SCAN) are
// commands like any other.
func (c *instrumented) Nodes() map[string]valkey.Client {
	nodes := c.Client.Nodes()
	for addr, n := range nodes {
		nodes[addr] = &instrumented{Client: n, tracer: c.tracer, duration: c.duration, errors: c.errors}
	}
	return nodes
}

// firstError is the first failure of a pipeline's replies (a nil reply is
// none).
func firstError(resps []valkey.ValkeyResult) error {
	for _, r := range resps {
		if err := r.Error(); err != nil && !valkey.IsValkeyNil(err) {
			return err
		}
	}
	return nil
}
