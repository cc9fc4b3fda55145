package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/warmpath/warmpath/internal/cli"
	"github.com/warmpath/warmpath/internal/ctxtime"
)

// errSoakFailed makes soak exit non-zero when a resource keeps growing,
// p99 drifts or too many requests fail.
var errSoakFailed = errors.New("soak: failed")

// The soak rules. A resource "keeps growing" when, after a warm-up third
// (caches filling, pools opening, the heap finding its GC rhythm), the
// median of the last third of the remaining samples exceeds the median of
// the first third by more than max(Rel × that median, Abs), and the middle
// third's median has itself risen by at least a quarter of that growth, so
// that the rise runs through the whole run. Medians of thirds ignore the GC
// sawtooth and single spikes; the absolute floor keeps noise on small values
// (a few goroutines, a few descriptors) from failing; the middle third
// tells a sustained climb from one late step.
var soakRules = []trendRule{
	{Metric: "heap_inuse", Unit: "MiB", Rel: 0.25, Abs: 8},
	{Metric: "goroutines", Unit: "", Rel: 0.10, Abs: 25},
	{Metric: "open_fds", Unit: "", Rel: 0.10, Abs: 25},
	{Metric: "tcp_conns", Unit: "", Rel: 0.10, Abs: 25},
}

// p99 drift: the last third's windowed p99 over the first third's (after
// the warm-up third, medians of the windows) above driftRatio fails, if the
// middle third has risen by at least a quarter of that too (as for the
// resources: a drift runs through the run; the tail of another process's
// work on the machine, e.g. the database writing out what the run before
// left, lifts every endpoint for a stretch of seconds and then goes),
// unless it stays under driftFloorMs:
// on a shared 2-core machine a ~1 ms p99 moves by 1.5× with scheduling
// noise alone, and a p99 under the 5 ms query target is not a regression a
// user can see.
const (
	driftRatio   = 1.5
	driftFloorMs = 5.0
)

// trendRule is when a series counts as growing.
type trendRule struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"`
	Rel    float64 `json:"rel"`
	Abs    float64 `json:"abs"`
}

// trendResult is a series judged by its rule.
type trendResult struct {
	trendRule
	Samples     int     `json:"samples"`
	FirstMedian float64 `json:"firstMedian"`
	MidMedian   float64 `json:"midMedian"`
	LastMedian  float64 `json:"lastMedian"`
	Growth      float64 `json:"growth"`
	Allowed     float64 `json:"allowed"`
	Growing     bool    `json:"growing"`
	Note        string  `json:"note,omitempty"`
}

// thirds drops the first third of xs (the warm-up) and splits the rest
// into three parts, in order.
func thirds(xs []float64) (a, b, c []float64) {
	rest := xs[len(xs)/3:]
	n := len(rest)
	return rest[:n/3], rest[n/3 : 2*n/3], rest[2*n/3:]
}

// judgeTrend applies rule to a series (in sample order).
func judgeTrend(rule trendRule, series []float64) trendResult {
	r := trendResult{trendRule: rule, Samples: len(series)}
	if len(series) < 9 {
		r.Note = "too few samples to judge (need 9: a warm-up third and three of the rest)"
		return r
	}
	a, b, c := thirds(series)
	r.FirstMedian, r.MidMedian, r.LastMedian = median(a), median(b), median(c)
	r.Growth = r.LastMedian - r.FirstMedian
	r.Allowed = math.Max(rule.Rel*r.FirstMedian, rule.Abs)
	r.Growing = r.Growth > r.Allowed && sustained(r.FirstMedian, r.MidMedian, r.LastMedian)
	return r
}

// sustained reports whether a rise from first to last runs through the
// middle: the middle has risen by at least a quarter of it. One late step
// has not.
func sustained(first, mid, last float64) bool { return mid-first >= (last-first)/4 }

// partBounds is where the three parts after the warm-up third of a run of
// length d begin and end.
func partBounds(d time.Duration) [4]time.Duration {
	third := d / 3
	part := (d - third) / 3
	return [4]time.Duration{third, third + part, third + 2*part, d}
}

