package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warmpath/warmpath/internal/cli"
)

// Checklist item ids (DESIGN.md, "Perf lab").
const (
	idStartup     = "startup_nonblocking"
	idWarmupAPI   = "warmup_api_latency"
	idQueryAPI    = "query_api_latency"
	idSync        = "sync_nonblocking"
	idImprovement = "perf_improvement"
	idThroughput  = "warm_throughput"
)

// Seed limits (the original validation checklist), the limits we chose where
// the original has only words, and our own targets (reported, never failing).
const (
	seedLivezMs        = 100 // startup: first /livez and first query
	seedWarmupAPIMs    = 100 // warmup API p99
	seedQueryAPIMs     = 200 // query API p99; also "a sync does not block": p99 during one
	floorRatioLimit    = 0.1 // warm throughput: not an order of magnitude off the floor
	targetLivezMs      = 50
	targetWarmupP99Ms  = 2
	targetWarmupRate   = 500 // req/s at which the warmup target holds
	targetQueryP99Ms   = 5
	targetQueryRate    = 2000 // req/s at which the query target holds
	syncRatioTarget    = 1.25 // p99 with a forced sync ≤ 1.25 × without (issue 4)
	floorRatioTarget   = 0.5  // query throughput ≥ 0.5 × the floor (issue 2)
	targetServiceCPUUs = 25   // service CPU per warm query, µs
	targetValkeyCPUUs  = 15   // Valkey CPU per warm query, µs
	minSuccess         = 0.99 // share of 2xx answers a latency figure needs to count
)

// errItemsFailed makes verify exit non-zero when an item fails.
var errItemsFailed = errors.New("verify: some checklist items failed")

// verifyConfig sizes every workload of the checklist.
type verifyConfig struct {
	target, admin, adminToken string
	only                      map[string]bool // with target: the items to run; nil = all
	out                       string
	logLevel                  string
	quick                     bool

	boots, hotUsers, hotItems int

	// warm is the warm-up before every measured run (its samples are
	// dropped); runs is how many times the latency items repeat (medians).
	warm time.Duration
	runs int

	warmupItems int
	warmupRate  int
	warmupDur   time.Duration

	queryUsers, items, queryItems int
	firstRate                     int
	queryRate                     int
	queryDur                      time.Duration

	maxWorkers, maxPairs int
	maxDur               time.Duration

	syncUsers, syncLoadUsers, syncRounds int
	syncRate                             int
	syncDur                              time.Duration

	coldUsers, coldItems, coldRate, coldRounds int

	provisioners int
}

// fullConfig is the real checklist: several minutes on a 2-core machine.
func fullConfig() verifyConfig {
	return verifyConfig{
		boots: 5, hotUsers: 10000, hotItems: 20,
		warm: time.Second, runs: 3,
		warmupItems: 100, warmupRate: 500, warmupDur: 6 * time.Second,
		queryUsers: 400, items: 100, queryItems: 10, firstRate: 100, queryRate: 2000, queryDur: 10 * time.Second,
		maxWorkers: 64, maxDur: 4 * time.Second, maxPairs: 4,
		syncUsers: 50000, syncLoadUsers: 100, syncRate: 1000, syncDur: 10 * time.Second, syncRounds: 4,
		coldUsers: 200, coldItems: 1000, coldRate: 50, coldRounds: 5,
		provisioners: 32,
	}
}

// quickConfig is the CI smoke: the same items and rates, short repeated
// runs (well under two minutes in all).
func quickConfig() verifyConfig {
	return verifyConfig{
		quick: true,
		boots: 3, hotUsers: 300, hotItems: 5,
		warm: 250 * time.Millisecond, runs: 3,
		warmupItems: 20, warmupRate: 500, warmupDur: time.Second,
		queryUsers: 40, items: 50, queryItems: 10, firstRate: 50, queryRate: 2000, queryDur: time.Second,
		maxWorkers: 16, maxDur: time.Second, maxPairs: 4,
		syncUsers: 1000, syncLoadUsers: 20, syncRate: 500, syncDur: 1500 * time.Millisecond, syncRounds: 4,
		coldUsers: 50, coldItems: 5000, coldRate: 40, coldRounds: 3,
		provisioners: 16,
	}
}

func runVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		target     = fs.String("target", "", "public API base URL of a running stack (default: build and start the service)")
		admin      = fs.String("admin", "", "admin API base URL of the running stack (with --target)")
		adminToken = fs.String("admin-token", getenv("ADMIN_TOKEN"), "admin API bearer token (default $ADMIN_TOKEN)")
		quick      = fs.Bool("quick", false, "CI smoke: small workloads, a few seconds per item")
		out        = fs.String("out", "", "directory for verify.json, verify.html and the service logs (default <module root>/perf/out)")
		logLevel   = fs.String("log-level", "warn", "LOG_LEVEL of the services verify starts (warn keeps only slow [PERF] lines)")
		durScale   = fs.Float64("duration-scale", 1, "multiply every attack duration")
		rateScale  = fs.Float64("rate-scale", 1, "multiply every request rate")
		syncUsers  = fs.Int("sync-users", 0, "users with a pending delta for sync_nonblocking (0: preset)")
		hotUsers   = fs.Int("hot-users", 0, "hot users for startup_nonblocking (0: preset)")
		only       = fs.String("only", "", "with --target: comma-separated item ids to run (default: all that apply)")
	)
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if (*target == "") != (*admin == "") {
		return cli.Usage(errors.New("--target and --admin go together"))
	}
	if *durScale <= 0 || *rateScale <= 0 {
		return cli.Usage(errors.New("--duration-scale and --rate-scale must be positive"))
	}
	cfg := fullConfig()
	if *quick {
		cfg = quickConfig()
	}
	cfg.target, cfg.admin, cfg.adminToken, cfg.out, cfg.logLevel = *target, *admin, *adminToken, *out, *logLevel
	if cfg.out == "" {
		cfg.out = "perf/out"
		if root, err := moduleRoot(); err == nil {
			cfg.out = filepath.Join(root, "perf", "out")
		}
	}
	cfg.scale(*durScale, *rateScale)
	if *only != "" {
		if *target == "" {
			return cli.Usage(errors.New("--only goes with --target"))
		}
		cfg.only = map[string]bool{}
		for _, id := range strings.Split(*only, ",") {
			cfg.only[strings.TrimSpace(id)] = true
		}
	}
	if *syncUsers > 0 {
		cfg.syncUsers = *syncUsers
	}
	if *hotUsers > 0 {
		cfg.hotUsers = *hotUsers
	}

	v := &verifier{cfg: cfg, progress: stderr, getenv: getenv}
	rep := Report{Version: 1, StartedAt: time.Now().UTC()}
	if cfg.target != "" {
		rep.Backend = "external"
		rep.Items = v.external(ctx)
	} else {
		backend := &Backend{DatabaseURL: getenv("DATABASE_URL"), ValkeyURL: getenv("VALKEY_URL")}
		rep.Backend = backend.Name()
		items, err := v.local(ctx, backend)
		if err != nil {
			return err
		}
		rep.Items = items
	}
	if ctx.Err() != nil {
		return fmt.Errorf("verify: %w", ctx.Err())
	}
	if err := rep.WriteFiles(cfg.out); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s\n", filepath.Join(cfg.out, "verify.json"), filepath.Join(cfg.out, "verify.html"))
	if !rep.Passed() {
		return errItemsFailed
	}
	return nil
}

