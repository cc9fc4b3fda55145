package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	warmupTitle      = "Warmup API (POST /api/user/warmup) p99 at a constant rate across many users"
	queryTitle       = "Query API p99 for warm users at a constant rate, and the first query after warmup is ready"
	syncTitle        = "A forced usage sync of many pending users does not slow queries (p99 with ≤ 1.25 × without)"
	improvementTitle = "Cold-user first query: async warmup (default) beats the blocking inline design"
)

// bootResult is one measured process start.
type bootResult struct {
	LivezMs      float64      `json:"livezMs"`
	FirstQueryMs float64      `json:"firstQueryMs"`
	Warmup       SystemWarmup `json:"systemWarmupAtFirstQuery"`
	StillWarming bool         `json:"stillWarmingAtFirstQuery"`
	// ServiceSaysMs is the "started in" of the serving line: the service's
	// own clock, from its first line of code, so livez minus this is process
	// exec and runtime initialisation.
	ServiceSaysMs float64 `json:"serviceReportedStartMs"`
	// HotUsersListed is GET /admin/warmup once the hot-user step has read
	// its list (shows the size of the set still being warmed), and when.
	HotUsersListed   *SystemWarmup `json:"systemWarmupWhenHotUsersListed,omitempty"`
	HotUsersListedMs float64       `json:"hotUsersListedMs,omitempty"`
}

// startup measures process start → first /livez and → first successful
// query, and proves through GET /admin/warmup that system warmup had not
// finished by then. With a persistent backend it first makes a real hot-user
// set (users with items, queried, synced so they count as recently active)
// and restarts the service on an empty cache with one warmup worker, so the
// hot users are still warming when the first requests arrive.
func (v *verifier) startup(ctx context.Context, it *Item) error {
	it.Limit = Value{seedLivezMs, "ms"}
	it.Measured.Unit = "ms"
	env := map[string]string{}
	var token string
	if v.backend.Persistent() {
		iso, err := v.backend.Isolate(ctx)
		if err != nil {
			return err
		}
		prep, err := startService(ctx, v.bin, v.serviceEnv(iso, map[string]string{"WARMUP_STRATEGY": "off"}), filepath.Join(v.logs, "startup-prep.log"))
		if err != nil {
			return err
		}
		v.logf("%s: provisioning %d hot users (%d items, one query each)", idStartup, v.cfg.hotUsers, v.cfg.hotItems)
		c := NewClient(prep.Public, prep.Admin, "")
		spec := pro("hot", v.cfg.hotItems)
		spec.Query = true
		users, err := c.Provision(ctx, v.cfg.hotUsers, v.cfg.provisioners, spec)
		if err == nil {
			// Synced usage is what makes a user "recently active".
			err = c.WaitSynced(ctx, 2*time.Minute)
		}
		if serr := prep.Stop(30 * time.Second); serr != nil {
			v.logf("startup prep service: %v", serr)
		}
		if err != nil {
			return err
		}
		token = users[len(users)-1].Token
		env = v.serviceEnv(iso, map[string]string{
			"SYSTEM_WARMUP_HOT_USERS": strconv.Itoa(v.cfg.hotUsers),
			"WARMUP_WORKERS":          "1",
			"WARMUP_QUEUE_SIZE":       strconv.Itoa(max(2*v.cfg.hotUsers+100, 10000)),
			// No delay: the hot-user warmup is already under way (and
			// competing for the CPU) when the first requests arrive.
			"SYSTEM_WARMUP_DELAY": "0s",
		})
		it.Details["hotUsers"] = v.cfg.hotUsers
		it.Details["serviceEnv"] = map[string]string{"SYSTEM_WARMUP_HOT_USERS": env["SYSTEM_WARMUP_HOT_USERS"], "WARMUP_WORKERS": "1", "SYSTEM_WARMUP_DELAY": "0s", "VALKEY_PREFIX": "fresh per boot (empty cache)"}
	} else {
		iso, err := v.backend.Isolate(ctx)
		if err != nil {
			return err
		}
		env = v.serviceEnv(iso, nil)
		it.Details["hotUsers"] = "the embedded default's demo users only (nothing persists across a restart)"
	}

	var boots []bootResult
	pass := true
	for i := range v.cfg.boots {
		if v.backend.Persistent() {
			env["VALKEY_PREFIX"] = v.backend.NewPrefix() // an empty cache: the hot users must be warmed again
		}
		b, err := v.boot(ctx, env, token, filepath.Join(v.logs, fmt.Sprintf("startup-%d.log", i)))
		if err != nil {
			return err
		}
		v.logf("%s: boot %d: livez %.1fms, first query %.1fms, system warmup %s, queue depth %d, running %d",
			idStartup, i, b.LivezMs, b.FirstQueryMs, b.Warmup.State, b.Warmup.Queue.Depth, b.Warmup.Queue.Running)
		if l := b.HotUsersListed; l != nil {
			v.logf("%s: boot %d: at %.1fms the hot-user step listed %d users, %d enqueued, queue depth %d", idStartup, i, b.HotUsersListedMs, l.HotUsers.Found, l.HotUsers.Enqueued, l.Queue.Depth)
		}
		boots = append(boots, b)
		it.Measured.Value = max(it.Measured.Value, b.LivezMs)
		pass = pass && b.LivezMs <= seedLivezMs && b.StillWarming
	}
	worstQuery := 0.0
	for _, b := range boots {
		worstQuery = max(worstQuery, b.FirstQueryMs)
	}
	it.Pass = pass
	it.Details["boots"] = boots
	it.Details["measured"] = "worst process start → first 200 from /livez over the boots"
	it.Details["worstFirstQueryMs"] = worstQuery
	it.Details["targets"] = map[string]any{
		"livezMs": targetLivezMs, "livezMet": it.Measured.Value <= targetLivezMs,
		"firstQueryMs": targetFirstMs, "firstQueryMet": worstQuery <= targetFirstMs,
	}
	it.Details["passRule"] = "every boot: livez ≤ 100 ms and GET /admin/warmup, read right after the first successful query, shows system warmup not finished (idle/running) or warmup jobs still queued or running"
	var ch Chart
	ch.Title, ch.XLabel, ch.YLabel = "Process start → first success", "boot", "ms"
	lv, fq := ChartSeries{Name: "/livez"}, ChartSeries{Name: "first query"}
	for i, b := range boots {
		ch.Categories = append(ch.Categories, strconv.Itoa(i+1))
		lv.Points = append(lv.Points, [2]float64{float64(i), b.LivezMs})
		fq.Points = append(fq.Points, [2]float64{float64(i), b.FirstQueryMs})
	}
	if len(boots) == 1 {
		ch.Categories = append(ch.Categories, "")
	}
	ch.Series = []ChartSeries{lv, fq}
	ch.Lines = []HMarker{{Y: targetLivezMs, Label: "livez target 50 ms"}, {Y: targetFirstMs, Label: "first query target 200 ms"}}
	it.Charts = []Chart{ch}
	return nil
}