// driftResult is the p99 drift check.
type driftResult struct {
	FirstP99Ms float64 `json:"firstP99Ms"` // median of the first third's window p99s
	MidP99Ms   float64 `json:"midP99Ms"`   // median of the middle third's window p99s
	LastP99Ms  float64 `json:"lastP99Ms"`  // median of the last third's window p99s
	Ratio      float64 `json:"ratio"`
	Drifted    bool    `json:"drifted"`
	// The pooled p99 of every request of each third, for the record: one
	// neighbour's CPU burst decides it.
	PooledFirstP99Ms float64 `json:"pooledFirstP99Ms"`
	PooledLastP99Ms  float64 `json:"pooledLastP99Ms"`
	Rule             string  `json:"rule"`
	// Endpoints is the same comparison for each endpoint of the mix, for
	// the record (which one moved); only the whole load decides.
	Endpoints []endpointDrift `json:"endpoints,omitempty"`
}

// endpointDrift is one endpoint's share of the drift check.
type endpointDrift struct {
	Path       string  `json:"path"`
	FirstP99Ms float64 `json:"firstP99Ms"`
	MidP99Ms   float64 `json:"midP99Ms"`
	LastP99Ms  float64 `json:"lastP99Ms"`
}

// judgeDrift compares the first, middle and last third (after a warm-up
// third) of a run of length d by the median of their windows' p99s
// (windows of width w): a real drift raises every window from the middle
// on, a burst from another process on the machine raises one or two, which
// the median ignores, and a stretch of the machine's other work confined to
// the last third leaves the middle where it was.
func judgeDrift(samples []Sample, d, w time.Duration) driftResult {
	r := driftResult{Rule: fmt.Sprintf("after a warm-up third, the median of the last third's per-%s-window p99s > %.1f × that of the first third and ≥ %.0f ms, and the middle third's median has risen by at least a quarter of that", w, driftRatio, driftFloorMs)}
	r.FirstP99Ms, r.MidP99Ms, r.LastP99Ms = windowThirds(samples, d, w)
	b := partBounds(d)
	var first, last []time.Duration
	for _, s := range samples {
		switch {
		case s.At >= b[0] && s.At < b[1]:
			first = append(first, s.Latency)
		case s.At >= b[2]:
			last = append(last, s.Latency)
		}
	}
	slices.Sort(first)
	slices.Sort(last)
	r.PooledFirstP99Ms, r.PooledLastP99Ms = ms(Percentile(first, 99)), ms(Percentile(last, 99))
	if r.FirstP99Ms > 0 {
		r.Ratio = r.LastP99Ms / r.FirstP99Ms
	}
	r.Drifted = r.LastP99Ms > driftRatio*r.FirstP99Ms && r.LastP99Ms >= driftFloorMs && sustained(r.FirstP99Ms, r.MidP99Ms, r.LastP99Ms)
	return r
}

// windowThirds is the median window p99 of each third after the warm-up
// third (windows wholly inside it only).
func windowThirds(samples []Sample, d, w time.Duration) (first, mid, last float64) {
	bounds := partBounds(d)
	var parts [3][]float64
	for _, win := range Windows(samples, w) {
		at := time.Duration(win.StartS * float64(time.Second))
		for i := range parts {
			if at >= bounds[i] && at+w <= bounds[i+1] {
				parts[i] = append(parts[i], win.P99Ms)
			}
		}
	}
	return median(parts[0]), median(parts[1]), median(parts[2])
}

// endpointDrifts is the drift comparison of each endpoint in samples.
func endpointDrifts(samples []Sample, d, w time.Duration, paths ...string) []endpointDrift {
	var out []endpointDrift
	for _, p := range paths {
		var xs []Sample
		for _, s := range samples {
			if strings.HasSuffix(s.URL, p) {
				xs = append(xs, s)
			}
		}
		if len(xs) == 0 {
			continue
		}
		e := endpointDrift{Path: p}
		e.FirstP99Ms, e.MidP99Ms, e.LastP99Ms = windowThirds(xs, d, w)
		out = append(out, e)
	}
	return out
}

// soakSample is one reading of the service's resources.
type soakSample struct {
	AtS        float64  `json:"atS"`
	HeapMiB    *float64 `json:"heapInuseMiB,omitempty"`
	Goroutines *float64 `json:"goroutines,omitempty"`
	OpenFDs    *float64 `json:"openFds,omitempty"`
	TCPConns   *float64 `json:"tcpConns,omitempty"`
}