// scale multiplies durations and rates (never below 1 request per second or
// one second of attack).
func (c *verifyConfig) scale(d, r float64) {
	for _, p := range []*time.Duration{&c.warmupDur, &c.queryDur, &c.maxDur, &c.syncDur} {
		*p = max(time.Duration(float64(*p)*d), time.Second)
	}
	for _, p := range []*int{&c.warmupRate, &c.firstRate, &c.queryRate, &c.syncRate, &c.coldRate} {
		*p = max(int(math.Round(float64(*p)*r)), 1)
	}
}

// verifier runs the checklist.
type verifier struct {
	cfg      verifyConfig
	bin      binaries
	backend  *Backend
	logs     string
	progress io.Writer
	// getenv is verify's own environment: against a running stack, the
	// DATABASE_URL and VALKEY_URL it names are taken to be the stack's.
	getenv func(string) string
}

func (v *verifier) logf(format string, args ...any) {
	fmt.Fprintf(v.progress, "verify: "+format+"\n", args...)
}

// local builds and starts the service (several times, each item on the
// processes it needs) and runs every item.
func (v *verifier) local(ctx context.Context, backend *Backend) ([]Item, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "warmpath-perf-")
	if err != nil {
		return nil, fmt.Errorf("verify: temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	v.logs = filepath.Join(v.cfg.out, "logs")
	if err := os.MkdirAll(v.logs, 0o755); err != nil {
		return nil, fmt.Errorf("verify: logs dir: %w", err)
	}
	v.logf("building ./app and ./perf (backend %s)", backend.Name())
	start := time.Now()
	if v.bin, err = build(ctx, root, tmp, v.progress); err != nil {
		return nil, err
	}
	v.logf("built in %s", time.Since(start).Round(time.Millisecond))
	v.backend = backend
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := backend.Cleanup(cctx); err != nil {
			v.logf("cleanup: %v", err)
		}
	}()

	items := []Item{v.guard(idStartup, "Startup: /livez and a first query answer while system warmup still runs", func(it *Item) error { return v.startup(ctx, it) })}
	var warm, query, tput Item
	err = v.withService(ctx, "main", nil, func(svc *Service) error {
		c := NewClient(svc.Public, svc.Admin, "")
		warm = v.guard(idWarmupAPI, warmupTitle, func(it *Item) error { return v.warmupAPI(ctx, c, it) })
		var users []User
		query = v.guard(idQueryAPI, queryTitle, func(it *Item) error {
			var err error
			users, err = v.queryAPI(ctx, c, it)
			return err
		})
		tput = v.guard(idThroughput, throughputTitle, func(it *Item) error {
			if len(users) == 0 {
				return errNoUsers
			}
			return v.throughput(ctx, svc, c, users, it)
		})
		return nil
	})
	if err != nil {
		warm = failed(idWarmupAPI, warmupTitle, err)
		query = failed(idQueryAPI, queryTitle, err)
		tput = failed(idThroughput, throughputTitle, err)
	}
	items = append(items, warm, query)
	items = append(items, v.guard(idSync, syncTitle, func(it *Item) error {
		return v.withService(ctx, "sync", map[string]string{"SYNC_INTERVAL": "1h"}, func(svc *Service) error {
			it.Details["serviceEnv"] = map[string]string{"SYNC_INTERVAL": "1h (only the forced sync flushes the pending users)"}
			procs := syncProcesses(ctx, svc.Pid(), "started by verify", svc.Env["VALKEY_URL"], svc.Env["DATABASE_URL"])
			return v.syncItem(ctx, NewClient(svc.Public, svc.Admin, ""), procs, it)
		})
	}))
	items = append(items, v.guard(idImprovement, improvementTitle, func(it *Item) error { return v.improvement(ctx, it) }))
	items = append(items, tput)
	return items, nil
}