// boot starts the service once and measures it from the outside.
func (v *verifier) boot(ctx context.Context, env map[string]string, token, logPath string) (bootResult, error) {
	var b bootResult
	svc, err := launch(v.bin, env, logPath)
	if err != nil {
		return b, err
	}
	defer func() {
		if err := svc.Stop(30 * time.Second); err != nil {
			v.logf("startup service: %v", err)
		}
	}()
	probe := &http.Client{Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Poll /livez from the moment the process starts; connection refused
	// means "not yet".
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, svc.Public+pathLivez, nil)
		resp, err := probe.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				b.LivezMs = ms(time.Since(svc.Launched))
				break
			}
		}
		if err := pause(ctx, 500*time.Microsecond); err != nil {
			return b, fmt.Errorf("no 200 from /livez: %w", err)
		}
	}
	c := NewClient(svc.Public, svc.Admin, "")
	c.HTTP = probe
	body := queryItems(0, 4)
	for {
		tok := token
		if tok == "" {
			tok = svc.DemoToken("bob")
		}
		if tok != "" {
			if err := c.Query(ctx, User{Token: tok}, body); err == nil {
				b.FirstQueryMs = ms(time.Since(svc.Launched))
				break
			}
		}
		if err := pause(ctx, 500*time.Microsecond); err != nil {
			return b, fmt.Errorf("no successful first query: %w", err)
		}
	}
	sw, err := c.SystemWarmup(ctx)
	if err != nil {
		return b, err
	}
	b.Warmup, b.StillWarming = sw, sw.busy()
	// Evidence of the hot set: poll until the hot-user step has listed its
	// users (or the system warmup is over), for the report only.
	listCtx, cancelList := context.WithTimeout(ctx, 10*time.Second)
	defer cancelList()
	for sw.HotUsers.Found == 0 && sw.busy() {
		if pause(listCtx, 5*time.Millisecond) != nil {
			break
		}
		if next, err := c.SystemWarmup(listCtx); err == nil {
			sw = next
		}
	}
	if sw.HotUsers.Found > 0 {
		b.HotUsersListed, b.HotUsersListedMs = &sw, ms(time.Since(svc.Launched))
	}
	if err := svc.WaitServing(ctx, 30*time.Second); err != nil {
		return b, err
	}
	b.ServiceSaysMs = ms(svc.StartedIn())
	return b, nil
}

