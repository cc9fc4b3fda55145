package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// syncLagLimit is the UsageSyncLagging threshold drawn on the lag panel:
// 2 × SYNC_INTERVAL at its default of 1 s (no metric exports the interval).
const syncLagLimit = "2"

// warmupSync is "warmpath — warmup & sync": the two background paths that
// must never block a request.
func warmupSync() *dashboard.DashboardBuilder {
	d := base("warmpath-warmup-sync", "warmpath — warmup & sync",
		"The user warmup queue and workers, and the usage write-behind from Valkey to Postgres.")

	d.WithRow(dashboard.NewRowBuilder("Warmup"))
	d.WithPanel(ts("Warmup queue depth",
		"Jobs waiting per instance (WARMUP_QUEUE_SIZE bounds it; a full queue answers POST /api/user/warmup with 503). "+
			"Login warmups go before system ones.",
		"short", 8, 8,
		q(fmt.Sprintf(`sum by (instance) (warmpath_warmup_queue_depth{%s})`, sel), "{{instance}}")))
	d.WithPanel(ts("Warmup jobs by kind and result",
		"Finished jobs per second: login (POST /api/user/warmup), system (hot users at start), inline (WARMUP_STRATEGY=inline).",
		"ops", 8, 8,
		q(fmt.Sprintf(`sum by (kind, result) (rate(warmpath_warmup_jobs_total{%s}[$__rate_interval]))`, sel), "{{kind}} {{result}}")))
	d.WithPanel(ts("Warmup duration p99 by kind",
		"How long a job takes from start to ready/failed; a login warmup should finish before the client's first query.",
		"s", 8, 8,
		q(quantile("0.99", "warmpath_warmup_duration_seconds_bucket", sel, ", kind"), "p99 {{kind}}").Exemplar(true)))

	d.WithRow(dashboard.NewRowBuilder("Usage sync (write-behind)"))
	d.WithPanel(ts("Users with pending usage",
		"Users whose usage counted in Valkey is not yet in Postgres. Grows while Postgres is down; drains on recovery.",
		"short", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_usage_sync_pending_users{%s})`, sel), "{{instance}}")))
	d.WithPanel(limitLine(ts("Sync lag vs 2 × SYNC_INTERVAL",
		"Age of the oldest usage delta not yet in Postgres. The red line is the UsageSyncLagging threshold "+
			"(2 × SYNC_INTERVAL, drawn for the default 1 s).",
		"s", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_usage_sync_lag_seconds{%s})`, sel), "{{instance}}"),
		q("vector("+syncLagLimit+")", "2 × SYNC_INTERVAL")), "2 × SYNC_INTERVAL"))
	d.WithPanel(ts("Sync batches by result",
		"applied: written; duplicate: already applied (a retry after a crash, skipped by its idempotency key); error: will be retried.",
		"ops", 8, 8,
		q(fmt.Sprintf(`sum by (result) (rate(warmpath_usage_sync_batches_total{%s}[$__rate_interval]))`, sel), "{{result}}")))
	return d
}

// runtime is "warmpath — runtime": the Go process and the Postgres pool.
func runtime() *dashboard.DashboardBuilder {
	d := base("warmpath-runtime", "warmpath — runtime",
		"Go runtime, process and pgx pool of each warmpath instance. Profiles: /debug/pprof on the admin listener, "+
			"or Pyroscope when PYROSCOPE_SERVER_ADDRESS is set.")

	d.WithRow(dashboard.NewRowBuilder("Go runtime"))
	d.WithPanel(ts("Goroutines", "Live goroutines; a steady climb is a leak.", "short", 8, 8,
		q(fmt.Sprintf(`go_goroutines{%s}`, sel), "{{instance}}")))
	d.WithPanel(ts("Heap", "Heap in use and allocated, and resident memory of the process.", "bytes", 8, 8,
		q(fmt.Sprintf(`go_memstats_heap_inuse_bytes{%s}`, sel), "heap in use {{instance}}"),
		q(fmt.Sprintf(`go_memstats_heap_alloc_bytes{%s}`, sel), "heap alloc {{instance}}"),
		q(fmt.Sprintf(`process_resident_memory_bytes{%s}`, sel), "RSS {{instance}}")))
	d.WithPanel(ts("Allocation rate", "Bytes allocated per second: the hot path's garbage.", "Bps", 8, 8,
		q(fmt.Sprintf(`rate(go_memstats_alloc_bytes_total{%s}[$__rate_interval])`, sel), "{{instance}}")))
	d.WithPanel(ts("GC", "GC cycles per second and the share of wall time spent in stop-the-world pauses.", "short", 8, 8,
		q(fmt.Sprintf(`rate(go_gc_duration_seconds_count{%s}[$__rate_interval])`, sel), "cycles/s {{instance}}"),
		q(fmt.Sprintf(`rate(go_gc_duration_seconds_sum{%s}[$__rate_interval])`, sel), "pause share {{instance}}")))
	d.WithPanel(ts("GC pause (max)", "Longest recent stop-the-world pause.", "s", 8, 8,
		q(fmt.Sprintf(`go_gc_duration_seconds{%s, quantile="1"}`, sel), "{{instance}}")))
	d.WithPanel(ts("CPU", "CPU seconds per second used by the process.", "short", 8, 8,
		q(fmt.Sprintf(`rate(process_cpu_seconds_total{%s}[$__rate_interval])`, sel), "{{instance}}")))

	d.WithRow(dashboard.NewRowBuilder("Postgres pool (pgx)"))
	d.WithPanel(limitLine(ts("Pool connections",
		"Acquired, idle and connecting connections against the pool's maximum (DB_MAX_CONNS). "+
			"Acquired at the maximum means requests queue for a connection.",
		"short", 16, 8,
		q(fmt.Sprintf(`sum(warmpath_db_pool_acquired_conns{%s})`, sel), "acquired"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_idle_conns{%s})`, sel), "idle"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_constructing_conns{%s})`, sel), "constructing"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_total_conns{%s})`, sel), "total"),
		q(fmt.Sprintf(`sum(warmpath_db_pool_max_conns{%s})`, sel), "max")), "max"))
	d.WithPanel(ratio(ts("Pool utilisation by instance", "Acquired over maximum connections.", "percentunit", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_db_pool_acquired_conns{%[1]s})
/
max by (instance) (warmpath_db_pool_max_conns{%[1]s})`, sel), "{{instance}}"))))
	return d
}
