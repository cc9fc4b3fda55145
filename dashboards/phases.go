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

// thresholdPhases is a series per phase that has a threshold; grouped
// counters fall back to its zeroes so every phase reads 0, not "No data".
var thresholdPhases = fmt.Sprintf(`max by (phase) (warmpath_alert_threshold_seconds{%s})`, sel)

// requestPhases is "warmpath — request phases": where a request's time goes.
func requestPhases() *dashboard.DashboardBuilder {
	d := base("warmpath-request-phases", "warmpath — request phases",
		"The per-request phase breakdown (the [PERF] log line and Server-Timing header) against each phase's alert threshold, "+
			"and the slow-phase counters. Exemplars on the p99 lines open the slow request's trace in Tempo, and from there its profile.")

	d.WithRow(dashboard.NewRowBuilder("Phases against their thresholds"))
	for _, p := range phasePanels {
		filter := fmt.Sprintf(`%s, phase=%q`, sel, p.phase)
		targets := []*promQuery{
			q(quantile("0.99", phaseHist+"_bucket", filter, ""), "p99").Exemplar(true),
			q(quantile("0.95", phaseHist+"_bucket", filter, ""), "p95"),
			q(quantile("0.5", phaseHist+"_bucket", filter, ""), "p50"),
		}
		desc := fmt.Sprintf("p50, p95 and p99 of the %s phase: %s. Exemplars on p99 open the trace.", p.phase, p.what)
		if p.threshold {
			targets = append(targets, q(fmt.Sprintf(`max(warmpath_alert_threshold_seconds{%s})`, filter), "threshold"))
			desc += " The red dashed line is its alert threshold (warmpath_alert_threshold_seconds, THRESHOLD_* variables); " +
				"p99 above it for 5 minutes fires an alert."
		}
		panel := ts(p.title+" phase p50 / p95 / p99", desc, "s", p.width, 8, targets...)
		if p.threshold {
			panel = limitLine(panel, "threshold")
		}
		d.WithPanel(panel)
	}
	d.WithPanel(ts("Slow phases by phase",
		"Requests per second whose phase passed its threshold; each also logs a WARN [PERF] line with the trace_id "+
			"(LOG_LEVEL=warn keeps only those). 0 on a healthy system.",
		"reqps", 8, 8,
		q(orZero(sumRate("warmpath_slow_phase_total", "", "phase"), thresholdPhases), "{{phase}}")))

	d.WithRow(dashboard.NewRowBuilder("Slow requests"))
	d.WithPanel(ratio(ts("Share of requests slow, by phase",
		"Slow requests in a phase over all requests (WarmpathSlowPhaseSpike fires above 5 % for 2 minutes).",
		"percentunit", 12, 8,
		q(orZero(sumRate("warmpath_slow_phase_total", "", "phase"), thresholdPhases)+
			"\n/ ignoring (phase) group_left ()\n"+sumRate(phaseHist+"_count", `phase="total"`, ""), "{{phase}}"))))
	d.WithPanel(ts("Mean time per phase",
		"Average seconds per request spent in each phase: the stacked shape of the [PERF] breakdown.",
		"s", 12, 8,
		q(sumRate(phaseHist+"_sum", "", "phase")+"\n/\n"+sumRate(phaseHist+"_count", "", "phase"), "{{phase}}")))
	return d
}
