package dashboards_test

// The tests in this file run the real thing: the service built from ./app on
// its embedded default, loaded briefly, and (where the Debian package
// prometheus is installed) a real Prometheus scraping it every second with
// alerts.yml loaded, so every dashboard query is evaluated against what the
// service really exports.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warmpath/warmpath/internal/loopback"
)

// pendingMetrics are the metric names the dashboards and rules use that the
// service (as these tests run it) does not export, each with the reason.
// This is the one list: the "exists in /metrics" and "every panel has data"
// checks skip a query that uses one of these with t.Log, and fail on any
// other name that is missing. Delete an entry when the service exports it.
var pendingMetrics = map[string]string{
	"warmpath_db_pool_acquired_conns":     "exported only with DATABASE_URL; this test runs the embedded default",
	"warmpath_db_pool_idle_conns":         "exported only with DATABASE_URL; this test runs the embedded default",
	"warmpath_db_pool_total_conns":        "exported only with DATABASE_URL; this test runs the embedded default",
	"warmpath_db_pool_max_conns":          "exported only with DATABASE_URL; this test runs the embedded default",
	"warmpath_db_pool_constructing_conns": "exported only with DATABASE_URL; this test runs the embedded default",
}

// lazyMetrics are exported only after their first event (the service does
// not initialise them at 0): the "exists in /metrics" check skips them, but
// the panels that use them must still read 0, so the data check does not.
var lazyMetrics = map[string]string{
	"warmpath_slow_phase_total": "appears with the first slow request (the service does not initialise it at 0)",
}

// usedNameRE finds the metric names in a PromQL expression that the
// service is expected to export (Prometheus' own, such as up, are not).
var usedNameRE = regexp.MustCompile(`\b(?:warmpath_\w+|http_server_\w+|valkey_\w+|go_\w+|process_\w+)`)

// baseName strips the series suffix of a histogram or summary, so
// pendingMetrics can name the metric once.
func baseName(series string) string {
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if s, ok := strings.CutSuffix(series, suf); ok {
			return s
		}
	}
	return series
}

// pendingIn returns the pending metrics expr uses.
func pendingIn(expr string) []string {
	var out []string
	for _, n := range usedNameRE.FindAllString(expr, -1) {
		if _, ok := pendingMetrics[baseName(n)]; ok && !slices.Contains(out, baseName(n)) {
			out = append(out, baseName(n))
		}
	}
	return out
}

// panelQuery is one query of one dashboard panel.
type panelQuery struct {
	dashboard, panel, expr string
}

// panelQueries lists every panel query of every generated dashboard.
func panelQueries(t *testing.T) []panelQuery {
	t.Helper()
	var out []panelQuery
	for _, d := range generated(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				out = append(out, panelQuery{d.Title, p.Title, tg.Expr})
			}
		}
	}
	return out
}