// warmupAPI drives POST /api/user/warmup at a constant rate across many
// users: the first requests for each user enqueue a job, later ones find it
// queued, running or ready.
func (v *verifier) warmupAPI(ctx context.Context, c *Client, it *Item) error {
	it.Limit = Value{seedWarmupAPIMs, "ms"}
	it.Measured.Unit = "ms"
	v.logf("%s: provisioning %d users", idWarmupAPI, v.cfg.warmupUsers)
	users, err := c.Provision(ctx, v.cfg.warmupUsers, v.cfg.provisioners, pro("warm", v.cfg.items))
	if err != nil {
		return err
	}
	if err := c.WaitQuiet(ctx, 2*time.Minute); err != nil {
		return err
	}
	v.logf("%s: %d req/s for %s", idWarmupAPI, v.cfg.warmupRate, v.cfg.warmupDur)
	run := Attack(ctx, AttackSpec{Name: "POST /api/user/warmup", Rate: v.cfg.warmupRate, Duration: v.cfg.warmupDur, Workers: 16, Targeter: rotate(warmupTargets(c.Target, users))})
	// Let the jobs it enqueued finish before the next item measures.
	if err := c.WaitQuiet(ctx, 3*time.Minute); err != nil {
		return err
	}
	s := run.Summary
	it.Measured.Value = s.P99Ms
	it.Pass = s.P99Ms < seedWarmupAPIMs && s.Success >= minSuccess && s.Requests > 0
	it.Details["load"] = s
	it.Details["workload"] = fmt.Sprintf("open model: %d req/s for %s over %d users (%d items each), each user's first request enqueues its warmup", v.cfg.warmupRate, v.cfg.warmupDur, len(users), v.cfg.items)
	it.Details["targets"] = map[string]any{"p99Ms": targetWarmupP99Ms, "met": s.P99Ms <= targetWarmupP99Ms}
	it.Details["passRule"] = "p99 < 100 ms with ≥ 99% 2xx answers"
	it.Charts = []Chart{
		{Title: "Warmup API latency percentiles", XLabel: "percentile", YLabel: "ms", Categories: percentileCategories, LogY: true,
			Series: []ChartSeries{percentileSeries(s.Name, run.Samples)}, Lines: []HMarker{{Y: targetWarmupP99Ms, Label: "target p99 2 ms"}}},
		{Title: "Warmup API p99 per second", XLabel: "s", YLabel: "ms", Series: []ChartSeries{timeSeries("p99", run.Samples, time.Second)}},
	}
	return nil
}

