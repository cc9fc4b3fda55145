package dashboards_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/warmpath/warmpath/dashboards"
)

// metricKind tells which exported series names a contract metric has.
type metricKind int

const (
	gauge     metricKind = iota // the name itself
	counter                     // the name itself (already ends in _total)
	histogram                   // name_bucket, name_count, name_sum
)

// contract is the metric contract of DESIGN.md (Telemetry) as exported by
// app/internal/telemetry (verified there by scrape tests): name → kind and
// the labels the service sets. Dashboards and alerts may use nothing else
// under warmpath_, http_server_ and valkey_. (Which of these the service
// does not export yet is pendingMetrics, in live_test.go.)
var contract = map[string]struct {
	kind   metricKind
	labels []string
}{
	"http_server_request_duration_seconds": {histogram, []string{"http_request_method", "http_route", "http_response_status_code"}},
	"warmpath_phase_duration_seconds":      {histogram, []string{"phase"}},
	"warmpath_alert_threshold_seconds":     {gauge, []string{"phase"}},
	"warmpath_slow_phase_total":            {counter, []string{"phase"}},
	"warmpath_warmup_queue_depth":          {gauge, nil},
	"warmpath_warmup_jobs_total":           {counter, []string{"kind", "result"}},
	"warmpath_warmup_duration_seconds":     {histogram, []string{"kind"}},
	"warmpath_cache_requests_total":        {counter, []string{"cache", "result"}},
	"warmpath_first_query_total":           {counter, []string{"warmup"}},
	"warmpath_usage_sync_pending_users":    {gauge, nil},
	"warmpath_usage_sync_lag_seconds":      {gauge, nil},
	"warmpath_usage_sync_batches_total":    {counter, []string{"result"}},
	"warmpath_db_pool_acquired_conns":      {gauge, nil},
	"warmpath_db_pool_idle_conns":          {gauge, nil},
	"warmpath_db_pool_total_conns":         {gauge, nil},
	"warmpath_db_pool_max_conns":           {gauge, nil},
	"warmpath_db_pool_constructing_conns":  {gauge, nil},
	"warmpath_auth_requests_total":         {counter, []string{"method", "result"}},
	"warmpath_jwks_refreshes_total":        {counter, []string{"result"}},
	"warmpath_idempotent_replays_total":    {counter, nil},
	"warmpath_usage_reconciled_total":      {counter, []string{"outcome"}},
	// The Valkey adapter's command instruments (valkey.Instrument), beside pgx's pool gauges.
	// Not split by command (no operation label: WithOperationMetricAttr
	// would make an attribute set per call).
	"valkey_command_duration_seconds": {histogram, nil},
	"valkey_command_errors_total":     {counter, nil},
}

// targetLabels are added by Prometheus to every series; le is a histogram
// bucket's bound.
var targetLabels = []string{"instance", "job"}

// series maps every exported series name to the labels a selector may match on.
func series() map[string][]string {
	out := map[string][]string{}
	for name, m := range contract {
		labels := append(slices.Clone(m.labels), targetLabels...)
		if m.kind != histogram {
			out[name] = labels
			continue
		}
		out[name+"_bucket"] = append(slices.Clone(labels), "le")
		out[name+"_count"] = labels
		out[name+"_sum"] = labels
	}
	return out
}

var (
	metricRE   = regexp.MustCompile(`\b(?:warmpath_\w+|http_server_\w+|valkey_\w+)`)
	selectorRE = regexp.MustCompile(`\b(warmpath_\w+|http_server_\w+|valkey_\w+)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)`)
)

// exprProblems lists every metric name in expr outside the contract and
// every label matcher on a label its metric does not have, and returns the
// metric names used.
func exprProblems(expr string) (names, problems []string) {
	known := series()
	names = metricRE.FindAllString(expr, -1)
	for _, n := range names {
		if _, ok := known[n]; !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not in the metric contract (DESIGN.md, Telemetry)", n))
		}
	}
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		labels, ok := known[m[1]]
		if !ok {
			continue
		}
		for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, lm[1]) {
				problems = append(problems, fmt.Sprintf("%s has no label %q (has %v)", m[1], lm[1], labels))
			}
		}
	}
	return names, problems
}

// checkExpr fails t for every problem exprProblems finds and returns the
// metric names used.
func checkExpr(t *testing.T, where, expr string) []string {
	t.Helper()
	names, problems := exprProblems(expr)
	for _, p := range problems {
		t.Errorf("%s: %s\n%s", where, p, expr)
	}
	return names
}

