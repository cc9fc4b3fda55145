package main

// Recorded spans: starting an instance with an in-memory exporter and walking its traces.

import (
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

// keepSpans is an in-memory exporter that survives the service's shutdown:
// tracetest.InMemoryExporter forgets its spans on Shutdown, and stopping the
// service (which flushes the batch span processor) is how these tests make
// sure every ended span has been exported, without waiting on a timer.
type keepSpans struct{ *tracetest.InMemoryExporter }

// Shutdown keeps the recorded spans.
func (keepSpans) Shutdown(context.Context) error { return nil }

// startRecorded starts the service with every span recorded in memory.
func startRecorded(t *testing.T, env map[string]string) (*instance, *tracetest.InMemoryExporter) {
	t.Helper()
	rec := tracetest.NewInMemoryExporter()
	return startWith(t, env, options{spanExporter: keepSpans{rec}}), rec
}

// stopFlushed stops the service; its shutdown flushes every ended span to
// the exporter, so what the exporter holds afterwards is complete.
func stopFlushed(t *testing.T, in *instance) {
	t.Helper()
	if err := in.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// traceparent returns a W3C traceparent header with fresh ids, so the
// request's server span joins a trace the test knows.
func traceparent() (header string, tid trace.TraceID, parent trace.SpanID) {
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(parent[:])
	return "00-" + tid.String() + "-" + parent.String() + "-01", tid, parent
}

// traceOf returns the spans of one trace.
func traceOf(spans tracetest.SpanStubs, tid trace.TraceID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.SpanContext.TraceID() == tid {
			out = append(out, s)
		}
	}
	return out
}

// named returns the spans called name.
func named(spans []tracetest.SpanStub, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// children returns the direct children of parent.
func children(spans []tracetest.SpanStub, parent trace.SpanID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Parent.SpanID() == parent {
			out = append(out, s)
		}
	}
	return out
}

// descendants returns every span below root (children, their children…).
func descendants(spans []tracetest.SpanStub, root trace.SpanID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	frontier := []trace.SpanID{root}
	for len(frontier) > 0 {
		var next []trace.SpanID
		for _, p := range frontier {
			for _, c := range children(spans, p) {
				out = append(out, c)
				next = append(next, c.SpanContext.SpanID())
			}
		}
		frontier = next
	}
	return out
}

// Instrumentation scopes of the client libraries' spans.
const (
	scopePgx    = "github.com/exaring/otelpgx"
	scopeValkey = valkey.InstrumentationScope
)

func fromScope(spans []tracetest.SpanStub, scope string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.InstrumentationScope.Name == scope {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func spanNames(spans []tracetest.SpanStub) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name+"<"+s.InstrumentationScope.Name+">")
	}
	return out
}

// checkServerSpan checks the request's server span (the only child of the
// remote parent the test sent) and its three phase children, and returns it.
func checkServerSpan(t *testing.T, spans []tracetest.SpanStub, parent trace.SpanID) (server tracetest.SpanStub, phases map[string]tracetest.SpanStub) {
	t.Helper()
	roots := children(spans, parent)
	if len(roots) != 1 {
		t.Fatalf("want one server span under the remote parent, got %v", spanNames(roots))
	}
	server = roots[0]
	if server.Name != "POST "+queryRoute || server.SpanKind != trace.SpanKindServer || !server.Parent.IsRemote() {
		t.Fatalf("server span: name %q kind %v remote parent %v", server.Name, server.SpanKind, server.Parent.IsRemote())
	}
	for key, want := range map[attribute.Key]attribute.Value{
		"http.route":                attribute.StringValue(queryRoute),
		"http.request.method":       attribute.StringValue("POST"),
		"http.response.status_code": attribute.IntValue(200),
	} {
		if got, ok := attr(server, key); !ok || got != want {
			t.Errorf("server span %s = %v (present %v), want %v", key, got.Emit(), ok, want.Emit())
		}
	}
	// Every span of the trace hangs off the server span: no orphans, no
	// second root.
	below := descendants(spans, server.SpanContext.SpanID())
	if len(below)+1 != len(spans) {
		t.Errorf("trace has %d spans but %d are below the server span: %v", len(spans), len(below), spanNames(spans))
	}
	phases = map[string]tracetest.SpanStub{}
	var own []string
	for _, c := range children(spans, server.SpanContext.SpanID()) {
		if c.InstrumentationScope.Name == scopePgx || c.InstrumentationScope.Name == scopeValkey {
			continue
		}
		own = append(own, c.Name)
		phases[c.Name] = c
	}
	slices.Sort(own)
	if want := []string{"auth", "engine.query", "usage.check"}; !slices.Equal(own, want) {
		t.Fatalf("server span children = %v, want %v", own, want)
	}
	return server, phases
}

// spanText is everything of a span that an exporter sends, as text.
func spanText(s tracetest.SpanStub) string {
	var b strings.Builder
	kvs := func(attrs []attribute.KeyValue) {
		for _, kv := range attrs {
			b.WriteString(string(kv.Key) + "=" + kv.Value.Emit() + "\n")
		}
	}
	b.WriteString(s.Name + "\n" + s.Status.Description + "\n")
	kvs(s.Attributes)
	for _, e := range s.Events {
		b.WriteString(e.Name + "\n")
		kvs(e.Attributes)
	}
	for _, l := range s.Links {
		kvs(l.Attributes)
	}
	if s.Resource != nil {
		kvs(s.Resource.Attributes())
	}
	return b.String()
}
