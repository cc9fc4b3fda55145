package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// phasePanel describes one phase of warmpath_phase_duration_seconds.
type phasePanel struct {
	phase, title, what string
	threshold          bool   // whether warmpath_alert_threshold_seconds has this phase
	width              uint32 // grid columns; each grid row adds up to 24
}

// phasePanels lists the phases in pipeline order; total first, the number
// the incident was about. With the slow-phase panel they fill two grid rows:
// 12+6+6 and 8+8+8.
var phasePanels = []phasePanel{
	{"total", "Total", "the whole request (auth → usage check → query)", true, 12},
	{"auth", "Auth", "token lookup and principal load (2,488 ms in the original incident)", true, 6},
	{"usage_check", "Usage check", "the atomic quota check and count in Valkey", true, 6},
	{"db", "DB", "Postgres time inside the request (cold users, fallbacks)", true, 8},
	{"query", "Query", "the has-not engine over the user's item set", false, 8},
}

// requestPath is "warmpath — request path": where a request's time goes.
func requestPath() *dashboard.DashboardBuilder {
	const hist = "http_server_request_duration_seconds"
	d := base("warmpath-request-path", "warmpath — request path",
		"Requests by route, the per-phase breakdown against the alert thresholds, slow phases, "+
			"whether warmup at login reaches the first query, and cache efficiency.")

	d.WithRow(dashboard.NewRowBuilder("HTTP"))
	d.WithPanel(ts("Request rate by route",
		"Requests per second by method and route (semconv http.server.request.duration).",
		"reqps", 8, 8,
		q(fmt.Sprintf(`sum by (http_request_method, http_route) (rate(%s_count{%s}[$__rate_interval]))`, hist, sel),
			"{{http_request_method}} {{http_route}}")))
	d.WithPanel(ts("Errors by route and status",
		"4xx and 5xx responses per second. 4xx are the caller's (bad input, auth, quota: 429); "+
			"5xx and 503 are ours (dependencies down, warmup queue full).",
		"reqps", 8, 8,
		q(fmt.Sprintf(`sum by (http_route, http_response_status_code) (rate(%s_count{%s, http_response_status_code=~"[45].."}[$__rate_interval]))`, hist, sel),
			"{{http_response_status_code}} {{http_route}}")))
	d.WithPanel(ratio(ts("Server error ratio (5xx) by route",
		"Share of responses with a 5xx status.",
		"percentunit", 8, 8,
		q(fmt.Sprintf(`sum by (http_route) (rate(%[1]s_count{%[2]s, http_response_status_code=~"5.."}[$__rate_interval]))
/
sum by (http_route) (rate(%[1]s_count{%[2]s}[$__rate_interval]))`, hist, sel),
			"{{http_route}}"))))
	d.WithPanel(ts("Latency p50 / p99 by route",
		"Server-side request duration. Exemplars link to the request's trace.",
		"s", 24, 9,
		q(quantile("0.5", hist+"_bucket", sel, ", http_route"), "p50 {{http_route}}").Exemplar(true),
		q(quantile("0.99", hist+"_bucket", sel, ", http_route"), "p99 {{http_route}}").Exemplar(true)))

	d.WithRow(dashboard.NewRowBuilder("Phases (the [PERF] breakdown)"))
	for _, p := range phasePanels {
		filter := fmt.Sprintf(`%s, phase=%q`, sel, p.phase)
		targets := []*promQuery{
			q(quantile("0.99", "warmpath_phase_duration_seconds_bucket", filter, ""), "p99").Exemplar(true),
			q(quantile("0.5", "warmpath_phase_duration_seconds_bucket", filter, ""), "p50"),
		}
		desc := fmt.Sprintf("p50 and p99 of the %s phase: %s.", p.phase, p.what)
		if p.threshold {
			targets = append(targets, q(fmt.Sprintf(`max(warmpath_alert_threshold_seconds{%s})`, filter), "threshold"))
			desc += " The red dashed line is its alert threshold (warmpath_alert_threshold_seconds); " +
				"p99 above it for 5 minutes fires an alert."
		}
		panel := ts(p.title+" phase p50 / p99", desc, "s", p.width, 8, targets...)
		if p.threshold {
			panel = limitLine(panel, "threshold")
		}
		d.WithPanel(panel)
	}
	d.WithPanel(ts("Slow phases by phase",
		"Requests per second whose phase passed its threshold; each also logs a WARN [PERF] line "+
			"(LOG_LEVEL=warn keeps only those).",
		"reqps", 8, 8,
		q(fmt.Sprintf(`sum by (phase) (rate(warmpath_slow_phase_total{%s}[$__rate_interval]))`, sel), "{{phase}}")))

	d.WithRow(dashboard.NewRowBuilder("Warmup reach and caches"))
	d.WithPanel(ratio(ts("First query after login warmup, by warmup state",
		"Share of first metered queries after a login warmup by the state that warmup was in. "+
			"ready is the goal; running/queued mean the warmup was too slow for the client; "+
			"none means the client did not call POST /api/user/warmup at login, or it failed.",
		"percentunit", 12, 8,
		q(fmt.Sprintf(`sum by (warmup) (rate(warmpath_first_query_total{%[1]s}[$__rate_interval]))
/ ignoring (warmup) group_left ()
sum(rate(warmpath_first_query_total{%[1]s}[$__rate_interval]))`, sel), "{{warmup}}"))))
	d.WithPanel(ratio(ts("Cache hit ratio by cache",
		"Hits over all lookups, per cache (principal, usage, items). Misses go to Postgres.",
		"percentunit", 12, 8,
		q(fmt.Sprintf(`sum by (cache) (rate(warmpath_cache_requests_total{%[1]s, result="hit"}[$__rate_interval]))
/
sum by (cache) (rate(warmpath_cache_requests_total{%[1]s}[$__rate_interval]))`, sel), "{{cache}}"))))
	d.WithPanel(ts("Cache errors by cache",
		"Lookups that failed (Valkey unreachable or timing out); USAGE_FAILURE_MODE decides what the usage cache does then.",
		"reqps", 24, 6,
		q(fmt.Sprintf(`sum by (cache) (rate(warmpath_cache_requests_total{%s, result="error"}[$__rate_interval]))`, sel), "{{cache}}")))
	return d
}
