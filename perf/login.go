package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// runLogin times a login's first request: for each of --runs users it
// creates the user (and its token) through POST /admin/users, then at once
// sends that token's POST /api/user/warmup, one after the other on kept-alive
// connections. It reports the POST's latency percentiles and how many of
// them read the store to authenticate (a "db" phase in Server-Timing).
func runLogin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := localClientFlags(fs, getenv)
	runs := fs.Int("runs", 400, "logins, one after the other")
	plan := fs.String("plan", "free", "plan of the users")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if *runs <= 0 {
		return usageErr(fmt.Errorf("login: --runs must be positive"))
	}
	c := client()
	lat := make([]time.Duration, 0, *runs)
	withDB := 0
	for r := range *runs {
		u, err := c.CreateUser(ctx, fmt.Sprintf("login-%d-%d", time.Now().UnixNano(), r), *plan, 0)
		if err != nil {
			return err
		}
		d, timing, err := c.firstWarmup(ctx, u)
		if err != nil {
			return err
		}
		lat = append(lat, d)
		if hasMetric(timing, "db") {
			withDB++
		}
	}
	slices.Sort(lat)
	fmt.Fprintf(stdout, "login: %d users: first POST /api/user/warmup p50 %.3f ms, p90 %.3f ms, p99 %.3f ms; %d of %d read the store to authenticate (a db phase in Server-Timing)\n",
		len(lat), ms(Percentile(lat, 50)), ms(Percentile(lat, 90)), ms(Percentile(lat, 99)), withDB, len(lat))
	return nil
}

// firstWarmup sends u's POST /api/user/warmup and returns its latency and
// Server-Timing header; any status but 202 is an error.
func (c *Client) firstWarmup(ctx context.Context, u User) (time.Duration, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Target+pathWarmup, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+u.Token)
	start := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("request warmup: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, "", fmt.Errorf("request warmup: read body: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return 0, "", &statusError{Op: "request warmup", Code: resp.StatusCode, Body: string(body)}
	}
	return d, resp.Header.Get("Server-Timing"), nil
}

// hasMetric reports whether a Server-Timing header names metric.
func hasMetric(serverTiming, metric string) bool {
	for part := range strings.SplitSeq(serverTiming, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if name == metric {
			return true
		}
	}
	return false
}