// external runs the items that need no control over the service's
// processes against a stack that is already up.
func (v *verifier) external(ctx context.Context) []Item {
	c := NewClient(v.cfg.target, v.cfg.admin, v.cfg.adminToken)
	v.logf("against %s (admin %s); %s and %s need to start the service and are skipped", c.Target, c.Admin, idStartup, idImprovement)
	var items []Item
	run := func(id, title string, f func(it *Item) error) {
		if v.cfg.only == nil || v.cfg.only[id] {
			items = append(items, v.guard(id, title, f))
		}
	}
	run(idWarmupAPI, warmupTitle, func(it *Item) error { return v.warmupAPI(ctx, c, it) })
	run(idQueryAPI, queryTitle, func(it *Item) error {
		_, err := v.queryAPI(ctx, c, it)
		return err
	})
	run(idSync, syncTitle, func(it *Item) error {
		pid, how := targetPID(c.Target)
		return v.syncItem(ctx, c, syncProcesses(ctx, pid, how, v.getenv("VALKEY_URL"), v.getenv("DATABASE_URL")), it)
	})
	return items
}

// guard runs one item; an error while setting it up fails the item (with
// the error in its details) but not the rest of the checklist.
func (v *verifier) guard(id, title string, f func(it *Item) error) Item {
	it := Item{ID: id, Title: title, Target: itemTargets[id], Details: map[string]any{}}
	start := time.Now()
	// How busy the machine was: figures from a loaded machine say so.
	it.Details["loadAvg1mAtStart"] = loadAvg()
	v.logf("%s: start", id)
	if err := f(&it); err != nil {
		v.logf("%s: error: %v", id, err)
		it.Pass = false
		it.Details["error"] = err.Error()
	}
	it.Details["elapsedS"] = math.Round(time.Since(start).Seconds()*10) / 10
	res := "FAIL"
	if it.Pass {
		res = "PASS"
	}
	it.Details["loadAvg1mAtEnd"] = loadAvg()
	v.logf("%s: %s (measured %s, limit %s, target %s) in %s", id, res, it.Measured, it.Limit, it.Target, time.Since(start).Round(time.Millisecond))
	return it
}

func failed(id, title string, err error) Item {
	return Item{ID: id, Title: title, Target: itemTargets[id], Details: map[string]any{"error": err.Error()}}
}

// itemTargets is each item's target before it is measured (met false), so
// an item that errors still reports the target it missed.
var itemTargets = map[string]Target{
	idStartup:     {Value: targetLivezMs, Unit: "ms"},
	idWarmupAPI:   {Value: targetWarmupP99Ms, Unit: "ms"},
	idQueryAPI:    {Value: targetQueryP99Ms, Unit: "ms"},
	idSync:        {Value: syncRatioTarget, Unit: "× p99 without"},
	idImprovement: {Value: targetQueryP99Ms, Unit: "ms"},
	idThroughput:  {Value: floorRatioTarget, Unit: "× floor"},
}

// withService starts a fresh service on a fresh slice of the backend, runs
// f, and stops it.
func (v *verifier) withService(ctx context.Context, name string, env map[string]string, f func(*Service) error) error {
	iso, err := v.backend.Isolate(ctx)
	if err != nil {
		return err
	}
	full := v.serviceEnv(iso, env)
	svc, err := startService(ctx, v.bin, full, filepath.Join(v.logs, name+".log"))
	if err != nil {
		return err
	}
	ferr := f(svc)
	if err := svc.Stop(30 * time.Second); err != nil {
		v.logf("%s service: %v", name, err)
	}
	return ferr
}

// serviceEnv is the environment of a service verify starts.
func (v *verifier) serviceEnv(iso Isolation, extra map[string]string) map[string]string {
	env := map[string]string{"LOG_LEVEL": v.cfg.logLevel}
	for k, val := range iso {
		env[k] = val
	}
	for k, val := range extra {
		env[k] = val
	}
	return env
}

// pro is the provisioning every measured user gets: the pro plan with a
// quota no run can exhaust, so a 429 never shows up in a latency figure.
func pro(prefix string, items int) ProvisionSpec {
	return ProvisionSpec{Prefix: prefix, Plan: "pro", Quota: 1 << 40, Items: items}
}