func TestGeneratedDashboardsAreCommitted(t *testing.T) {
	files, err := dashboards.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Name] = true
		got, err := os.ReadFile(filepath.Join(dashboards.GrafanaDir, f.Name))
		if err != nil {
			t.Errorf("%s: %v (run `go run ./dashboards/gen`)", f.Name, err)
			continue
		}
		if !bytes.Equal(got, f.JSON) {
			t.Errorf("%s differs from what package dashboards generates; run `go run ./dashboards/gen` and commit the result", f.Name)
		}
	}
	committed, err := filepath.Glob(filepath.Join(dashboards.GrafanaDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range committed {
		if !want[filepath.Base(path)] {
			t.Errorf("%s is not generated by package dashboards: stale? run `go run ./dashboards/gen`", path)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := dashboards.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := dashboards.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("got %d then %d dashboards", len(a), len(b))
	}
	for i := range a {
		if a[i].Name != b[i].Name || !bytes.Equal(a[i].JSON, b[i].JSON) {
			t.Errorf("dashboard %s differs between two Generate calls", a[i].Name)
		}
	}
}

// dash is the part of a dashboard's JSON the tests look at.
type dash struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Type  string `json:"type"`
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int            `json:"id"`
		Type        string         `json:"type"`
		Title       string         `json:"title"`
		Description string         `json:"description"`
		Datasource  *datasourceRef `json:"datasource"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		GridPos struct{ X, W int } `json:"gridPos"`
		Targets []struct {
			Expr       string         `json:"expr"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// generated decodes every generated dashboard.
func generated(t *testing.T) []dash {
	t.Helper()
	files, err := dashboards.Generate()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]dash, len(files))
	for i, f := range files {
		if err := json.Unmarshal(f.JSON, &out[i]); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
	}
	return out
}

func TestDashboardsUseOnlyContractMetrics(t *testing.T) {
	files, err := dashboards.Generate()
	if err != nil {
		t.Fatal(err)
	}
	wantTitles := []string{"warmpath — overview", "warmpath — request phases", "warmpath — warmup",
		"warmpath — usage sync", "warmpath — dependencies & runtime"}
	var titles []string
	used := map[string]bool{}
	for _, f := range files {
		var d dash
		if err := json.Unmarshal(f.JSON, &d); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		titles = append(titles, d.Title)

		hasDS := false
		for _, v := range d.Templating.List {
			if v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus" {
				hasDS = true
			}
			if s, ok := v.Query.(string); ok {
				checkExpr(t, f.Name+" variable "+v.Name, s)
			}
		}
		if !hasDS {
			t.Errorf("%s: no $datasource variable of type prometheus", f.Name)
		}

		ids := map[int]bool{}
		exprs := 0
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q has id %d: missing or not unique", f.Name, p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q overflows the 24-column grid (x %d, w %d)", f.Name, p.Title, p.GridPos.X, p.GridPos.W)
			}
			if p.Type == "row" {
				continue
			}
			if p.Description == "" || p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: panel %q needs a description and a unit (description %q, unit %q)",
					f.Name, p.Title, p.Description, p.FieldConfig.Defaults.Unit)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q does not use $datasource: %+v", f.Name, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", f.Name, p.Title)
			}
			for _, tg := range p.Targets {
				exprs++
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: a query of panel %q does not use $datasource", f.Name, p.Title)
				}
				// Recording rules (warmpath:…) are service-wide SLIs.
				if !strings.Contains(tg.Expr, "vector(") && !strings.Contains(tg.Expr, "warmpath:") &&
					!strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("%s: panel %q ignores $instance: %s", f.Name, p.Title, tg.Expr)
				}
				for _, n := range checkExpr(t, f.Name+" panel "+p.Title, tg.Expr) {
					used[n] = true
				}
			}
		}
		if exprs == 0 {
			t.Errorf("%s: no panel expressions found", f.Name)
		}
	}
	if !slices.Equal(titles, wantTitles) {
		t.Errorf("dashboard titles = %q, want %q", titles, wantTitles)
	}
	// The brief's panels, by the metric each needs.
	for _, name := range []string{
		"http_server_request_duration_seconds_count", "http_server_request_duration_seconds_bucket",
		"warmpath_phase_duration_seconds_bucket", "warmpath_alert_threshold_seconds",
		"warmpath_slow_phase_total", "warmpath_first_query_total", "warmpath_cache_requests_total",
		"warmpath_warmup_queue_depth", "warmpath_warmup_jobs_total", "warmpath_warmup_duration_seconds_bucket",
		"warmpath_usage_sync_pending_users", "warmpath_usage_sync_lag_seconds", "warmpath_usage_sync_batches_total",
		"warmpath_db_pool_acquired_conns", "warmpath_db_pool_max_conns",
		"warmpath_auth_requests_total", "warmpath_jwks_refreshes_total",
		"warmpath_idempotent_replays_total", "warmpath_usage_reconciled_total",
		"valkey_command_duration_seconds_bucket", "valkey_command_errors_total",
	} {
		if !used[name] {
			t.Errorf("no dashboard panel uses %s", name)
		}
	}
}

