package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// warmup is "warmpath — warmup": does warming at login reach the first query?
func warmup() *dashboard.DashboardBuilder {
	d := base("warmpath-warmup", "warmpath — warmup",
		"The warmup queue and workers, job results and durations, whether the first query after login finds the user warm, "+
			"cache efficiency, and JWKS refreshes.")

	d.WithRow(dashboard.NewRowBuilder("Queue and jobs"))
	d.WithPanel(ts("Warmup queue depth",
		"Jobs waiting per instance; login warmups go before system ones (the queue is one, ordered by priority: "+
			"the service exports its total depth). WARMUP_QUEUE_SIZE bounds it; full answers POST /api/user/warmup with 503. "+
			"WarmupQueueSaturated fires above 1,000 for 5 minutes.",
		"short", 8, 8,
		q(fmt.Sprintf(`sum by (instance) (warmpath_warmup_queue_depth{%s})`, sel), "{{instance}}")))
	d.WithPanel(ts("Warmup jobs by kind and result",
		"Finished jobs per second: login (POST /api/user/warmup), system (hot users at start), inline (WARMUP_STRATEGY=inline); "+
			"ready, skipped or failed.",
		"ops", 8, 8,
		q(sumRate("warmpath_warmup_jobs_total", "", "kind, result"), "{{kind}} {{result}}")))
	jobs := sumRate("warmpath_warmup_jobs_total", "", "kind")
	d.WithPanel(ratio(ts("Warmup failure ratio by kind",
		"Failed jobs over all jobs, per kind (WarmupFailures fires above 10 % for 10 minutes). 0 on a healthy system.",
		"percentunit", 8, 8,
		q(orZero(sumRate("warmpath_warmup_jobs_total", `result="failed"`, "kind"), jobs)+"\n/\n"+jobs, "{{kind}}"))))

	d.WithRow(dashboard.NewRowBuilder("Login to ready"))
	d.WithPanel(ts("Warmup duration p50 / p99 by kind",
		"How long a job takes from start to ready or failed. A login warmup is the login-to-ready time the client sees "+
			"(plus its wait in the queue): it should finish before the client's first query. Exemplars open the job's trace.",
		"s", 12, 8,
		q(quantile("0.5", "warmpath_warmup_duration_seconds_bucket", sel, ", kind"), "p50 {{kind}}"),
		q(quantile("0.99", "warmpath_warmup_duration_seconds_bucket", sel, ", kind"), "p99 {{kind}}").Exemplar(true)))
	d.WithPanel(ratio(ts("First query after login warmup, by warmup state",
		"Share of first metered queries after a login warmup by the state that warmup was in. "+
			"ready is the goal; running/queued mean the warmup was too slow for the client; "+
			"none means the client did not call POST /api/user/warmup at login, or it failed (FirstQueryCold).",
		"percentunit", 12, 8,
		q(fmt.Sprintf(`sum by (warmup) (rate(warmpath_first_query_total{%[1]s}[$__rate_interval]))
/ ignoring (warmup) group_left ()
sum(rate(warmpath_first_query_total{%[1]s}[$__rate_interval]))`, sel), "{{warmup}}"))))

	d.WithRow(dashboard.NewRowBuilder("Caches and keys"))
	lookups := sumRate("warmpath_cache_requests_total", "", "cache")
	d.WithPanel(ratio(ts("Cache hit ratio by cache",
		"Hits over all lookups, per cache (principal, usage, items). Misses go to Postgres; a warmed user hits.",
		"percentunit", 8, 8,
		q(orZero(sumRate("warmpath_cache_requests_total", `result="hit"`, "cache"), lookups)+"\n/\n"+lookups, "{{cache}}"))))
	d.WithPanel(ts("Auth requests by method and result",
		"Bearer tokens checked per second: opaque wp_ tokens and JWTs, ok or the 401 code (unavailable: JWKS not known yet).",
		"reqps", 8, 8,
		q(sumRate("warmpath_auth_requests_total", "", "method, result"), "{{method}} {{result}}")))
	d.WithPanel(ts("JWKS refreshes by result",
		"JWKS fetches per second (system warmup, background refresh, unknown kid at most once per AUTH_JWKS_MIN_REFRESH). "+
			"0 without AUTH_JWKS_URL.",
		"ops", 8, 8,
		q(orZero(sumRate("warmpath_jwks_refreshes_total", "", "result"), ""), "{{result}}")))
	return d
}