// ruleExprs lists every expression of alerts.yml (alerts and recording rules).
func ruleExprs(t *testing.T) []string {
	t.Helper()
	var rules ruleFile
	readYAML(t, "prometheus/alerts.yml", &rules)
	var out []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// liveService is the service under test, started once for the package.
type liveService struct {
	http, admin string   // base URLs
	tokens      []string // demo users' tokens
}

var (
	liveOnce sync.Once
	live     *liveService
	liveErr  error
	liveStop = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	liveStop()
	os.Exit(code)
}

// startedService builds ./app and starts it on the embedded default with
// both listeners on loopback port 0, once per test binary.
func startedService(t *testing.T) *liveService {
	t.Helper()
	liveOnce.Do(func() { live, liveErr = startService() })
	if liveErr != nil {
		t.Fatalf("start warmpath: %v", liveErr)
	}
	return live
}

var (
	servingRE = regexp.MustCompile(`warmpath: serving http://(\S+) admin http://(\S+)`)
	tokenRE   = regexp.MustCompile(`warmpath: demo user \S+\s+plan=\S+\s+id=\S+ token=(wp_\S+)`)
)

func startService() (*liveService, error) {
	dir, err := os.MkdirTemp("", "warmpath-dashboards-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "warmpath")
	build := exec.Command("go", "build", "-o", bin, "./app")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./app: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	var env []string
	for _, kv := range os.Environ() {
		// The embedded default: the same on every machine.
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "VALKEY_URL=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "HTTP_ADDR=127.0.0.1:0", "ADMIN_ADDR=127.0.0.1:0", "LOG_LEVEL=warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	liveStop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}
	found := make(chan *liveService, 1)
	go func() {
		s := &liveService{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := tokenRE.FindStringSubmatch(sc.Text()); m != nil {
				s.tokens = append(s.tokens, m[1])
			}
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				s.http, s.admin = "http://"+m[1], "http://"+m[2]
				found <- s
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
	}()
	select {
	case s := <-found:
		if len(s.tokens) == 0 {
			return nil, fmt.Errorf("no demo user tokens before the serving line")
		}
		return s, nil
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("no serving line within 60s")
	}
}

// call sends one request and returns the status (0 on a transport error).
func call(c *http.Client, method, url, token, body string) (int, []byte) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// load drives the flows the dashboards watch until ctx ends: logins (a new
// user, warmup at once, first query shortly after), warm queries, item
// changes, and 4xx (no token, an unknown token, malformed JSON).
func (s *liveService) load(ctx context.Context) {
	c := &http.Client{Timeout: 5 * time.Second}
	const items = `{"items":["https://example.com/a","https://example.com/new"]}`
	for i := 0; ctx.Err() == nil; i++ {
		tok := s.tokens[i%len(s.tokens)]
		call(c, "POST", s.http+"/api/hasNotEngine-ultra-fast", tok, items)
		call(c, "POST", s.http+"/api/user/warmup", tok, "")
		if i%5 == 0 {
			if st, b := call(c, "POST", s.admin+"/admin/users", "", fmt.Sprintf(`{"name":"load%d","plan":"pro"}`, i)); st == http.StatusCreated {
				var u struct{ Token string }
				if json.Unmarshal(b, &u) == nil && u.Token != "" {
					call(c, "POST", s.http+"/api/user/warmup", u.Token, "")
					time.Sleep(20 * time.Millisecond)
					call(c, "POST", s.http+"/api/hasNotEngine-ultra-fast", u.Token, items)
				}
			}
			call(c, "POST", s.http+"/api/items", tok, `{"add":["https://example.com/x"]}`)
			call(c, "POST", s.http+"/api/hasNotEngine-ultra-fast", "", items)
			call(c, "POST", s.http+"/api/hasNotEngine-ultra-fast", "wp_unknown", items)
			call(c, "POST", s.http+"/api/hasNotEngine-ultra-fast", tok, `{"items":`)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exported scrapes /metrics and returns every series name in it.
func (s *liveService) exported(t *testing.T) map[string]bool {
	t.Helper()
	st, body := call(http.DefaultClient, "GET", s.admin+"/metrics", "", "")
	if st != http.StatusOK {
		t.Fatalf("GET /metrics: %d", st)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

func TestEveryMetricUsedIsExported(t *testing.T) {
	s := startedService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	s.load(ctx) // first queries, warmups, sync batches
	cancel()
	time.Sleep(1500 * time.Millisecond) // a sync pass after the last query
	have := s.exported(t)

	exprs := ruleExprs(t)
	for _, pq := range panelQueries(t) {
		exprs = append(exprs, pq.expr)
	}
	exprs = append(exprs, "warmpath_alert_threshold_seconds") // the $instance variable
	checked := map[string]bool{}
	for _, e := range exprs {
		for _, n := range usedNameRE.FindAllString(e, -1) {
			if checked[n] {
				continue
			}
			checked[n] = true
			if why, ok := pendingMetrics[baseName(n)]; ok {
				t.Logf("skip %s: %s", n, why)
				continue
			}
			if why, ok := lazyMetrics[n]; ok && !have[n] {
				t.Logf("not in /metrics yet, allowed: %s: %s", n, why)
				continue
			}
			if !have[n] {
				t.Errorf("%s is used by the dashboards or alerts.yml but not in /metrics", n)
			}
		}
	}
	// A pending metric that has arrived must leave the list, so its
	// panels are checked for data again.
	for n := range pendingMetrics {
		if have[n] || have[n+"_bucket"] {
			t.Errorf("%s is exported now: delete it from pendingMetrics", n)
		}
	}
}

// prometheusBin returns the path of the Prometheus server. Without it the
// test is skipped on a developer's machine and fails in CI (.ci/run
// installs the Debian package prometheus).
func prometheusBin(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		const how = "prometheus is not on PATH: install the Debian package `prometheus` (apt-get install -y prometheus)"
		if os.Getenv("CI") != "" {
			t.Fatal(how)
		}
		t.Skip(how)
	}
	return path
}

// promAPI is a Prometheus HTTP API answer.
type promAPI struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	} `json:"data"`
}

func promQuery(base, expr string) (promAPI, error) {
	var out promAPI
	resp, err := http.PostForm(base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("decode: %w", err)
	}
	return out, nil
}

// TestPanelQueriesHaveData starts a real Prometheus (loopback, scrape every
// second, alerts.yml loaded, temporary data directory) on the loaded
// service and evaluates every panel query at the current instant, with
// Grafana's variables substituted: none may fail or come back empty.
func TestPanelQueriesHaveData(t *testing.T) {
	bin := prometheusBin(t)
	s := startedService(t)

	dir := t.TempDir()
	rules, err := filepath.Abs("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := yaml.Marshal(map[string]any{
		"global":     map[string]any{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
		"rule_files": []string{rules},
		"scrape_configs": []any{map[string]any{
			"job_name":       "warmpath",
			"metrics_path":   "/metrics",
			"static_configs": []any{map[string]any{"targets": []string{strings.TrimPrefix(s.admin, "http://")}}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	prom := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	prom.Stdout, prom.Stderr = &logs, &logs
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Process.Kill(); _ = prom.Wait() })
	base := "http://" + addr

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.load(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Wait for enough scrapes for rate() over the substituted windows, and
	// for the recording rules to have run on them.
	deadline := time.Now().Add(40 * time.Second)
	for {
		r, err := promQuery(base, `count_over_time(up{job="warmpath"}[1m]) >= 8 and on () count(warmpath:slo_query_errors:ratio_rate5m) > 0`)
		if err == nil && r.Status == "success" && len(r.Data.Result) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not collect 8 scrapes of warmpath within 40s (last: %v %+v)\n%s", err, r, logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}

	var withData, empty, skipped int
	var table []string
	for _, pq := range panelQueries(t) {
		expr := grafanaVars.Replace(pq.expr)
		where := pq.dashboard + " / " + pq.panel
		if p := pendingIn(expr); len(p) > 0 {
			skipped++
			table = append(table, fmt.Sprintf("skip   %s: uses %s (pending)", where, strings.Join(p, ", ")))
			t.Logf("skip %s: uses pending %s", where, strings.Join(p, ", "))
			continue
		}
		r, err := promQuery(base, expr)
		switch {
		case err != nil || r.Status != "success":
			t.Errorf("%s: query failed: %v %s\n%s", where, err, r.Error, expr)
			empty++
		case len(r.Data.Result) == 0:
			t.Errorf("%s: no data\n%s", where, expr)
			empty++
			table = append(table, fmt.Sprintf("EMPTY  %s", where))
		default:
			withData++
			table = append(table, fmt.Sprintf("data   %s (%d series)", where, len(r.Data.Result)))
		}
	}
	// The $instance variable: label_values(warmpath_alert_threshold_seconds, instance).
	resp, err := http.Get(base + "/api/v1/label/instance/values?match[]=warmpath_alert_threshold_seconds")
	if err != nil {
		t.Fatal(err)
	}
	var labels struct{ Data []string }
	_ = json.NewDecoder(resp.Body).Decode(&labels)
	resp.Body.Close()
	if len(labels.Data) == 0 {
		t.Error("$instance variable: no instance has warmpath_alert_threshold_seconds")
	}
	sort.Strings(table)
	t.Logf("panel queries: %d with data, %d empty or failing, %d skipped (pending metrics)\n%s",
		withData, empty, skipped, strings.Join(table, "\n"))
}
