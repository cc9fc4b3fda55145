package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// pyroscopeExplore opens the service's CPU profile for the dashboard's time
// range in Grafana Explore, on the Pyroscope data source of the compose stack
// (deploy/grafana/provisioning/datasources).
const pyroscopeExplore = `/explore?left={"datasource":"pyroscope","queries":[{"refId":"A","queryType":"profile",` +
	`"profileTypeId":"process_cpu:cpu:nanoseconds:cpu:nanoseconds","labelSelector":"{service_name=\"warmpath\"}"}],` +
	`"range":{"from":"${__from}","to":"${__to}"}}`

// dependencies is "warmpath — dependencies & runtime": Postgres, Valkey and
// the Go process.
func dependencies() *dashboard.DashboardBuilder {
	d := base("warmpath-dependencies-runtime", "warmpath — dependencies & runtime",
		"The pgx pool, Valkey latency and errors (and what the circuit breaker does with them), and the Go runtime of each instance. "+
			"Profiles: the Pyroscope link on the CPU panel, or /debug/pprof on the admin listener.")

	d.WithRow(dashboard.NewRowBuilder("Postgres pool (pgx)"))
	d.WithPanel(limitLine(ts("Pool connections",
		"Acquired, idle and connecting connections against the pool's maximum (DB_MAX_CONNS). "+
			"Acquired at the maximum means requests queue for a connection. Exported only with DATABASE_URL.",
		"short", 16, 8,
		q(fmt.Sprintf(`sum(warmpath_db_pool_acquired_conns{%s})`, sel), "acquired"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_idle_conns{%s})`, sel), "idle"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_constructing_conns{%s})`, sel), "constructing"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_total_conns{%s})`, sel), "total"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_max_conns{%s})`, sel), "max")), "max"))
	d.WithPanel(ratio(ts("Pool utilisation by instance", "Acquired over maximum connections, per instance.", "percentunit", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_db_pool_acquired_conns{%[1]s})
/
max by (instance) (warmpath_db_pool_max_conns{%[1]s})`, sel), "{{instance}}"))))

	d.WithRow(dashboard.NewRowBuilder("Valkey"))
	d.WithPanel(ts("Valkey command latency p99",
		"p99 of all Valkey commands (valkey.Instrument; not split by command, which would cost an attribute set per call), "+
			"and of the usage check phase: a warm query's one Valkey round trip, the count script that also answers "+
			"the has-not lookup, as requests see it. VALKEY_TIMEOUT bounds both.",
		"s", 8, 8,
		q(quantile("0.99", "valkey_command_duration_seconds_bucket", sel, ""), "p99 commands"),
		q(quantile("0.99", phaseHist+"_bucket", sel+`, phase="usage_check"`, ""), "p99 usage check")))
	lookups := sumRate("warmpath_cache_requests_total", "", "cache")
	d.WithPanel(ts("Valkey errors",
		"Cache lookups that failed per second, by cache (Valkey unreachable, timing out, or the circuit breaker open), "+
			"and failed Valkey commands (valkey.Instrument). 0 on a healthy system.",
		"ops", 8, 8,
		q(orZero(sumRate("warmpath_cache_requests_total", `result="error"`, "cache"), lookups), "{{cache}}"),
		q(orZero(sumRate("valkey_command_errors_total", "", ""), ""), "commands")))
	d.WithPanel(ratio(ts("Circuit breaker: share of lookups failing fast",
		"Failed cache lookups over all lookups. After three Valkey failures in a row the breaker opens: every lookup fails at once "+
			"(ErrBreakerOpen) and degrades to Postgres, in-process counting (USAGE_FAILURE_MODE=open) or a 503 (closed), "+
			"with one probe a second; this share then jumps to 1 and falls back to 0 when the probe succeeds. "+
			"WarmpathValkeyDown fires above 50 % for 2 minutes.",
		"percentunit", 8, 8,
		q(orZero(sumRate("warmpath_cache_requests_total", `result="error"`, "cache"), lookups)+"\n/\n"+lookups, "{{cache}}"))))

	d.WithRow(dashboard.NewRowBuilder("Go runtime"))
	d.WithPanel(ts("Goroutines", "Live goroutines; a steady climb is a leak.", "short", 8, 8,
		q(fmt.Sprintf(`go_goroutines{%s}`, sel), "{{instance}}")))
	d.WithPanel(ts("Heap", "Heap in use and allocated, and resident memory of the process.", "bytes", 8, 8,
		q(fmt.Sprintf(`go_memstats_heap_inuse_bytes{%s}`, sel), "heap in use {{instance}}"),
		q(fmt.Sprintf(`go_memstats_heap_alloc_bytes{%s}`, sel), "heap alloc {{instance}}"),
		q(fmt.Sprintf(`process_resident_memory_bytes{%s}`, sel), "RSS {{instance}}")))
	d.WithPanel(ts("Allocation rate", "Bytes allocated per second: the hot path's garbage.", "Bps", 8, 8,
		q(fmt.Sprintf(`rate(go_memstats_alloc_bytes_total{%s}[$__rate_interval])`, sel), "{{instance}}")))
	d.WithPanel(ts("GC cycles", "Garbage collections per second.", "short", 8, 8,
		q(fmt.Sprintf(`rate(go_gc_duration_seconds_count{%s}[$__rate_interval])`, sel), "{{instance}}")))
	d.WithPanel(ts("GC pause",
		"Share of wall time spent in stop-the-world pauses, and the longest recent pause (the largest quantile of go_gc_duration_seconds "+
			"the runtime reports, whatever quantiles it has).",
		"s", 8, 8,
		q(fmt.Sprintf(`rate(go_gc_duration_seconds_sum{%s}[$__rate_interval])`, sel), "pause s/s {{instance}}"),
		q(fmt.Sprintf(`max by (instance) (go_gc_duration_seconds{%s})`, sel), "longest pause {{instance}}")))
	d.WithPanel(ts("CPU",
		"CPU seconds per second used by the process (1 = one core). The link opens its CPU profile in Pyroscope "+
			"(PYROSCOPE_SERVER_ADDRESS), span ids attached; without Pyroscope use /debug/pprof/profile on the admin listener.",
		"short", 8, 8,
		q(fmt.Sprintf(`rate(process_cpu_seconds_total{%s}[$__rate_interval])`, sel), "{{instance}}")).
		Links([]cog.Builder[dashboard.DashboardLink]{link("CPU profile in Pyroscope", pyroscopeExplore)}))
	return d
}
