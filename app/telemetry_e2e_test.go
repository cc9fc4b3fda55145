package main

// End-to-end tests of the telemetry contract (DESIGN.md, section Telemetry;
// issue 5): the span tree of a request, the /metrics scrape, slow-phase
// reporting, Server-Timing, secrets kept out of logs and spans, CORS, sync
// batch span links and pprof route labels.
// The telemetry package's unit tests cover its pieces; these tests check the
// running service wires them together.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/warmup"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestSpanTreeOfQuery(t *testing.T) {
	env := backendEnv(t)
	// The system warmup must not pick u up (it is recently active) before
	// its cold query: that query's own warmup is what must be linked.
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	in, rec := startRecorded(t, env)
	u := in.newUser(t, "free", nil)
	if r := in.items(t, u.token, []string{"a", "b"}, nil); r.status != 200 {
		t.Fatalf("items: %d %s", r.status, r.raw)
	}
	// A second token, never used. The admin API caches its principal at
	// once; on a real Valkey the test drops that entry (as a cache loss
	// would), so the cold query's auth reads the store too.
	tok := call(t, "POST", in.admin+"/admin/users/"+itoa(u.id)+"/tokens", "", map[string]any{})
	if tok.status != 201 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	fresh := tok.body["token"].(string)
	authReadsStore := false
	if url := env["VALKEY_URL"]; url != "" {
		c := rawValkey(t, url)
		key := valkey.NewKeys(env["VALKEY_PREFIX"]).Token(auth.Hash(fresh))
		if n, err := c.Do(t.Context(), c.B().Del().Key(key).Build()).AsInt64(); err != nil || n != 1 {
			t.Fatalf("drop the primed principal %s: %d, %v; want 1 key deleted", key, n, err)
		}
		authReadsStore = true
	}

	// Cold: neither the principal, the usage counter nor the items of u are
	// in Valkey; the answer comes from Postgres and (WARMUP_STRATEGY=async)
	// a warmup is enqueued, linked to this request.
	coldTP, coldTrace, coldParent := traceparent()
	if r := call(t, "POST", in.base+queryRoute, fresh, map[string]any{"items": []string{"a", "x"}}, "traceparent", coldTP); r.status != 200 {
		t.Fatalf("cold query: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, u.token, warmup.StateReady)
	warmTP, warmTrace, warmParent := traceparent()
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"a", "y"}}, "traceparent", warmTP); r.status != 200 {
		t.Fatalf("warm query: %d %s", r.status, r.raw)
	}
	// A login warmup of another user: its job links to the POST's server span.
	v := in.newUser(t, "free", nil)
	loginTP, loginTrace, loginParent := traceparent()
	if r := call(t, "POST", in.base+"/api/user/warmup", v.token, nil, "traceparent", loginTP); r.status != 202 {
		t.Fatalf("warmup: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, v.token, warmup.StateReady)
	stopFlushed(t, in)
	all := rec.GetSpans()

	t.Run("cold", func(t *testing.T) {
		spans := traceOf(all, coldTrace)
		_, phases := checkServerSpan(t, spans, coldParent)
		// Cold, every phase reaches both backends: auth (its cache entry
		// dropped) and usage miss the cache and read the store, the items
		// come from the store (pgx spans on Postgres; the in-memory store
		// has no client to trace).
		for _, name := range []string{"auth", "usage.check", "engine.query"} {
			below := descendants(spans, phases[name].SpanContext.SpanID())
			if onPostgres(env) && (name != "auth" || authReadsStore) && len(fromScope(below, scopePgx)) == 0 {
				t.Errorf("no pgx span under %s: %v", name, spanNames(below))
			}
			if len(fromScope(below, scopeValkey)) == 0 {
				t.Errorf("no valkey span under %s: %v", name, spanNames(below))
			}
		}
	})
	t.Run("warm", func(t *testing.T) {
		spans := traceOf(all, warmTrace)
		_, phases := checkServerSpan(t, spans, warmParent)
		if pg := fromScope(spans, scopePgx); len(pg) > 0 {
			t.Errorf("a warm query must not reach Postgres: %v", spanNames(pg))
		}
		// Warm, the lookup is answered inside the usage check's one Valkey
		// round trip: the valkey span is under usage.check, and engine.query
		// (its time the server's lookup) says so.
		below := descendants(spans, phases["usage.check"].SpanContext.SpanID())
		if len(fromScope(below, scopeValkey)) == 0 {
			t.Errorf("warm usage.check has no valkey span: %v", spanNames(below))
		}
		q := phases["engine.query"]
		if !slices.Contains(q.Attributes, attribute.Bool("warmpath.query.in_count", true)) {
			t.Errorf("warm engine.query does not say it was answered in the count: %v", q.Attributes)
		}
		if us := phases["usage.check"]; q.StartTime.Before(us.EndTime) {
			t.Errorf("warm engine.query starts at %v, before usage.check ends (%v)", q.StartTime, us.EndTime)
		}
		// The span budget of a warm query: the server span, its three
		// phases and the count script (plus the dirty mark when the count
		// took the user's pending delta from zero); the principal comes
		// from the client-side cache, with no span.
		valkeySpans := fromScope(spans, scopeValkey)
		if len(spans) != 4+len(valkeySpans) || len(valkeySpans) < 1 || len(valkeySpans) > 2 {
			t.Errorf("warm query made %d spans: %v; want the server span, 3 phases and 1–2 Valkey commands", len(spans), spanNames(spans))
		}
	})
	t.Run("warmup job links", func(t *testing.T) {
		jobs := named(all, "warmup.job")
		linkedTo := func(tid trace.TraceID) []tracetest.SpanStub {
			var out []tracetest.SpanStub
			for _, j := range jobs {
				for _, l := range j.Links {
					if l.SpanContext.TraceID() == tid {
						out = append(out, j)
					}
				}
			}
			return out
		}
		// The cold query's job links to a span of that request (the
		// engine.query that enqueued it), and is a trace of its own.
		cold := linkedTo(coldTrace)
		if len(cold) != 1 {
			for _, j := range jobs {
				t.Logf("job %v links %v", j.Attributes, j.Links)
			}
			t.Fatalf("want 1 warmup.job linked to the cold query %s, got %d of %d jobs", coldTrace, len(cold), len(jobs))
		}
		coldSpans := traceOf(all, coldTrace)
		target := cold[0].Links[0].SpanContext.SpanID()
		if !slices.ContainsFunc(coldSpans, func(s tracetest.SpanStub) bool { return s.SpanContext.SpanID() == target }) {
			t.Errorf("cold job link points at no span of the request")
		}
		// The login warmup's job links to the POST's server span exactly.
		login := linkedTo(loginTrace)
		if len(login) != 1 {
			t.Fatalf("want 1 warmup.job linked to the login warmup, got %d", len(login))
		}
		server := children(traceOf(all, loginTrace), loginParent)
		if len(server) != 1 || login[0].Links[0].SpanContext.SpanID() != server[0].SpanContext.SpanID() {
			t.Errorf("login job link = %v, want the server span %v", login[0].Links[0].SpanContext.SpanID(), spanNames(server))
		}
		for _, j := range append(cold, login...) {
			if j.Parent.IsValid() || j.SpanContext.TraceID() == coldTrace || j.SpanContext.TraceID() == loginTrace {
				t.Errorf("warmup.job must be a root span of its own trace (parent %v)", j.Parent.SpanID())
			}
			below := descendants(traceOf(all, j.SpanContext.TraceID()), j.SpanContext.SpanID())
			if onPostgres(env) && len(fromScope(below, scopePgx)) == 0 || len(fromScope(below, scopeValkey)) == 0 {
				t.Errorf("warmup.job should have pgx (on Postgres) and valkey spans below it: %v", spanNames(below))
			}
		}
	})
}

func TestSyncBatchSpansLinked(t *testing.T) {
	env := backendEnv(t)
	// No timer-driven pass: the only passes are the forced one and the
	// final flush at shutdown.
	env["SYNC_INTERVAL"] = "1h"
	in, rec := startRecorded(t, env)
	u := in.newUser(t, "free", nil)
	if r := in.query(t, u.token, "a"); r.status != 200 {
		t.Fatalf("query: %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", in.admin+"/admin/sync", "", nil); r.status != 202 {
		t.Fatalf("sync: %d %s", r.status, r.raw)
	}
	eventually(t, 10*time.Second, "the forced sync applied", func() bool {
		return in.metric(t, "warmpath_usage_sync_batches_total", "result", "applied") == 1
	})
	// Counted after the forced pass: applied by the shutdown flush, which
	// the admin request did not cause.
	if r := in.query(t, u.token, "a"); r.status != 200 {
		t.Fatalf("query: %d %s", r.status, r.raw)
	}
	stopFlushed(t, in)
	all := rec.GetSpans()

	admin := named(all, "POST /admin/sync")
	if len(admin) != 1 || admin[0].SpanKind != trace.SpanKindServer {
		t.Fatalf("want one server span POST /admin/sync, got %v", spanNames(admin))
	}
	batches := named(all, "usage.sync.batch")
	if len(batches) != 2 {
		t.Fatalf("want 2 usage.sync.batch spans (forced, flush), got %d", len(batches))
	}
	var linked int
	for _, b := range batches {
		if b.Parent.IsValid() {
			t.Errorf("a sync batch is a trace of its own, got parent %v", b.Parent.SpanID())
		}
		for _, l := range b.Links {
			if l.SpanContext.SpanID() == admin[0].SpanContext.SpanID() {
				linked++
			} else {
				t.Errorf("batch links to %v, not the forcing request", l.SpanContext.SpanID())
			}
		}
		below := descendants(traceOf(all, b.SpanContext.TraceID()), b.SpanContext.SpanID())
		if onPostgres(env) && len(fromScope(below, scopePgx)) == 0 {
			t.Errorf("no pgx span below the batch: %v", spanNames(below))
		}
	}
	if linked != 1 {
		t.Errorf("%d batches link to the forcing request, want exactly the forced one", linked)
	}
}

func TestMetricsScrape(t *testing.T) {
	// Non-default thresholds, to see that the gauges report the configured
	// values; usage_check at 1µs is passed by every check (a Valkey round
	// trip), so warmpath_slow_phase_total has a sample.
	env := withEnv(backendEnv(t), "THRESHOLD_TOTAL", "2500ms", "THRESHOLD_AUTH", "400ms", "THRESHOLD_DB", "750ms",
		"THRESHOLD_USAGE_CHECK", "1us", "DB_MAX_CONNS", "7", "SYSTEM_WARMUP_HOT_USERS", "0")
	in, _ := startRecorded(t, env)

	// Every endpoint, public and admin.
	u := in.newUser(t, "free", nil)
	if r := in.items(t, u.token, []string{"a", "b"}, nil); r.status != 200 {
		t.Fatalf("items: %d %s", r.status, r.raw)
	}
	if r := call(t, "POST", in.base+"/api/user/warmup", u.token, nil); r.status != 202 {
		t.Fatalf("warmup: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, u.token, warmup.StateReady) // GET /api/user/warmup
	if r := in.query(t, u.token, "a", "z"); r.status != 200 {
		t.Fatalf("warm query: %d %s", r.status, r.raw)
	}
	cold := in.newUser(t, "free", nil)
	if r := in.query(t, cold.token, "a"); r.status != 200 { // cold: the db phase runs
		t.Fatalf("cold query: %d %s", r.status, r.raw)
	}
	// A token the admin API creates is cached at once; an unknown one is a
	// principal cache miss (then a store lookup).
	if r := in.query(t, "wp_"+strings.Repeat("Z", 43), "a"); r.status != 401 {
		t.Fatalf("unknown token: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, cold.token, warmup.StateReady) // the warmup that query enqueued has finished
	for _, ep := range []struct{ method, url string }{
		{"GET", in.base + "/livez"}, {"GET", in.base + "/readyz?verbose"},
		{"POST", in.admin + "/admin/sync"}, {"GET", in.admin + "/admin/sync"}, {"GET", in.admin + "/admin/warmup"},
	} {
		if r := call(t, ep.method, ep.url, "", nil); r.status/100 != 2 {
			t.Fatalf("%s %s: %d %s", ep.method, ep.url, r.status, r.raw)
		}
	}
	eventually(t, 10*time.Second, "a usage sync batch applied", func() bool {
		return in.metric(t, "warmpath_usage_sync_batches_total", "result", "applied") >= 1
	})
	// The last query on its series carries a known trace: the request
	// histogram keeps the newest exemplar per bucket, so it must be there.
	tp, tid, _ := traceparent()
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"b"}}, "traceparent", tp); r.status != 200 {
		t.Fatalf("traced query: %d %s", r.status, r.raw)
	}

	fams, exemplars := scrape(t, in)
	has := func(t *testing.T, name string, labels ...string) []*dto.Metric {
		t.Helper()
		ms := series(fams, name, labels...)
		if len(ms) == 0 {
			t.Errorf("no sample of %s%v", name, labels)
		}
		return ms
	}
	typeOf := func(t *testing.T, name string, want dto.MetricType) {
		t.Helper()
		if mf := fams[name]; mf != nil && mf.GetType() != want {
			t.Errorf("%s is a %v, want %v", name, mf.GetType(), want)
		}
	}

	t.Run("request duration", func(t *testing.T) {
		const name = "http_server_request_duration_seconds"
		typeOf(t, name, dto.MetricType_HISTOGRAM)
		for _, s := range []struct{ method, route, status string }{
			{"POST", queryRoute, "200"}, {"POST", "/api/items", "200"},
			{"POST", "/api/user/warmup", "202"}, {"GET", "/api/user/warmup", "200"},
			{"GET", "/livez", "200"}, {"GET", "/readyz", "200"},
		} {
			has(t, name, "http_request_method", s.method, "http_route", s.route, "http_response_status_code", s.status)
		}
		// Label values are what was sent, never bytes of a later request.
		for _, m := range labelValues(fams, name, "http_request_method") {
			if m != "GET" && m != "POST" {
				t.Errorf("http_request_method=%q", m)
			}
		}
		// Buckets go down to 100µs.
		if ms := series(fams, name); len(ms) > 0 && ms[0].Histogram.Bucket[0].GetUpperBound() > 0.0001 {
			t.Errorf("smallest bucket is %v s, want ≤ 100µs", ms[0].Histogram.Bucket[0].GetUpperBound())
		}
		var found, bad int
		for _, ex := range exemplars {
			if !strings.HasPrefix(ex.series, name+"_bucket{") {
				continue
			}
			if !traceIDRE.MatchString(ex.labels["trace_id"]) {
				bad++
			}
			if ex.labels["trace_id"] == tid.String() && strings.Contains(ex.series, `http_route="`+queryRoute+`"`) {
				found++
			}
		}
		if bad > 0 || found != 1 {
			t.Errorf("request histogram exemplars: %d with a bad trace_id, %d with the traced query's (want 1)", bad, found)
		}
	})
	t.Run("phases and thresholds", func(t *testing.T) {
		typeOf(t, "warmpath_phase_duration_seconds", dto.MetricType_HISTOGRAM)
		for _, p := range []string{"auth", "usage_check", "query", "db", "total"} {
			has(t, "warmpath_phase_duration_seconds", "phase", p)
		}
		typeOf(t, "warmpath_alert_threshold_seconds", dto.MetricType_GAUGE)
		want := map[string]float64{"total": 2.5, "auth": 0.4, "db": 0.75, "usage_check": 0.000001}
		for p, v := range want {
			if ms := has(t, "warmpath_alert_threshold_seconds", "phase", p); len(ms) == 1 && ms[0].Gauge.GetValue() != v {
				t.Errorf("threshold %s = %v, want %v", p, ms[0].Gauge.GetValue(), v)
			}
		}
		if got := labelValues(fams, "warmpath_alert_threshold_seconds", "phase"); len(got) != len(want) {
			t.Errorf("threshold phases = %v", got)
		}
		typeOf(t, "warmpath_slow_phase_total", dto.MetricType_COUNTER)
		// Every metered request with a usage check: the warm, cold and traced queries.
		if got := sumSamples(has(t, "warmpath_slow_phase_total", "phase", "usage_check")); got != 3 {
			t.Errorf("slow usage_check = %v, want 3", got)
		}
	})
	t.Run("warmup", func(t *testing.T) {
		typeOf(t, "warmpath_warmup_queue_depth", dto.MetricType_GAUGE)
		has(t, "warmpath_warmup_queue_depth")
		typeOf(t, "warmpath_warmup_jobs_total", dto.MetricType_COUNTER)
		// u's login warmup and the cold user's, enqueued by its cold query.
		if got := sumSamples(has(t, "warmpath_warmup_jobs_total", "kind", "login", "result", "ready")); got != 2 {
			t.Errorf("login warmups ready = %v, want 2", got)
		}
		typeOf(t, "warmpath_warmup_duration_seconds", dto.MetricType_HISTOGRAM)
		has(t, "warmpath_warmup_duration_seconds", "kind", "login")
		typeOf(t, "warmpath_first_query_total", dto.MetricType_COUNTER)
		if got := sumSamples(has(t, "warmpath_first_query_total", "warmup", "ready")); got != 1 {
			t.Errorf("first queries after a ready warmup = %v, want 1", got)
		}
	})
	t.Run("cache", func(t *testing.T) {
		typeOf(t, "warmpath_cache_requests_total", dto.MetricType_COUNTER)
		for _, c := range []string{"principal", "usage", "items"} {
			has(t, "warmpath_cache_requests_total", "cache", c, "result", "hit")
			has(t, "warmpath_cache_requests_total", "cache", c, "result", "miss")
		}
	})
	t.Run("usage sync", func(t *testing.T) {
		typeOf(t, "warmpath_usage_sync_pending_users", dto.MetricType_GAUGE)
		has(t, "warmpath_usage_sync_pending_users")
		typeOf(t, "warmpath_usage_sync_lag_seconds", dto.MetricType_GAUGE)
		has(t, "warmpath_usage_sync_lag_seconds")
		typeOf(t, "warmpath_usage_sync_batches_total", dto.MetricType_COUNTER)
		has(t, "warmpath_usage_sync_batches_total", "result", "applied")
	})
	t.Run("pool", func(t *testing.T) {
		if !onPostgres(env) { // no pool, no pgx: the in-memory store
			for name := range fams {
				if strings.HasPrefix(name, "warmpath_db_pool_") || name == "db_client_operation_duration_seconds" {
					t.Errorf("%s without Postgres", name)
				}
			}
			return
		}
		for _, g := range []string{"acquired_conns", "idle_conns", "total_conns", "max_conns", "constructing_conns"} {
			has(t, "warmpath_db_pool_"+g)
		}
		for _, c := range []string{"acquires_total", "empty_acquires_total", "canceled_acquires_total",
			"acquire_duration_seconds_total", "empty_acquire_wait_seconds_total"} {
			has(t, "warmpath_db_pool_"+c)
		}
		if ms := series(fams, "warmpath_db_pool_max_conns"); len(ms) == 1 && ms[0].Gauge.GetValue() != 7 {
			t.Errorf("pool max_conns = %v, want DB_MAX_CONNS=7", ms[0].Gauge.GetValue())
		}
		if got := sumSamples(series(fams, "warmpath_db_pool_acquires_total")); got < 1 {
			t.Errorf("pool acquires = %v", got)
		}
		has(t, "db_client_operation_duration_seconds") // otelpgx
	})
	t.Run("runtime", func(t *testing.T) {
		for _, n := range []string{"go_goroutines", "go_memstats_alloc_bytes", "go_gc_duration_seconds", "process_cpu_seconds_total"} {
			has(t, n)
		}
	})
}

func TestSlowPhaseCountedAndLogged(t *testing.T) {
	// startLogging starts an instance that logs in format at level, with the
	// extra settings, and provisions a free user on it.
	startLogging := func(t *testing.T, format, level string, extra map[string]string) (*instance, user) {
		t.Helper()
		env := backendEnv(t)
		env["LOG_FORMAT"], env["LOG_LEVEL"] = format, level
		maps.Copy(env, extra)
		in := start(t, env)
		return in, in.newUser(t, "free", nil)
	}
	// A subtest that skips checks nothing: the test fails unless every one ran.
	var ran, subtests int
	run := func(name string, f func(t *testing.T)) {
		subtests++
		t.Run(name, func(t *testing.T) {
			f(t)
			ran++ // not reached when f skips (or fails: Skip and Fatal end the goroutine)
		})
	}
	run("auth past 1ns", func(t *testing.T) {
		in, u := startLogging(t, "json", "warn", map[string]string{"THRESHOLD_AUTH": "1ns"})
		if before := in.metric(t, "warmpath_slow_phase_total", "phase", "auth"); before != 0 {
			t.Fatalf("slow auth before any request = %v", before)
		}
		const n = 3
		for range n {
			if r := in.query(t, u.token, "a"); r.status != 200 {
				t.Fatalf("query: %d %s", r.status, r.raw)
			}
		}
		if got := in.metric(t, "warmpath_slow_phase_total", "phase", "auth"); got != n {
			t.Errorf("slow auth = %v, want %d (one per request)", got, n)
		}
		// The [PERF] line is written before the response, so it is there.
		perf := perfLines(logLines(t, in))
		if len(perf) != n {
			t.Fatalf("want %d [PERF] lines, got %d:\n%s", n, len(perf), tail(in.stderr.String(), 2000))
		}
		for _, l := range perf {
			msg := l["msg"].(string)
			slow, _ := l["slow"].([]any)
			bd, _ := l["breakdown"].(map[string]any)
			if l["level"] != "WARN" || !strings.HasPrefix(msg, "[PERF] POST "+queryRoute+" - Total: ") ||
				!strings.Contains(msg, "slow: auth") || !slices.Contains(slow, any("auth")) {
				t.Errorf("slow [PERF] line: %v", l)
			}
			if l["status"] != 200.0 || l["path"] != queryRoute || l["method"] != "POST" || bd == nil || bd["auth"].(float64) <= 0 ||
				l["total_ms"].(float64) < bd["auth"].(float64) || !traceIDRE.MatchString(l["trace_id"].(string)) {
				t.Errorf("[PERF] fields: %v", l)
			}
		}
	})
	run("warn level, default thresholds", func(t *testing.T) {
		in, u := startLogging(t, "json", "warn", nil)
		for range 3 {
			if r := in.query(t, u.token, "a"); r.status != 200 {
				t.Fatalf("query: %d %s", r.status, r.raw)
			}
		}
		// Only slow requests are logged at warn. Whether one was slow on a
		// loaded machine is read from the counter, not assumed.
		slow := in.metric(t, "warmpath_slow_phase_total")
		perf := perfLines(logLines(t, in))
		if slow == 0 && len(perf) != 0 || float64(len(perf)) > slow {
			t.Fatalf("%d [PERF] lines for %v slow phases: %v", len(perf), slow, perf)
		}
		for _, l := range perf {
			if l["level"] != "WARN" || len(l["slow"].([]any)) == 0 {
				t.Errorf("a [PERF] line at warn must be a slow one: %v", l)
			}
		}
	})
	run("text format", func(t *testing.T) {
		in, u := startLogging(t, "text", "info", map[string]string{"THRESHOLD_USAGE_CHECK": "1ns"})
		if r := in.query(t, u.token, "a"); r.status != 200 {
			t.Fatalf("query: %d %s", r.status, r.raw)
		}
		if r := in.items(t, u.token, []string{"b"}, nil); r.status != 200 {
			t.Fatalf("items: %d %s", r.status, r.raw)
		}
		// slog's text handler quotes the message.
		re := regexp.MustCompile(`level=(\w+) msg="\[PERF\] POST ` + regexp.QuoteMeta(queryRoute) +
			` - Total: ([0-9.]+)ms \{breakdown: \{auth: ([0-9.]+), usageCheck: ([0-9.]+), query: ([0-9.]+)(?:, db: [0-9.]+)?\}\}( - slow: usage_check)?"`)
		var lines []string
		for _, l := range strings.Split(in.stderr.String(), "\n") {
			if strings.Contains(l, "[PERF]") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 2 { // one per metered request: the query and the items change
			t.Fatalf("want 2 [PERF] lines, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
		}
		m := re.FindStringSubmatch(lines[0])
		if m == nil || m[1] != "WARN" || m[6] == "" {
			t.Fatalf("text [PERF] line %q does not match %s", lines[0], re)
		}
		total, _ := strconv.ParseFloat(m[2], 64)
		var sum float64
		for _, s := range m[3:6] {
			v, _ := strconv.ParseFloat(s, 64)
			sum += v
		}
		// Three values rounded to the µs each: allow their rounding.
		if sum > total+0.0015 || !strings.Contains(lines[0], "trace_id=") {
			t.Errorf("phases %v sum to %v > total %v, or no trace_id: %q", m[3:6], sum, total, lines[0])
		}
		if !strings.Contains(lines[1], `level=INFO msg="[PERF] POST /api/items - Total: `) {
			t.Errorf("items [PERF] line: %q", lines[1])
		}
	})
	if ran != subtests && !t.Failed() {
		t.Fatalf("%d of %d subtests ran: a skipped one checked nothing", ran, subtests)
	}
}

// parseServerTiming parses a Server-Timing header as a list of
// name;dur=float members and returns the durations by name.
func parseServerTiming(t *testing.T, h string) map[string]float64 {
	t.Helper()
	token := regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)
	out := map[string]float64{}
	for _, member := range strings.Split(h, ",") {
		parts := strings.Split(strings.TrimSpace(member), ";")
		name := parts[0]
		if !token.MatchString(name) {
			t.Fatalf("Server-Timing %q: bad metric name %q", h, name)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("Server-Timing %q: %s twice", h, name)
		}
		dur := -1.0
		for _, p := range parts[1:] {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || !token.MatchString(k) {
				t.Fatalf("Server-Timing %q: bad parameter %q", h, p)
			}
			if k == "dur" {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 {
					t.Fatalf("Server-Timing %q: dur %q is not a non-negative float", h, v)
				}
				dur = f
			}
		}
		if dur < 0 {
			t.Fatalf("Server-Timing %q: %s has no dur", h, name)
		}
		out[name] = dur
	}
	return out
}

func TestServerTiming(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", ptr[int64](1))
	q := in.base + queryRoute
	cases := []struct {
		name   string
		r      reply
		status int
		phases []string // present besides total
	}{
		{"query", in.query(t, u.token, "a"), 200, []string{"auth", "usage", "query"}},
		{"over quota", in.query(t, u.token, "a"), 429, []string{"auth", "usage"}},
		{"items", in.items(t, u.token, []string{"x"}, nil), 200, []string{"auth"}},
		{"warmup", call(t, "POST", in.base+"/api/user/warmup", u.token, nil), 202, []string{"auth"}},
		{"warmup status", call(t, "GET", in.base+"/api/user/warmup", u.token, nil), 200, []string{"auth"}},
		{"no token", call(t, "POST", q, "", map[string]any{"items": []string{"a"}}), 401, nil},
		{"unknown token", call(t, "POST", q, "wp_"+strings.Repeat("B", 43), map[string]any{"items": []string{"a"}}), 401, nil}, // a refused token's answer has total only
		{"bad items", call(t, "POST", q, u.token, map[string]any{"items": []string{}}), 400, []string{"auth"}},
		{"unknown route", call(t, "GET", in.base+"/api/nope", "", nil), 404, nil},
		{"readyz", call(t, "GET", in.base+"/readyz", "", nil), 200, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", tc.r.status, tc.status, tc.r.raw)
			}
			st := parseServerTiming(t, tc.r.header.Get("Server-Timing"))
			total, ok := st["total"]
			if !ok {
				t.Fatalf("no total in %q", tc.r.header.Get("Server-Timing"))
			}
			for _, p := range tc.phases {
				if _, ok := st[p]; !ok {
					t.Errorf("no %s in %q", p, tc.r.header.Get("Server-Timing"))
				}
			}
			var sum float64
			for name, d := range st {
				if d > total {
					t.Errorf("%s=%v > total=%v", name, d, total)
				}
				if name != "total" && name != "db" { // db overlaps usage and query
					sum += d
				}
			}
			// Each value is rounded to the µs: allow three roundings.
			if sum > total+0.0015 {
				t.Errorf("phases sum to %v > total %v: %q", sum, total, tc.r.header.Get("Server-Timing"))
			}
		})
	}
}

// secretForms returns s and the forms of its SHA-256 that could leak.
func secretForms(s string) []string {
	h := sha256.Sum256([]byte(s))
	return []string{s, hex.EncodeToString(h[:]), strings.ToUpper(hex.EncodeToString(h[:])),
		base64.StdEncoding.EncodeToString(h[:]), base64.RawStdEncoding.EncodeToString(h[:]),
		base64.URLEncoding.EncodeToString(h[:]), base64.RawURLEncoding.EncodeToString(h[:])}
}

func TestNoSecretLeaks(t *testing.T) {
	env := backendEnv(t)
	env["LOG_LEVEL"] = "debug"
	env["ADMIN_TOKEN"] = "adm_" + randHex(24)
	admin := env["ADMIN_TOKEN"]
	in, rec := startRecorded(t, env)

	var bodies []string
	record := func(r reply) reply {
		var h strings.Builder
		for k, v := range r.header {
			h.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		bodies = append(bodies, h.String()+string(r.raw))
		return r
	}
	cu := record(call(t, "POST", in.admin+"/admin/users", admin, map[string]any{"name": "leak", "plan": "free", "quota": 3}))
	if cu.status != 201 {
		t.Fatalf("create user: %d %s", cu.status, cu.raw)
	}
	valid := cu.body["token"].(string)
	bodies = bodies[:0] // the one response that must carry a token
	unknown := "wp_" + base64.RawURLEncoding.EncodeToString([]byte(randHex(16)))
	malformed := "not a token " + randHex(8)
	wrongAdmin := "adm_" + randHex(24)
	q := in.base + queryRoute
	items := map[string]any{"items": []string{"a"}}

	for range 4 { // the fourth is over quota (429)
		record(call(t, "POST", q, valid, items))
	}
	record(call(t, "POST", in.base+"/api/items", valid, map[string]any{"add": []string{"b"}}))
	record(call(t, "POST", in.base+"/api/user/warmup", valid, nil))
	// Ready means the job logged at DEBUG too ("warmup ready").
	waitWarmup(t, in, valid, warmup.StateReady)
	record(call(t, "GET", in.base+"/api/user/warmup", valid, nil))
	record(call(t, "POST", q, valid, []byte(`{"items":`))) // malformed JSON after a valid token
	record(call(t, "POST", q, unknown, items))
	record(call(t, "POST", q, malformed, items))
	record(call(t, "POST", q, "", items, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:"+valid))))
	record(call(t, "POST", q, "", items, "Authorization", "Bearer "+valid+" "+unknown))
	record(call(t, "POST", q+"?access_token="+valid, "", items))
	record(call(t, "GET", in.base+"/api/nope", valid, nil))
	record(call(t, "GET", in.admin+"/admin/sync", admin, nil))
	record(call(t, "GET", in.admin+"/admin/warmup", wrongAdmin, nil))
	record(call(t, "POST", in.admin+"/admin/users", "", map[string]any{"name": "x", "plan": "free"}))
	record(call(t, "GET", in.admin+"/admin/sync", admin, nil, "Authorization", "Bearer "+wrongAdmin))
	stopFlushed(t, in)

	logs := in.stderr.String() + in.stdout.String()
	spans := rec.GetSpans()
	if len(spans) == 0 || !strings.Contains(logs, "[PERF]") || !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("nothing captured: %d spans, logs:\n%s", len(spans), tail(logs, 2000))
	}
	for _, secret := range []string{valid, unknown, malformed, admin, wrongAdmin} {
		for _, form := range secretForms(secret) {
			if strings.Contains(logs, form) {
				t.Errorf("log contains a secret form %q", form)
			}
			for _, b := range bodies {
				if strings.Contains(b, form) {
					t.Errorf("a response contains a secret form %q:\n%s", form, b)
				}
			}
			for _, s := range spans {
				if strings.Contains(spanText(s), form) {
					t.Errorf("span %q contains a secret form %q", s.Name, form)
				}
			}
		}
	}
}

func TestCORSOrigins(t *testing.T) {
	env := backendEnv(t)
	env["CORS_ORIGINS"] = "https://app.example"
	in := start(t, env)
	u := in.newUser(t, "free", nil)
	const allowed, other = "https://app.example", "https://evil.example"
	q := in.base + queryRoute
	body := map[string]any{"items": []string{"a"}}

	for _, tc := range []struct {
		name string
		r    reply
	}{
		{"query", call(t, "POST", q, u.token, body, "Origin", allowed)},
		{"error", call(t, "POST", q, "", body, "Origin", allowed)},
	} {
		if got := tc.r.header.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("%s from the allowed origin: Access-Control-Allow-Origin %q", tc.name, got)
		}
		if got := tc.r.header.Get("Timing-Allow-Origin"); got != allowed {
			t.Errorf("%s from the allowed origin: Timing-Allow-Origin %q", tc.name, got)
		}
		if !strings.Contains(tc.r.header.Get("Access-Control-Expose-Headers"), "Server-Timing") {
			t.Errorf("%s: Server-Timing not exposed: %q", tc.name, tc.r.header.Get("Access-Control-Expose-Headers"))
		}
	}
	r := call(t, "POST", q, u.token, body, "Origin", other)
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Timing-Allow-Origin") != "" {
		t.Errorf("other origin: %d, Access-Control-Allow-Origin %q, Timing-Allow-Origin %q", r.status,
			r.header.Get("Access-Control-Allow-Origin"), r.header.Get("Timing-Allow-Origin"))
	}
	if r := call(t, "POST", q, u.token, body); r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Timing-Allow-Origin") != "" {
		t.Errorf("no origin: CORS headers %v", r.header)
	}

	pre := call(t, "OPTIONS", q, "", nil, "Origin", allowed, "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type")
	if pre.status/100 != 2 || pre.header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")), "authorization") ||
		!strings.Contains(strings.ToLower(pre.header.Get("Access-Control-Allow-Headers")), "content-type") {
		t.Errorf("preflight from the allowed origin: %d %v", pre.status, pre.header)
	}
	pre = call(t, "OPTIONS", q, "", nil, "Origin", other, "Access-Control-Request-Method", "POST")
	if pre.status/100 == 2 || pre.header.Get("Access-Control-Allow-Origin") != "" || pre.header.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight from another origin: %d %v", pre.status, pre.header)
	}
}

