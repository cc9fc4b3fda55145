package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// The routes the checklist is about, as the semconv http_route label has them.
const (
	queryRoute  = "/api/hasNotEngine-ultra-fast"
	warmupRoute = "/api/user/warmup"
)

// The latency histograms.
const (
	httpHist  = "http_server_request_duration_seconds"
	phaseHist = "warmpath_phase_duration_seconds"
)

// SLO objectives of the recording rules in prometheus/alerts.yml.
const (
	availabilityBudget = 0.001 // 99.9 % of queries answered without a 5xx
	latencyBudget      = 0.01  // 99 % of queries under 200 ms (measured at the 0.1 s bucket bound)
)

// overview is "warmpath — overview": what on-call opens first.
func overview() *dashboard.DashboardBuilder {
	d := base("warmpath-overview", "warmpath — overview",
		"Start here: traffic, errors and latency by route, the original checklist at a glance, and the query SLOs' error budget. "+
			"The other warmpath dashboards (links above) go one level deeper.")

	queryP99 := quantile("0.99", httpHist+"_bucket", fmt.Sprintf(`%s, http_route=%q`, sel, queryRoute), "")
	warmupP99 := quantile("0.99", httpHist+"_bucket", fmt.Sprintf(`%s, http_route=%q, http_request_method="POST"`, sel, warmupRoute), "")

	d.WithRow(dashboard.NewRowBuilder("The checklist at a glance"))
	d.WithPanel(st("Warmup API p99 (limit 100 ms)",
		"p99 of POST /api/user/warmup over the last rate interval. It must answer at once (202) and never wait for the warmup; "+
			"the original checklist's limit is 100 ms (our target 2 ms).",
		"s", 4, 5, f64(0.1), false, instant(warmupP99, "p99")))
	d.WithPanel(st("Query p99 (limit 200 ms)",
		"p99 of POST /api/hasNotEngine-ultra-fast over the last rate interval; the original checklist's limit is 200 ms (our target 5 ms).",
		"s", 4, 5, f64(0.2), false, instant(queryP99, "p99")))
	d.WithPanel(st("Sync lag (limit 2 s)",
		"Age of the oldest usage delta not yet in Postgres, worst instance. UsageSyncLagging fires above 2 × SYNC_INTERVAL (2 s at the default).",
		"s", 4, 5, f64(2), false, instant(fmt.Sprintf(`max(warmpath_usage_sync_lag_seconds{%s})`, sel), "lag")))
	d.WithPanel(st("First query after login: warmup ready",
		"Share of first metered queries after a login warmup that found the warmup ready, over the dashboard's range. "+
			"Below 80 % means warming at login is not working (FirstQueryCold); the Warmup dashboard splits it by state.",
		"percentunit", 4, 5, f64(0.8), true,
		instant(fmt.Sprintf(`sum(increase(warmpath_first_query_total{%[1]s, warmup="ready"}[$__range]))
/
sum(increase(warmpath_first_query_total{%[1]s}[$__range]))`, sel), "ready")))
	d.WithPanel(st("Last start: time to first query (upper bound)",
		"Seconds from process start to the first scrape that saw a served query, shortest over the starts in the range, by instance. "+
			"Its resolution is the scrape interval, so it is an upper bound; the exact figure (limit 200 ms) is the perf lab's startup_nonblocking item.",
		"s", 4, 5, nil, false,
		instant(fmt.Sprintf(`min by (instance) (min_over_time((timestamp(sum by (instance) (%[1]s_count{%[2]s, http_route=%[3]q}))
- on (instance)
max by (instance) (process_start_time_seconds{%[2]s}))[$__range:$__interval]))`, httpHist, sel, queryRoute), "{{instance}}")))
	d.WithPanel(st("SLO error budget remaining (30 d)",
		"Share of the 30-day error budget left for query availability (99.9 % without a 5xx) and query latency (99 % under 200 ms), "+
			"from the recording rules in dashboards/prometheus/alerts.yml. Negative: the SLO is broken. The burn-rate alerts fire long before 0.",
		"percentunit", 4, 5, f64(0.25), true,
		instant(fmt.Sprintf(`1 - avg_over_time(warmpath:slo_query_errors:ratio_rate5m[30d]) / %g`, availabilityBudget), "availability"),
		instant(fmt.Sprintf(`1 - avg_over_time(warmpath:slo_query_slow:ratio_rate5m[30d]) / %g`, latencyBudget), "latency")))

	d.WithRow(dashboard.NewRowBuilder("Traffic, errors, latency"))
	d.WithPanel(ts("Request rate by route",
		"Requests per second by method and route (semconv http.server.request.duration).",
		"reqps", 8, 8,
		q(sumRate(httpHist+"_count", "", "http_request_method, http_route"), "{{http_request_method}} {{http_route}}")))
	all := sumRate(httpHist+"_count", "", "http_route")
	d.WithPanel(ratio(ts("Error ratio by route (5xx and 4xx)",
		"Share of responses with a 5xx status (ours: dependencies down, warmup queue full) and a 4xx status "+
			"(the caller's: bad input, auth, quota 429). 0 on a healthy system.",
		"percentunit", 8, 8,
		q(orZero(sumRate(httpHist+"_count", `http_response_status_code=~"5.."`, "http_route"), all)+"\n/\n"+all, "5xx {{http_route}}"),
		q(orZero(sumRate(httpHist+"_count", `http_response_status_code=~"4.."`, "http_route"), all)+"\n/\n"+all, "4xx {{http_route}}"))))
	d.WithPanel(ts("Query SLO burn rate",
		"How fast the query SLOs' error budgets burn (1 = exactly the budget over 30 days). "+
			"The fast-burn alerts fire at 14.4 (1 h and 5 m windows), the slow-burn ones at 6 (6 h and 30 m).",
		"short", 8, 8,
		q(fmt.Sprintf(`warmpath:slo_query_errors:ratio_rate1h / %g`, availabilityBudget), "availability 1h"),
		q(fmt.Sprintf(`warmpath:slo_query_slow:ratio_rate1h / %g`, latencyBudget), "latency 1h"),
		q("vector(14.4)", "fast burn"),
		q("vector(6)", "slow burn")))
	d.WithPanel(ts("Latency p50 / p95 / p99 by route",
		"Server-side request duration by route. Exemplars (the dots) open the request's trace in Tempo.",
		"s", 24, 9,
		q(quantile("0.5", httpHist+"_bucket", sel, ", http_route"), "p50 {{http_route}}").Exemplar(true),
		q(quantile("0.95", httpHist+"_bucket", sel, ", http_route"), "p95 {{http_route}}").Exemplar(true),
		q(quantile("0.99", httpHist+"_bucket", sel, ", http_route"), "p99 {{http_route}}").Exemplar(true)))
	return d
}
