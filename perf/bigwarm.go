package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/warmpath/warmpath/internal/ctxtime"
)

// runBigWarm measures the warmup of users with a large item set (issue
// target: 100,000 items ready in ≤ 500 ms): for each run it creates a user,
// adds --items items through POST /api/items, then times POST
// /api/user/warmup → the first GET that says ready, and reports the job's own
// durationMs too.
func runBigWarm(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bigwarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := localClientFlags(fs, getenv)
	items := fs.Int("items", 100_000, "items per user")
	runs := fs.Int("runs", 3, "users to warm, one after the other")
	plan := fs.String("plan", "pro", "plan of the users (its item limit must allow --items)")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	c := client()
	for r := range *runs {
		u, err := c.CreateUser(ctx, fmt.Sprintf("bigwarm-%d-%d", time.Now().UnixNano(), r), *plan, 0)
		if err != nil {
			return err
		}
		set := make([]string, *items)
		for i := range set {
			set[i] = fmt.Sprintf("https://example.com/%d/item/%d", u.ID, i)
		}
		if err := c.AddItems(ctx, u, set); err != nil {
			return err
		}
		start := time.Now()
		st, err := c.RequestWarmup(ctx, u)
		if err != nil {
			return err
		}
		post := time.Since(start)
		for st.State != "ready" {
			if st.State == "failed" {
				return fmt.Errorf("bigwarm: user %d: warmup failed: %s", u.ID, st.Error)
			}
			if err := ctxtime.Sleep(ctx, 2*time.Millisecond); err != nil {
				return err
			}
			if st, err = c.Warmup(ctx, u); err != nil {
				return err
			}
		}
		observed := time.Since(start)
		job := 0.0
		if st.DurationMs != nil {
			job = *st.DurationMs
		}
		fmt.Fprintf(stdout, "bigwarm: user %d, %d items: POST answered in %.2f ms; job %.1f ms; request → ready observed %.1f ms\n",
			u.ID, *items, ms(post), job, ms(observed))
	}
	return nil
}