// SoakReport is perf/out/soak.json.
type SoakReport struct {
	Version   int           `json:"version"`
	StartedAt time.Time     `json:"startedAt"`
	Backend   string        `json:"backend"`
	Pass      bool          `json:"pass"`
	DurationS float64       `json:"durationS"`
	Workload  string        `json:"workload"`
	Sources   string        `json:"sources"`
	LoadAvg   [2]float64    `json:"loadAvg1mStartEnd"`
	Rules     string        `json:"rules"`
	Trends    []trendResult `json:"trends"`
	Drift     driftResult   `json:"p99Drift"`
	Load      Summary       `json:"load"`
	Windows   []Window      `json:"windows"`
	Samples   []soakSample  `json:"samples"`
	Failures  []string      `json:"failures"`
}

func runSoak(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		duration   = fs.Duration("duration", 10*time.Minute, "how long the steady load runs")
		rate       = fs.Int("rate", 300, "constant arrival rate, requests per second (80% queries, 10% item writes, 10% warmups)")
		users      = fs.Int("users", 200, "warm users the load spreads over")
		items      = fs.Int("items", 100, "items per user")
		interval   = fs.Duration("interval", 0, "resource sampling interval (0: duration/30, between 1s and 5s)")
		target     = fs.String("target", "", "public API base URL of a running stack (default: build and start the service)")
		admin      = fs.String("admin", "", "admin API base URL of the running stack (with --target)")
		adminToken = fs.String("admin-token", getenv("ADMIN_TOKEN"), "admin API bearer token (default $ADMIN_TOKEN)")
		pid        = fs.Int("pid", 0, "with --target: the service's pid on this machine, for /proc fd and socket counts")
		out        = fs.String("out", "", "directory for soak.json and the service log (default <module root>/perf/out)")
		logLevel   = fs.String("log-level", "warn", "LOG_LEVEL of the service soak starts")
	)
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if (*target == "") != (*admin == "") {
		return cli.Usage(errors.New("--target and --admin go together"))
	}
	if *duration < 9*time.Second || *rate < 1 || *users < 1 {
		return cli.Usage(errors.New("--duration must be at least 9s, --rate and --users positive"))
	}
	every := *interval
	if every <= 0 {
		every = min(max(*duration/30, time.Second), 5*time.Second)
	}
	if *out == "" {
		*out = "perf/out"
		if root, err := moduleRoot(); err == nil {
			*out = filepath.Join(root, "perf", "out")
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("soak: out dir: %w", err)
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "soak: "+format+"\n", a...) }

	rep := SoakReport{Version: 1, StartedAt: time.Now().UTC(), Backend: "external"}
	c := NewClient(*target, *admin, *adminToken)
	procPid := *pid
	if *target == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		tmp, err := os.MkdirTemp("", "warmpath-soak-")
		if err != nil {
			return fmt.Errorf("soak: temp dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		logf("building ./app")
		bin, err := build(ctx, root, tmp, stderr)
		if err != nil {
			return err
		}
		backend := &Backend{DatabaseURL: getenv("DATABASE_URL"), ValkeyURL: getenv("VALKEY_URL")}
		rep.Backend = backend.Name()
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := backend.Cleanup(cctx); err != nil {
				logf("cleanup: %v", err)
			}
		}()
		iso, err := backend.Isolate(ctx)
		if err != nil {
			return err
		}
		env := map[string]string{"LOG_LEVEL": *logLevel}
		for k, v := range iso {
			env[k] = v
		}
		svc, err := startService(ctx, bin, env, filepath.Join(*out, "soak-service.log"))
		if err != nil {
			return err
		}
		defer func() {
			if err := svc.Stop(30 * time.Second); err != nil {
				logf("service: %v", err)
			}
		}()
		c = NewClient(svc.Public, svc.Admin, "")
		procPid = svc.Pid()
	}
	rep.Sources = "heap: go_memstats_heap_inuse_bytes, goroutines: go_goroutines (admin /metrics); "
	if procPid > 0 {
		rep.Sources += fmt.Sprintf("fds and TCP connections: /proc/%d/fd (all, and sockets)", procPid)
	} else {
		rep.Sources += "fds: process_open_fds (admin /metrics); TCP connections: not measurable without --pid"
	}

	logf("provisioning and warming %d users (%d items each)", *users, *items)
	spec := pro("soak", *items)
	spec.Warm = true
	us, err := c.Provision(ctx, *users, 16, spec)
	if err != nil {
		return err
	}
	if err := c.WaitQuiet(ctx, 2*time.Minute); err != nil {
		return err
	}

	rep.Workload = fmt.Sprintf("open model: %d req/s for %s over %d warm users (%d items each): 80%% queries, 10%% POST /api/items (add one, remove one: the set stays bounded), 10%% POST /api/user/warmup; resources sampled every %s", *rate, *duration, len(us), *items, every)
	logf("%s", rep.Workload)
	rep.LoadAvg[0] = loadAvg()
	sampler := startResourceSampler(ctx, c, procPid, every)
	run := Attack(ctx, AttackSpec{Name: "soak", Rate: *rate, Duration: *duration, Workers: 32, Targeter: rotate(soakTargets(c.Target, us))})
	rep.Samples = sampler.stop()
	rep.LoadAvg[1] = loadAvg()
	if ctx.Err() != nil {
		return fmt.Errorf("soak: %w", ctx.Err())
	}
	rep.DurationS = duration.Seconds()
	rep.Load = run.Summary
	rep.Windows = Windows(run.Samples, every)
	analyzeSoak(&rep, run.Samples, *duration, every)

	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("soak: encode: %w", err)
	}
	path := filepath.Join(*out, "soak.json")
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s\n", path)
	if !rep.Pass {
		return errSoakFailed
	}
	return nil
}

