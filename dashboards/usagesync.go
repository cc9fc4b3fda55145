package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// syncLagLimit is the UsageSyncLagging threshold drawn on the lag panel:
// 2 × SYNC_INTERVAL at its default of 1 s (no metric exports the interval).
const syncLagLimit = "2"

// usageSync is "warmpath — usage sync": the write-behind from Valkey to
// Postgres, which must never block a request.
func usageSync() *dashboard.DashboardBuilder {
	d := base("warmpath-usage-sync", "warmpath — usage sync",
		"The usage write-behind from Valkey to Postgres: what is pending, how old it is, what the batches do, "+
			"and the counts settled after an outage.")

	d.WithRow(dashboard.NewRowBuilder("Backlog"))
	d.WithPanel(ts("Users with pending usage",
		"Users whose usage counted in Valkey is not yet in Postgres. Grows while Postgres is down; drains on recovery.",
		"short", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_usage_sync_pending_users{%s})`, sel), "{{instance}}")))
	d.WithPanel(ts("Oldest pending age",
		"Age of the oldest usage delta not yet in Postgres, per instance: the window a Valkey memory loss could lose.",
		"s", 8, 8,
		q(fmt.Sprintf(`max by (instance) (warmpath_usage_sync_lag_seconds{%s})`, sel), "{{instance}}")))
	d.WithPanel(limitLine(ts("Sync lag vs 2 × SYNC_INTERVAL",
		"Worst sync lag against the UsageSyncLagging threshold (2 × SYNC_INTERVAL, drawn for the default 1 s; "+
			"the lag normally stays under one interval).",
		"s", 8, 8,
		q(fmt.Sprintf(`max(warmpath_usage_sync_lag_seconds{%s})`, sel), "lag"),
		q("vector("+syncLagLimit+")", "2 × SYNC_INTERVAL")), "2 × SYNC_INTERVAL"))

	d.WithRow(dashboard.NewRowBuilder("Batches"))
	batches := sumRate("warmpath_usage_sync_batches_total", "", "")
	d.WithPanel(ts("Sync batches by result",
		"Batches per second: applied (written), duplicate (already applied: a retry after a crash, skipped by its idempotency key), "+
			"error (will be retried; UsageSyncErrors).",
		"ops", 8, 8,
		q(sumRate("warmpath_usage_sync_batches_total", "", "result"), "{{result}}")))
	d.WithPanel(ts("Held batches",
		"Batches that could not be applied and are held in Valkey for a retry (error), and batches claimed by an instance that died "+
			"and re-applied by another under the same key (duplicate). UsageSyncBatchesHeld fires when users stay pending "+
			"and nothing is applied for 10 minutes. 0 on a healthy system.",
		"ops", 8, 8,
		q(orZero(sumRate("warmpath_usage_sync_batches_total", `result="error"`, ""), ""), "held for retry (error)"),
		q(orZero(sumRate("warmpath_usage_sync_batches_total", `result="duplicate"`, ""), ""), "re-applied (duplicate)")))
	d.WithPanel(ratio(ts("Batch error ratio",
		"Failed batches over all batches. 0 on a healthy system.",
		"percentunit", 8, 8,
		q(orZero(sumRate("warmpath_usage_sync_batches_total", `result="error"`, ""), "")+"\n/\n"+batches, "error ratio"))))

	d.WithRow(dashboard.NewRowBuilder("Exactly once"))
	d.WithPanel(ts("Reconciled counts by outcome",
		"Counts whose Valkey outcome was unknown (a timeout, a connection lost mid-call), settled once Valkey answered again: "+
			"applied (it had counted) or not_applied (it had not). 0 without a Valkey incident.",
		"ops", 12, 8,
		q(orZero(sumRate("warmpath_usage_reconciled_total", "", "outcome"), ""), "{{outcome}}")))
	d.WithPanel(ts("Idempotent replays",
		"POSTs answered from the stored answer of an earlier request with the same Idempotency-Key (a client retry): "+
			"served once, counted once. 0 without retries.",
		"reqps", 12, 8,
		q(orZero(sumRate("warmpath_idempotent_replays_total", "", ""), ""), "replays")))
	return d
}