func TestExprProblemsCatchesDrift(t *testing.T) {
	// The contract checks above must be able to fail.
	for _, expr := range []string{
		`rate(warmpath_phase_duration_total[5m])`,                            // unknown name
		`rate(http_server_request_duration_seconds_count{status="500"}[5m])`, // unknown label
		`warmpath_warmup_queue_depth{phase="auth"}`,                          // label of another metric
		`warmpath_slow_phase_total_bucket`,                                   // histogram suffix on a counter
	} {
		if _, problems := exprProblems(expr); len(problems) == 0 {
			t.Errorf("exprProblems accepted %s", expr)
		}
	}
	valid := `sum by (le) (rate(warmpath_phase_duration_seconds_bucket{phase="auth", instance=~"a"}[5m])) > on () max(warmpath_alert_threshold_seconds{phase="auth"})`
	if names, problems := exprProblems(valid); len(problems) > 0 || len(names) != 2 {
		t.Errorf("exprProblems(%s) = %v, %v; want 2 names, no problems", valid, names, problems)
	}
}

// grafanaVars replaces the variables Grafana fills into panel queries with
// values that suit a test Prometheus scraping every second for a few
// seconds: windows that hold several scrapes, and every instance.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__range", "1m",
	"$__interval", "1s",
	"$instance", ".+",
)

// promtool returns the path of promtool. Without it the test is skipped on a
// developer's machine and fails in CI (CI=true; .ci/run installs it).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		const how = "promtool is not on PATH: install the Debian package `prometheus` " +
			"(apt-get install -y prometheus) or put Prometheus' promtool on PATH"
		if os.Getenv("CI") == "true" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	return path
}

func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "prometheus/alerts.yml"},
		{"test", "rules", "prometheus/alerts_test.yml"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboardExpressionsParse has promtool parse every panel expression
// (as recording rules, with Grafana's variables replaced), so a PromQL
// syntax error fails here instead of as an empty panel.
func TestDashboardExpressionsParse(t *testing.T) {
	bin := promtool(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, d := range generated(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				rules = append(rules, rule{Record: fmt.Sprintf("panel:%d:%d", len(rules), p.ID), Expr: grafanaVars.Replace(tg.Expr)})
			}
		}
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "panels", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "panels.yml")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules on the panel expressions: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%d rules found", len(rules)); !strings.Contains(string(out), want) {
		t.Errorf("promtool output lacks %q:\n%s", want, out)
	}
}

// ruleFile is the part of a Prometheus rule file the tests look at.
type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTests is the part of a promtool test file the tests look at.
type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

func TestAlertRulesAreCompleteAndTested(t *testing.T) {
	var rules ruleFile
	readYAML(t, "prometheus/alerts.yml", &rules)
	var tests ruleTests
	readYAML(t, "prometheus/alerts_test.yml", &tests)

	sections := runbookSections(t)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				checkExpr(t, "recording rule", r.Expr)
				continue
			}
			alerts = append(alerts, r.Alert)
			checkExpr(t, r.Alert, r.Expr)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", r.Alert)
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			if !ok || anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url %q, want %s%s", r.Alert, r.Annotations["runbook_url"], runbookBase, strings.ToLower(r.Alert))
			} else if !sections[anchor] {
				t.Errorf("%s: runbooks.md has no section \"## %s\"", r.Alert, r.Alert)
			}
			delete(sections, anchor)
			if !fires[r.Alert] {
				t.Errorf("%s: no test case in alerts_test.yml where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no test case in alerts_test.yml where it stays quiet", r.Alert)
			}
		}
	}
	want := []string{
		"WarmpathSlowTotal", "WarmpathSlowAuth", "WarmpathSlowUsageCheck", "WarmpathSlowDB",
		"WarmpathSlowPhaseSpike", "WarmupQueueSaturated", "WarmupFailures", "FirstQueryCold",
		"UsageSyncLagging", "UsageSyncErrors", "UsageSyncBatchesHeld",
		"WarmpathDown", "WarmpathValkeyDown", "WarmpathPostgresDown",
		"WarmpathQueryAvailabilityFastBurn", "WarmpathQueryAvailabilitySlowBurn",
		"WarmpathQueryLatencyFastBurn", "WarmpathQueryLatencySlowBurn",
	}
	for _, w := range want {
		if !slices.Contains(alerts, w) {
			t.Errorf("alerts.yml has no alert %s", w)
		}
	}
	for s := range sections {
		t.Errorf("runbooks.md has a section %q for no alert", s)
	}
}

// runbookBase is where every alert's runbook_url points: a section of
// dashboards/runbooks.md, by GitHub's anchor of its "## AlertName" heading.
const runbookBase = "https://github.com/warmpath/warmpath/blob/main/dashboards/runbooks.md#"

// runbookSections returns the anchors of runbooks.md's alert sections.
func runbookSections(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\w+)\s*$`).FindAllStringSubmatch(string(raw), -1) {
		out[strings.ToLower(m[1])] = true
	}
	return out
}
