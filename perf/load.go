package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/warmpath/warmpath/internal/cli"
)

// Endpoints the load command can drive.
const (
	endpointQuery  = "query"
	endpointWarmup = "warmup"
)

// queryTargets is one query target per user and body variant: the attack
// spreads over every user, each sending a few different bodies.
func queryTargets(target string, users []User, k int) []vegeta.Target {
	const variants = 4
	out := make([]vegeta.Target, 0, len(users)*variants)
	for v := range variants {
		for i, u := range users {
			body, _ := json.Marshal(map[string][]string{"items": queryItems(i*variants+v, k)})
			out = append(out, vegeta.Target{Method: http.MethodPost, URL: target + pathQuery, Body: body, Header: bearer(u.Token)})
		}
	}
	return out
}

// warmupTargets is one POST /api/user/warmup target per user.
func warmupTargets(target string, users []User) []vegeta.Target {
	out := make([]vegeta.Target, len(users))
	for i, u := range users {
		out[i] = vegeta.Target{Method: http.MethodPost, URL: target + pathWarmup, Header: bearer(u.Token)}
	}
	return out
}

// loadFlags are the load command's options.
type loadFlags struct {
	target, admin, adminToken string
	rate                      int
	duration                  time.Duration
	users, items, queryItems  int
	warm, max, asJSON         bool
	idemKeys                  bool
	workers, provisioners     int
	endpoint, plan            string
}

func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var f loadFlags
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.target, "target", "http://127.0.0.1:8080", "public API base URL")
	fs.StringVar(&f.admin, "admin", "http://127.0.0.1:9090", "admin API base URL")
	fs.StringVar(&f.adminToken, "admin-token", getenv("ADMIN_TOKEN"), "admin API bearer token (default $ADMIN_TOKEN)")
	fs.IntVar(&f.rate, "rate", 1000, "constant arrival rate, requests per second")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "attack duration")
	fs.IntVar(&f.users, "users", 100, "users to provision through POST /admin/users")
	fs.IntVar(&f.items, "items", 100, "items per user, added through POST /api/items")
	fs.IntVar(&f.queryItems, "query-items", 10, "items per query body (half present, half absent)")
	fs.BoolVar(&f.warm, "warm", false, "warm every user (POST /api/user/warmup, poll GET until ready) before the attack")
	fs.StringVar(&f.endpoint, "endpoint", endpointQuery, "what to attack: query|warmup")
	fs.BoolVar(&f.max, "max", false, "find max throughput: closed loop of --workers concurrent requests on as many connections (vegeta rate=0) instead of a constant rate")
	fs.IntVar(&f.workers, "workers", 64, "with --max: concurrency (= connections); otherwise vegeta's initial workers")
	fs.IntVar(&f.provisioners, "provision-workers", 16, "concurrent provisioning requests")
	fs.StringVar(&f.plan, "plan", "pro", "plan of the provisioned users")
	fs.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	fs.BoolVar(&f.idemKeys, "idempotency-keys", false, "send a fresh Idempotency-Key with every request (measures what keys cost)")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if f.endpoint != endpointQuery && f.endpoint != endpointWarmup {
		return cli.Usage(fmt.Errorf("--endpoint must be query or warmup, got %q", f.endpoint))
	}
	if f.users < 1 || f.duration <= 0 || (!f.max && f.rate < 1) {
		return cli.Usage(errors.New("--users, --duration and --rate (unless --max) must be positive"))
	}
	c := NewClient(f.target, f.admin, f.adminToken)
	start := time.Now()
	users, err := c.Provision(ctx, f.users, f.provisioners, ProvisionSpec{
		Prefix: "load-" + randHex(4), Plan: f.plan, Quota: 1 << 40, Items: f.items, Warm: f.warm,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "load: provisioned %d users (%d items each, warm=%v) in %s\n", len(users), f.items, f.warm, time.Since(start).Round(time.Millisecond))

	spec := AttackSpec{Name: f.endpoint, Rate: f.rate, Duration: f.duration, Workers: f.workers}
	if f.max {
		spec.Rate = 0
	} else {
		spec.Workers = min(f.workers, 16)
	}
	switch f.endpoint {
	case endpointQuery:
		spec.Targeter = rotate(queryTargets(c.Target, users, f.queryItems))
		if f.idemKeys {
			spec.Targeter = withIdempotencyKeys(spec.Targeter)
		}
	case endpointWarmup:
		spec.Targeter = rotate(warmupTargets(c.Target, users))
	}
	r := Attack(ctx, spec)
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r.Summary)
	}
	model := fmt.Sprintf("open model, constant arrival rate %d/s", f.rate)
	if f.max {
		model = fmt.Sprintf("closed loop, %d concurrent workers on %d connections (vegeta rate=0)", f.workers, f.workers)
	}
	fmt.Fprintf(stdout, "load: %s %s for %s, %d users (%s)\n", f.endpoint, c.Target, f.duration, len(users), model)
	printSummary(stdout, r.Summary)
	return nil
}

// printSummary prints a run's figures on three lines.
func printSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "  requests %d  rate %.1f/s  throughput %.1f/s  success %.2f%%\n", s.Requests, s.Rate, s.Throughput, 100*s.Success)
	fmt.Fprintf(w, "  latency  p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms  mean %.3fms\n", s.P50Ms, s.P90Ms, s.P99Ms, s.P999Ms, s.MaxMs, s.MeanMs)
	fmt.Fprintf(w, "  status   %s\n", formatCodes(s.StatusCodes))
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  error    %s\n", e)
	}
}

// formatCodes renders status counts in code order: "200:5991 503:9".
func formatCodes(codes map[string]int) string {
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, codes[k])
	}
	return strings.Join(parts, " ")
}