// queryAPI measures warm-user queries: the first query of each user right
// after its warmup reports ready, then a constant-rate load. It returns the
// warm users for the throughput comparison.
func (v *verifier) queryAPI(ctx context.Context, c *Client, it *Item) ([]User, error) {
	it.Limit = Value{seedQueryAPIMs, "ms"}
	it.Measured.Unit = "ms"
	v.logf("%s: provisioning and warming %d users (%d items each)", idQueryAPI, v.cfg.queryUsers, v.cfg.items)
	spec := pro("query", v.cfg.items)
	spec.Warm = true
	users, err := c.Provision(ctx, v.cfg.queryUsers, v.cfg.provisioners, spec)
	if err != nil {
		return nil, err
	}
	if err := c.WaitQuiet(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	targets := queryTargets(c.Target, users, v.cfg.queryItems)
	// Each user's first query, at a modest constant rate: targets[:n] hold
	// one body per user.
	first := Attack(ctx, AttackSpec{Name: "first query after warmup ready", Rate: v.cfg.firstRate, Workers: 8, Targeter: once(targets[:len(users)])})

	v.logf("%s: %d req/s for %s", idQueryAPI, v.cfg.queryRate, v.cfg.queryDur)
	sampler := sampleSync(ctx, c, 250*time.Millisecond)
	run := Attack(ctx, AttackSpec{Name: "warm queries", Rate: v.cfg.queryRate, Duration: v.cfg.queryDur, Workers: 32, Targeter: rotate(targets)})
	lag := sampler.stop()

	s, f := run.Summary, first.Summary
	it.Measured.Value = s.P99Ms
	it.Pass = s.P99Ms <= seedQueryAPIMs && f.P99Ms <= seedQueryAPIMs && s.Success >= minSuccess && f.Success >= minSuccess && s.Requests > 0 && f.Requests > 0
	it.Details["load"] = s
	it.Details["firstQueryAfterReady"] = f
	it.Details["workload"] = fmt.Sprintf("open model: %d req/s for %s over %d warm users (%d items each, %d items per query); first queries: one per user at %d req/s right after GET /api/user/warmup said ready", v.cfg.queryRate, v.cfg.queryDur, len(users), v.cfg.items, v.cfg.queryItems, v.cfg.firstRate)
	it.Details["targets"] = map[string]any{
		"p99Ms": targetQueryP99Ms, "met": s.P99Ms <= targetQueryP99Ms,
		"firstQueryAfterReady": "same p99 as any warm query", "firstQueryAfterReadyP99Ms": f.P99Ms,
	}
	it.Details["syncLagDuringLoad"] = lag.details()
	it.Details["passRule"] = "load p99 ≤ 200 ms and first-query-after-ready p99 ≤ 200 ms, each with ≥ 99% 2xx answers"
	it.Charts = []Chart{
		{Title: "Query latency percentiles", XLabel: "percentile", YLabel: "ms", Categories: percentileCategories, LogY: true,
			Series: []ChartSeries{percentileSeries(s.Name, run.Samples), percentileSeries(f.Name, first.Samples)}, Lines: []HMarker{{Y: targetQueryP99Ms, Label: "target p99 5 ms"}}},
		{Title: "Warm query p99 per second", XLabel: "s", YLabel: "ms", Series: []ChartSeries{timeSeries("p99", run.Samples, time.Second)}},
	}
	return users, nil
}

// throughputResult compares the query endpoint's maximum throughput with the
// bare-Fiber floor, measured in the same run.
type throughputResult struct {
	Method       string  `json:"method"`
	Floor        Summary `json:"floor"`
	Query        Summary `json:"query"`
	Ratio        float64 `json:"ratio"`
	Target       float64 `json:"target"`
	TargetMet    bool    `json:"targetMet"`
	floorSamples []Sample
	querySamples []Sample
}

// throughput runs the closed-loop max-throughput comparison: the floor
// (`perf floor` as a subprocess) first, then the query endpoint with warm
// users, same bodies, same concurrency, same duration.
func (v *verifier) throughput(ctx context.Context, c *Client, users []User) (*throughputResult, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, v.bin.perf, "floor", "--addr", addr)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	floorURL := "http://" + addr
	// Wait until the floor answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Post(floorURL+pathQuery, "application/json", strings.NewReader(`{"items":["a"]}`))
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("floor not answering: %w", err)
		}
		if err := pause(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	r := &throughputResult{
		Method: fmt.Sprintf("closed loop: vegeta rate=0 with %d workers on %d connections, %s each, floor first; same bodies (%d items)", v.cfg.maxWorkers, v.cfg.maxWorkers, v.cfg.maxDur, v.cfg.queryItems),
		Target: floorRatioTarget,
	}
	v.logf("max throughput: floor, then query, %s each with %d workers", v.cfg.maxDur, v.cfg.maxWorkers)
	fl := Attack(ctx, AttackSpec{Name: "floor (bare Fiber)", Duration: v.cfg.maxDur, Workers: v.cfg.maxWorkers, Targeter: rotate(queryTargets(floorURL, users, v.cfg.queryItems))})
	q := Attack(ctx, AttackSpec{Name: "query (warm users)", Duration: v.cfg.maxDur, Workers: v.cfg.maxWorkers, Targeter: rotate(queryTargets(c.Target, users, v.cfg.queryItems))})
	r.Floor, r.Query = fl.Summary, q.Summary
	r.floorSamples, r.querySamples = fl.Samples, q.Samples
	if fl.Summary.Throughput > 0 {
		r.Ratio = q.Summary.Throughput / fl.Summary.Throughput
	}
	r.TargetMet = r.Ratio >= floorRatioTarget
	v.logf("max throughput: floor %.0f/s, query %.0f/s, ratio %.2f", r.Floor.Throughput, r.Query.Throughput, r.Ratio)
	return r, nil
}

