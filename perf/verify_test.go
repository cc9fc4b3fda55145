package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVerifyQuick runs `perf verify --quick` end to end against the real
// backends when DATABASE_URL and VALKEY_URL are set (as in CI), else against
// the embedded default: it builds the service, starts it several times, drives every
// checklist item and checks the files it writes. Whether an item passes is a
// performance figure of this machine, not something a unit test asserts; the
// test asserts that every item was measured and reported.
func TestVerifyQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the service: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	if dl, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(t.Context(), dl.Add(-10*time.Second))
	}
	defer cancel()
	out := t.TempDir()
	// Only the backends pass through: the rest of the environment is the
	// lab's defaults.
	backend := "embedded"
	env := map[string]string{}
	if db, vk := os.Getenv("DATABASE_URL"), os.Getenv("VALKEY_URL"); db != "" && vk != "" {
		env["DATABASE_URL"], env["VALKEY_URL"], backend = db, vk, "postgres+valkey"
	}
	getenv := func(k string) string { return env[k] }
	var stdout, stderr strings.Builder
	err := run(ctx, []string{"perf", "verify", "--quick", "--out", out}, getenv, &stdout, &stderr)
	if err != nil && !errors.Is(err, errItemsFailed) {
		t.Fatalf("verify: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("verify output:\n%s", stdout.String())

	rep := readReport(t, out)
	if rep.Backend != backend {
		t.Errorf("backend %q, want %s", rep.Backend, backend)
	}
	wantIDs := []string{idStartup, idWarmupAPI, idQueryAPI, idSync, idImprovement, idThroughput}
	if len(rep.Items) != len(wantIDs) {
		t.Fatalf("%d items, want %d", len(rep.Items), len(wantIDs))
	}
	allPass := true
	for i, it := range rep.Items {
		if it.ID != wantIDs[i] {
			t.Errorf("item %d is %q, want %q", i, it.ID, wantIDs[i])
		}
		// An error while setting an item up is a broken lab, not a slow
		// service.
		if e, ok := it.Details["error"]; ok {
			t.Errorf("%s: %v", it.ID, e)
		}
		unit := "ms"
		if it.ID == idThroughput {
			unit = "× floor"
		}
		if it.Measured.Value <= 0 || it.Measured.Unit != unit || it.Limit.Value <= 0 || it.Limit.Unit != unit {
			t.Errorf("%s: measured %v, limit %v: want positive figures in %s", it.ID, it.Measured, it.Limit, unit)
		}
		if it.Target.Value <= 0 || it.Target.Unit == "" {
			t.Errorf("%s: target %+v: want a positive figure with a unit", it.ID, it.Target)
		}
		if it.ID == idSync {
			checkSyncRounds(t, it.Details["rounds"])
		}
		if it.ID == idThroughput {
			checkRoundTripFloor(t, it.Details["roundTripFloor"], backend != "embedded")
		}
		allPass = allPass && it.Pass
	}
	// The exit status follows the items.
	if allPass != (err == nil) {
		t.Errorf("all items pass = %v but verify returned %v", allPass, err)
	}
	if !strings.Contains(stdout.String(), "startup_nonblocking") {
		t.Errorf("no table on stdout:\n%s", stdout.String())
	}
	checkHTML(t, filepath.Join(out, "verify.html"))
}

// checkRoundTripFloor: with a Valkey server the throughput item also ran
// the round-trip floor in every pair and measured its process and Valkey;
// embedded, there is no server to call and no such figure.
func checkRoundTripFloor(t *testing.T, v any, want bool) {
	t.Helper()
	if !want {
		if v != nil {
			t.Errorf("%s: roundTripFloor %v on the embedded default, want none", idThroughput, v)
		}
		return
	}
	m, _ := v.(map[string]any)
	ratios, _ := m["ratiosToFloor"].([]any)
	if len(ratios) == 0 {
		t.Errorf("%s: roundTripFloor %v: want a ratio to the floor per pair", idThroughput, v)
	}
	for i, r := range ratios {
		if f, _ := r.(float64); f <= 0 {
			t.Errorf("%s: round-trip floor pair %d: ratio %v, want > 0", idThroughput, i+1, r)
		}
	}
	for _, k := range []string{"medianPerS", "floorCpuUsPerRequest", "valkeyCpuUsPerRequest", "medianQueryRatioToIt"} {
		if f, _ := m[k].(float64); f <= 0 {
			t.Errorf("%s: roundTripFloor.%s = %v, want a positive figure", idThroughput, k, m[k])
		}
	}
}

// checkSyncRounds: the sync item's rounds put the run without a sync first
// as often as the run with one (the order is balanced, not merely
// alternated), and each round was preceded by its settling load.
func checkSyncRounds(t *testing.T, v any) {
	t.Helper()
	rounds, _ := v.([]any)
	if len(rounds) == 0 || len(rounds)%2 != 0 {
		t.Errorf("%s: %d rounds, want an even number above 0", idSync, len(rounds))
		return
	}
	first := 0
	for i, r := range rounds {
		m, _ := r.(map[string]any)
		if wf, _ := m["withoutFirst"].(bool); wf {
			first++
		}
		if p99, _ := m["settleP99Ms"].(float64); p99 <= 0 {
			t.Errorf("%s: round %d: settleP99Ms %v, want the settling load's p99", idSync, i+1, m["settleP99Ms"])
		}
		// verify started the service, so its CPU is known in every round.
		cpu, _ := m["syncCpuUsPerUser"].(map[string]any)
		if _, ok := cpu["service"].(float64); !ok {
			t.Errorf("%s: round %d: syncCpuUsPerUser %v, want the service's CPU per user", idSync, i+1, m["syncCpuUsPerUser"])
		}
	}
	if 2*first != len(rounds) {
		t.Errorf("%s: the run without a sync came first in %d of %d rounds, want half", idSync, first, len(rounds))
	}
}