func TestPprofRouteLabels(t *testing.T) {
	env := backendEnv(t)
	env["WARMUP_STRATEGY"] = "off" // every query reads the store
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	// Route labels are put on only while a profiler runs (they cost every
	// request otherwise): a pyroscope that discards what it is sent.
	pyro := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(pyro.Close)
	env["PYROSCOPE_SERVER_ADDRESS"] = pyro.URL
	in, gs := startGated(t, env)
	u := in.newUser(t, "free", nil)

	// A held store call keeps a query in its handler long enough to see the
	// handler goroutine's labels in a goroutine profile.
	gs.items.hold()
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", in.base+queryRoute, strings.NewReader(`{"items":["a"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// With pyroscope on, the span wrapper adds span_name (and span_id on
	// sampled spans) to the same label set.
	want := regexp.MustCompile(`(?m)^# labels: \{.*"route":"` + regexp.QuoteMeta(queryRoute) + `"`)
	var seen bool
	for !seen {
		r := call(t, "GET", in.admin+"/debug/pprof/goroutine?debug=1", "", nil)
		seen = want.Match(r.raw)
		select {
		case code := <-done:
			if !seen {
				t.Fatalf("the query (%d) finished and no goroutine profile showed %s", code, want)
			}
			done <- code
		case <-time.After(5 * time.Millisecond): // poll interval, bounds the load
		}
	}
	gs.items.release()
	if code := <-done; code != 200 {
		t.Fatalf("labelled query: %d", code)
	}
}