// syncSampler polls GET /admin/sync in the background.
type syncSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	start   time.Time
	mu      sync.Mutex
	samples []syncSample
}

type syncSample struct {
	At     time.Duration
	Status SyncStatus
}

func sampleSync(ctx context.Context, c *Client, every time.Duration) *syncSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &syncSampler{cancel: cancel, done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(s.done)
		for {
			if st, err := c.SyncStatus(ctx); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, syncSample{At: time.Since(s.start), Status: st})
				s.mu.Unlock()
			}
			if pause(ctx, every) != nil {
				return
			}
		}
	}()
	return s
}

func (s *syncSampler) stop() *syncSampler {
	s.cancel()
	<-s.done
	return s
}

// details summarises the samples: the largest pending set and lag seen.
func (s *syncSampler) details() map[string]any {
	var maxPending int64
	var maxAge float64
	for _, x := range s.samples {
		maxPending = max(maxPending, x.Status.PendingUsers)
		maxAge = max(maxAge, x.Status.OldestPendingAgeSeconds)
	}
	return map[string]any{"samples": len(s.samples), "maxPendingUsers": maxPending, "maxOldestPendingAgeS": maxAge}
}

// series is the pending-users timeline for a chart.
func (s *syncSampler) series(name string) ChartSeries {
	cs := ChartSeries{Name: name}
	for _, x := range s.samples {
		cs.Points = append(cs.Points, [2]float64{x.At.Seconds(), float64(x.Status.PendingUsers)})
	}
	return cs
}