// analyzeSoak judges the samples and the load and fills the verdicts.
func analyzeSoak(rep *SoakReport, samples []Sample, d, w time.Duration) {
	rep.Rules = fmt.Sprintf("a resource keeps growing when, after a warm-up third, the median of the last third of the rest exceeds the median of its first third by more than max(rel × that median, abs) and the middle third has risen by at least a quarter of that; p99 drifts when %s; and ≥ 99%% of requests must get a 2xx", judgeDrift(nil, d, w).Rule)
	series := map[string][]float64{}
	for _, s := range rep.Samples {
		for name, p := range map[string]*float64{"heap_inuse": s.HeapMiB, "goroutines": s.Goroutines, "open_fds": s.OpenFDs, "tcp_conns": s.TCPConns} {
			if p != nil {
				series[name] = append(series[name], *p)
			}
		}
	}
	rep.Failures = []string{}
	for _, rule := range soakRules {
		xs, ok := series[rule.Metric]
		if !ok {
			rep.Trends = append(rep.Trends, trendResult{trendRule: rule, Note: "not measured"})
			continue
		}
		t := judgeTrend(rule, xs)
		rep.Trends = append(rep.Trends, t)
		if t.Growing {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s keeps growing: %s → %s → %s (allowed +%s)", rule.Metric, trimFloat(t.FirstMedian), trimFloat(t.MidMedian), trimFloat(t.LastMedian), trimFloat(t.Allowed)))
		}
	}
	rep.Drift = judgeDrift(samples, d, w)
	rep.Drift.Endpoints = endpointDrifts(samples, d, w, pathQuery, pathItems, pathWarmup)
	if rep.Drift.Drifted {
		rep.Failures = append(rep.Failures, fmt.Sprintf("p99 drifted: %.2f ms → %.2f ms → %.2f ms (×%.2f)", rep.Drift.FirstP99Ms, rep.Drift.MidP99Ms, rep.Drift.LastP99Ms, rep.Drift.Ratio))
	}
	if rep.Load.Requests == 0 || rep.Load.Success < minSuccess {
		rep.Failures = append(rep.Failures, fmt.Sprintf("only %.2f%% of %d requests got a 2xx", 100*rep.Load.Success, rep.Load.Requests))
	}
	rep.Pass = len(rep.Failures) == 0
}