// syncItem runs the same constant-rate query load twice, the second time
// with a forced sync of many pending users, and compares the p99s.
func (v *verifier) syncItem(ctx context.Context, c *Client, it *Item) error {
	it.Measured.Unit, it.Limit.Unit = "ms", "ms"
	v.logf("%s: provisioning %d warm load users and %d users with a pending delta", idSync, v.cfg.syncLoadUsers, v.cfg.syncUsers)
	spec := pro("syncload", v.cfg.items)
	spec.Warm = true
	load, err := c.Provision(ctx, v.cfg.syncLoadUsers, v.cfg.provisioners, spec)
	if err != nil {
		return err
	}
	start := time.Now()
	pspec := pro("pending", 0)
	pspec.Query = true
	if _, err := c.Provision(ctx, v.cfg.syncUsers, v.cfg.provisioners, pspec); err != nil {
		return err
	}
	provisionS := time.Since(start).Seconds()
	// Their cold first queries enqueued warmups; measure without them.
	if err := c.WaitQuiet(ctx, 5*time.Minute); err != nil {
		return err
	}
	targets := rotate(queryTargets(c.Target, load, v.cfg.queryItems))
	spec2 := AttackSpec{Rate: v.cfg.syncRate, Duration: v.cfg.syncDur, Workers: 32, Targeter: targets}

	v.logf("%s: %d req/s for %s without sync", idSync, v.cfg.syncRate, v.cfg.syncDur)
	spec2.Name = "without sync"
	s1 := sampleSync(ctx, c, 100*time.Millisecond)
	without := Attack(ctx, spec2)
	s1.stop()

	before, err := c.SyncStatus(ctx)
	if err != nil {
		return err
	}
	v.logf("%s: %d pending users; %d req/s for %s with a forced sync at %s", idSync, before.PendingUsers, v.cfg.syncRate, v.cfg.syncDur, v.cfg.syncDur/4)
	spec2.Name = "with forced sync"
	s2 := sampleSync(ctx, c, 100*time.Millisecond)
	var triggerAt, triggerMs float64
	var triggerErr error
	triggered := make(chan struct{})
	go func() {
		defer close(triggered)
		if pause(ctx, spec2.Duration/4) != nil {
			return
		}
		t := time.Now()
		triggerAt = t.Sub(s2.start).Seconds()
		triggerErr = c.TriggerSync(ctx)
		triggerMs = ms(time.Since(t))
	}()
	with := Attack(ctx, spec2)
	<-triggered
	if triggerErr != nil {
		s2.stop()
		return triggerErr
	}
	// The flush is done when what is pending is at most what the load itself
	// added since (one delta per load user).
	drainS := -1.0
	drainCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		s2.mu.Lock()
		for _, x := range s2.samples {
			if x.At.Seconds() >= triggerAt && x.Status.PendingUsers <= int64(len(load)) {
				drainS = x.At.Seconds() - triggerAt
				break
			}
		}
		s2.mu.Unlock()
		if drainS >= 0 || pause(drainCtx, 100*time.Millisecond) != nil {
			break
		}
	}
	s2.stop()
	after, err := c.SyncStatus(ctx)
	if err != nil {
		return err
	}

	p1, p2 := without.Summary.P99Ms, with.Summary.P99Ms
	it.Measured.Value = p2
	it.Limit.Value = syncRatioLimit * p1
	ratio := 0.0
	if p1 > 0 {
		ratio = p2 / p1
	}
	drainedInRun := drainS >= 0 && triggerAt+drainS <= with.Summary.DurationS
	it.Pass = p2 <= syncRatioLimit*p1 && drainS >= 0 && without.Summary.Success >= minSuccess && with.Summary.Success >= minSuccess
	it.Details["without"] = without.Summary
	it.Details["with"] = with.Summary
	it.Details["p99Ratio"] = ratio
	it.Details["pendingUsersProvisioned"] = v.cfg.syncUsers
	it.Details["provisionS"] = provisionS
	it.Details["sync"] = map[string]any{
		"pendingUsersBeforeTrigger":  before.PendingUsers,
		"oldestPendingAgeBeforeS":    before.OldestPendingAgeSeconds,
		"triggerAtS":                 triggerAt,
		"triggerResponseMs":          triggerMs,
		"drainS":                     drainS,
		"drainedDuringLoad":          drainedInRun,
		"flushUsersPerS":             flushRate(before.PendingUsers, drainS),
		"lastBatch":                  after.LastBatch,
		"lastBatchUsersPerS":         batchRate(after),
		"pendingUsersAfter":          after.PendingUsers,
		"oldestPendingAgeAfterS":     after.OldestPendingAgeSeconds,
		"withoutRunMaxPending":       s1.details()["maxPendingUsers"],
		"drainMeasuredAs":            "trigger → first GET /admin/sync (polled every 100 ms) with pending users ≤ load users",
		"flushThroughputTargetPerS":  20000,
		"flushThroughputTargetMet":   flushRate(before.PendingUsers, drainS) >= 20000,
		"syncLagTargetAtSteadyState": "≤ 2 × SYNC_INTERVAL; see query_api_latency.details.syncLagDuringLoad (default 1 s interval)",
	}
	it.Details["workload"] = fmt.Sprintf("open model: %d req/s for %s over %d warm users, twice; the second run forces POST /admin/sync at %s with %d users pending", v.cfg.syncRate, v.cfg.syncDur, len(load), v.cfg.syncDur/4, before.PendingUsers)
	it.Details["passRule"] = "p99 with the forced sync ≤ 1.25 × p99 without, the pending users drained, ≥ 99% 2xx answers"
	it.Charts = []Chart{
		{Title: "Query latency percentiles, without and with a forced sync", XLabel: "percentile", YLabel: "ms", Categories: percentileCategories, LogY: true,
			Series: []ChartSeries{percentileSeries(without.Summary.Name, without.Samples), percentileSeries(with.Summary.Name, with.Samples)}},
		{Title: "Query p99 per 250 ms", XLabel: "s since the run started", YLabel: "ms",
			Series:  []ChartSeries{timeSeries(without.Summary.Name, without.Samples, 250*time.Millisecond), timeSeries(with.Summary.Name, with.Samples, 250*time.Millisecond)},
			Markers: syncMarkers(triggerAt, drainS)},
		{Title: "Pending users (GET /admin/sync)", XLabel: "s since the run started", YLabel: "users",
			Series: []ChartSeries{s2.series("with forced sync")}, Markers: syncMarkers(triggerAt, drainS)},
	}
	return nil
}

func syncMarkers(triggerAt, drainS float64) []Marker {
	m := []Marker{{X: triggerAt, Label: "POST /admin/sync"}}
	if drainS >= 0 {
		m = append(m, Marker{X: triggerAt + drainS, Label: "drained"})
	}
	return m
}

// batchRate is the last batch's users per second, from its own timing
// (finer than the 100 ms polling of drainS).
func batchRate(s SyncStatus) float64 {
	if s.LastBatch == nil || s.LastBatch.DurationMs <= 0 {
		return 0
	}
	return float64(s.LastBatch.Users) / (s.LastBatch.DurationMs / 1000)
}

func flushRate(users int64, drainS float64) float64 {
	if drainS <= 0 {
		return 0
	}
	return float64(users) / drainS
}

// improvement runs the same cold-user first-query workload against a fresh
// service with WARMUP_STRATEGY=inline (the blocking design) and one with
// async (the default): every request is a different user's first query.
func (v *verifier) improvement(ctx context.Context, it *Item, floor *throughputResult) error {
	it.Measured.Unit, it.Limit.Unit = "ms", "ms"
	runs := map[string]Run{}
	for _, strategy := range []string{"inline", "async"} {
		err := v.withService(ctx, "improvement-"+strategy, map[string]string{"WARMUP_STRATEGY": strategy}, func(svc *Service) error {
			c := NewClient(svc.Public, svc.Admin, "")
			v.logf("%s: %s: provisioning %d cold users (%d items each)", idImprovement, strategy, v.cfg.coldUsers, v.cfg.coldItems)
			users, err := c.Provision(ctx, v.cfg.coldUsers, v.cfg.provisioners, pro("cold", v.cfg.coldItems))
			if err != nil {
				return err
			}
			if err := c.WaitQuiet(ctx, time.Minute); err != nil {
				return err
			}
			targets := queryTargets(c.Target, users, v.cfg.queryItems)[:len(users)]
			runs[strategy] = Attack(ctx, AttackSpec{Name: "WARMUP_STRATEGY=" + strategy, Rate: v.cfg.coldRate, Workers: 8, Targeter: once(targets)})
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", strategy, err)
		}
	}
	in, as := runs["inline"].Summary, runs["async"].Summary
	it.Measured.Value, it.Limit.Value = as.P99Ms, in.P99Ms
	it.Pass = as.P99Ms < in.P99Ms && as.Success >= minSuccess && in.Success >= minSuccess && as.Requests > 0 && in.Requests > 0
	it.Details["inline"] = in
	it.Details["async"] = as
	if as.P99Ms > 0 {
		it.Details["p99Speedup"] = in.P99Ms / as.P99Ms
	}
	it.Details["workload"] = fmt.Sprintf("each on a fresh process and schema: %d users with %d items each, never queried; open model at %d req/s, every request a different user's first query", v.cfg.coldUsers, v.cfg.coldItems, v.cfg.coldRate)
	it.Details["passRule"] = "async p99 < inline p99 (limit = the inline p99), ≥ 99% 2xx answers"
	series := []ChartSeries{percentileSeries(in.Name, runs["inline"].Samples), percentileSeries(as.Name, runs["async"].Samples)}
	it.Charts = []Chart{{Title: "Cold-user first query: inline vs async", XLabel: "percentile", YLabel: "ms", Categories: percentileCategories, LogY: true, Series: series}}
	if floor != nil {
		it.Details["throughputVsFloor"] = floor
		it.Charts = append(it.Charts, Chart{
			Title:  fmt.Sprintf("Max throughput per second: query %.0f/s vs floor %.0f/s (ratio %.2f)", floor.Query.Throughput, floor.Floor.Throughput, floor.Ratio),
			XLabel: "s", YLabel: "requests/s",
			Series: []ChartSeries{rateSeries("floor (bare Fiber)", floor.floorSamples), rateSeries("query (warm users)", floor.querySamples)},
		})
	}
	return nil
}

// rateSeries is a run's completed requests per second over time.
func rateSeries(name string, samples []Sample) ChartSeries {
	cs := ChartSeries{Name: name}
	for _, w := range Windows(samples, time.Second) {
		cs.Points = append(cs.Points, [2]float64{w.StartS, float64(w.Count)})
	}
	return cs
}