// WriteTable prints the verdicts.
func (r SoakReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "soak: %s, %s, %d requests, success %.2f%%, p50 %.2f ms, p99 %.2f ms (load avg %.2f → %.2f)\n\n", r.Backend, time.Duration(r.DurationS*float64(time.Second)), r.Load.Requests, 100*r.Load.Success, r.Load.P50Ms, r.Load.P99Ms, r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintln(tw, "METRIC\tFIRST\tMIDDLE\tLAST\tGROWTH\tALLOWED\tRESULT")
	for _, t := range r.Trends {
		res := "ok"
		switch {
		case t.Growing:
			res = "GROWING"
		case t.Note != "":
			res = t.Note
		}
		u := ""
		if t.Unit != "" {
			u = " " + t.Unit
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s%s\t%s%s\t%+.1f\t%s\t%s\n", t.Metric, trimFloat(t.FirstMedian), u, trimFloat(t.MidMedian), u, trimFloat(t.LastMedian), u, t.Growth, "+"+trimFloat(t.Allowed), res)
	}
	res := "ok"
	if r.Drift.Drifted {
		res = "DRIFTED"
	}
	fmt.Fprintf(tw, "p99\t%.2f ms\t%.2f ms\t%.2f ms\t×%.2f\t×%.1f (if ≥ %.0f ms)\t%s\n", r.Drift.FirstP99Ms, r.Drift.MidP99Ms, r.Drift.LastP99Ms, r.Drift.Ratio, driftRatio, driftFloorMs, res)
	for _, e := range r.Drift.Endpoints {
		fmt.Fprintf(tw, "  p99 %s\t%.2f ms\t%.2f ms\t%.2f ms\t\t\t(for the record)\n", e.Path, e.FirstP99Ms, e.MidP99Ms, e.LastP99Ms)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Pass {
		_, err := fmt.Fprintln(w, "\nsoak: PASS")
		return err
	}
	fmt.Fprintln(w, "\nsoak: FAIL")
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  "+f)
	}
	return nil
}

// soakTargets is the soak's request mix, per user: eight queries, one item
// change that adds one item and removes another (replayed, it changes
// nothing more, so the set stays bounded), one warmup.
func soakTargets(target string, users []User) []vegeta.Target {
	var out []vegeta.Target
	q := queryTargets(target, users, 10) // 4 variants per user
	for i, u := range users {
		for v := range 8 {
			out = append(out, q[(v%4)*len(users)+i])
		}
		body, _ := json.Marshal(map[string][]string{"add": {"soak-" + strconv.Itoa(i%7)}, "remove": {"soak-" + strconv.Itoa((i+3)%7)}})
		out = append(out, vegeta.Target{Method: http.MethodPost, URL: target + pathItems, Body: body, Header: bearer(u.Token)})
		out = append(out, vegeta.Target{Method: http.MethodPost, URL: target + pathWarmup, Header: bearer(u.Token)})
	}
	return out
}

// resourceSampler reads the service's resources every interval.
type resourceSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []soakSample
}

func startResourceSampler(ctx context.Context, c *Client, pid int, every time.Duration) *resourceSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &resourceSampler{cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		for {
			x := soakSample{AtS: math.Round(time.Since(start).Seconds()*100) / 100}
			if m, err := c.Metrics(ctx); err == nil {
				if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
					v /= 1 << 20
					x.HeapMiB = &v
				} else if v, ok := m["go_memstats_heap_alloc_bytes"]; ok {
					v /= 1 << 20
					x.HeapMiB = &v
				}
				if v, ok := m["go_goroutines"]; ok {
					x.Goroutines = &v
				}
				if v, ok := m["process_open_fds"]; ok && pid == 0 {
					x.OpenFDs = &v
				}
			}
			if pid > 0 {
				if fds, socks, err := fdCounts(pid); err == nil {
					f, so := float64(fds), float64(socks)
					x.OpenFDs, x.TCPConns = &f, &so
				}
			}
			s.mu.Lock()
			s.samples = append(s.samples, x)
			s.mu.Unlock()
			if ctxtime.Sleep(ctx, every) != nil {
				return
			}
		}
	}()
	return s
}

func (s *resourceSampler) stop() []soakSample {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// Metrics reads the admin /metrics (Prometheus text format) into the
// values of its unlabelled samples.
func (c *Client) Metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if c.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics keeps the unlabelled samples of a Prometheus text page.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}
