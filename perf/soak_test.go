package main

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// series builds n samples of f(i) plus uniform noise of ±noise.
func series(n int, noise float64, f func(i int) float64) []float64 {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]float64, n)
	for i := range out {
		out[i] = f(i) + noise*(2*r.Float64()-1)
	}
	return out
}

func TestJudgeTrend(t *testing.T) {
	heap := trendRule{Metric: "heap_inuse", Unit: "MiB", Rel: 0.25, Abs: 8}
	gor := trendRule{Metric: "goroutines", Rel: 0.10, Abs: 25}
	tests := []struct {
		name    string
		rule    trendRule
		series  []float64
		growing bool
	}{
		{"heap growing steadily (a leak)", heap, series(30, 2, func(i int) float64 { return 40 + 2*float64(i) }), true},
		{"heap flat with noise", heap, series(30, 5, func(int) float64 { return 40 }), false},
		// GC: the heap climbs to the next goal and drops, over and over.
		{"heap sawtooth from the GC", heap, series(60, 0, func(i int) float64 { return 30 + 30*float64(i%7)/6 }), false},
		{"sawtooth riding on a leak", heap, series(60, 0, func(i int) float64 { return 30 + 30*float64(i%7)/6 + 1.5*float64(i) }), true},
		// A warm-up ramp (caches filling) then flat: the warm-up third hides it.
		{"warm-up ramp then flat", heap, series(30, 1, func(i int) float64 { return 20 + 40*math.Min(float64(i), 8)/8 }), false},
		{"goroutines: a few more is noise", gor, series(30, 3, func(i int) float64 { return 20 + 0.5*float64(i) }), false},
		{"goroutines leaking one per request batch", gor, series(30, 3, func(i int) float64 { return 50 + 10*float64(i) }), true},
		// One late step (a pool opening one more connection) is not "keeps growing".
		{"one late step", gor, series(30, 0, func(i int) float64 {
			if i >= 27 {
				return 200
			}
			return 50
		}), false},
		{"a single spike", heap, series(30, 0, func(i int) float64 {
			if i == 25 {
				return 500
			}
			return 40
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judgeTrend(tt.rule, tt.series)
			if got.Growing != tt.growing {
				t.Errorf("growing = %v, want %v (first %.1f, mid %.1f, last %.1f, growth %.1f, allowed %.1f)",
					got.Growing, tt.growing, got.FirstMedian, got.MidMedian, got.LastMedian, got.Growth, got.Allowed)
			}
		})
	}
	if r := judgeTrend(heap, []float64{1, 2, 100}); r.Growing || r.Note == "" {
		t.Errorf("three samples judged: %+v, want a note and no verdict", r)
	}
}

// drift builds a minute of samples at 100/s whose latency is lat(at).
func drift(lat func(at time.Duration) time.Duration) []Sample {
	var out []Sample
	for i := range 6000 {
		at := time.Duration(i) * 10 * time.Millisecond
		url := "http://127.0.0.1:1" + pathQuery
		if i%10 == 0 {
			url = "http://127.0.0.1:1" + pathItems
		}
		out = append(out, Sample{At: at, Latency: lat(at), Code: 200, URL: url})
	}
	return out
}

func TestJudgeDrift(t *testing.T) {
	const d = time.Minute
	tests := []struct {
		name    string
		lat     func(at time.Duration) time.Duration
		drifted bool
	}{
		{"flat", func(time.Duration) time.Duration { return 2 * time.Millisecond }, false},
		{"doubling but under the 5 ms floor", func(at time.Duration) time.Duration {
			return time.Millisecond + time.Duration(float64(at)/float64(d)*3*float64(time.Millisecond)) // 1 → 4 ms
		}, false},
		{"climbing past the floor", func(at time.Duration) time.Duration { return 2*time.Millisecond + at/4000 }, true},
		{"slow at the start (warm-up third) only", func(at time.Duration) time.Duration {
			if at < d/3 {
				return 50 * time.Millisecond
			}
			return 6 * time.Millisecond
		}, false},
		// Two 2-second bursts of another process in the last third.
		{"neighbour bursts in the last third", func(at time.Duration) time.Duration {
			if (at > 44*time.Second && at < 46*time.Second) || at > 57*time.Second {
				return 60 * time.Millisecond
			}
			return 2 * time.Millisecond
		}, false},
		// The machine's other work (the database writing out what an
		// earlier run left) lifting the whole last third: a step, not a
		// drift; the middle third is where the first one was.
		{"a step in the last third only", func(at time.Duration) time.Duration {
			if at > 48*time.Second {
				return 9 * time.Millisecond
			}
			return 5 * time.Millisecond
		}, false},
		// A regression that sets in during the middle third and stays.
		{"a rise from the middle third on", func(at time.Duration) time.Duration {
			if at > 36*time.Second {
				return 9 * time.Millisecond
			}
			return 5 * time.Millisecond
		}, true},
		{"+30 % above the floor is not drift", func(at time.Duration) time.Duration {
			if at > d*2/3 {
				return 13 * time.Millisecond
			}
			return 10 * time.Millisecond
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judgeDrift(drift(tt.lat), d, 2*time.Second)
			if got.Drifted != tt.drifted {
				t.Errorf("drifted = %v, want %v (first %.2f ms, mid %.2f ms, last %.2f ms)", got.Drifted, tt.drifted, got.FirstP99Ms, got.MidP99Ms, got.LastP99Ms)
			}
		})
	}
}

func TestAnalyzeSoak(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	var rep SoakReport
	for i := range 30 {
		rep.Samples = append(rep.Samples, soakSample{AtS: float64(i), HeapMiB: f(40), Goroutines: f(30 + 20*float64(i)), OpenFDs: f(40)})
	}
	rep.Load = Summary{Requests: 100, Success: 1}
	analyzeSoak(&rep, drift(func(time.Duration) time.Duration { return time.Millisecond }), time.Minute, 2*time.Second)
	if rep.Pass || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "goroutines keeps growing") {
		t.Errorf("pass %v, failures %q: want exactly the goroutine leak", rep.Pass, rep.Failures)
	}
	// tcp_conns was not sampled: reported, not failed.
	if last := rep.Trends[len(rep.Trends)-1]; last.Metric != "tcp_conns" || last.Note != "not measured" {
		t.Errorf("tcp_conns trend %+v, want not measured", last)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if eps := rep.Drift.Endpoints; len(eps) != 2 || eps[0].Path != pathQuery || eps[1].Path != pathItems || eps[1].LastP99Ms != 1 {
		t.Errorf("endpoints %+v, want the query and the items endpoint at 1 ms (no warmup samples)", eps)
	}
	for _, want := range []string{"METRIC", "goroutines", "GROWING", "p99", "p99 " + pathItems, "soak: FAIL"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseMetrics(t *testing.T) {
	page := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\ngo_memstats_heap_inuse_bytes 1.048576e+07\nwarmpath_x{a=\"b\"} 3\n"
	m, err := parseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] != 42 || m["go_memstats_heap_inuse_bytes"] != 10485760 || len(m) != 2 {
		t.Errorf("parsed %v", m)
	}
}

func TestProcParsers(t *testing.T) {
	stat := "1234 (warm path) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s (250+50 ticks)", got, err)
	}
	st, err := parseStat("1234 (post gres) S 77 1234 1234 0 -1 4194560 500 0 0 0 250 50 30 20 20 0 12 0 100 0 0")
	if err != nil || st.ppid != 77 || st.cpu != 3*time.Second || st.children != 500*time.Millisecond {
		t.Errorf("parseStat = %+v, %v; want ppid 77, cpu 3s, children 0.5s", st, err)
	}
	line := "   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 31337 1 0000000000000000 100 0 0 10 0"
	if inode, ok := listenInode(line, 6379); !ok || inode != "31337" {
		t.Errorf("listenInode = %q, %v; want 31337", inode, ok)
	}
	if _, ok := listenInode(strings.Replace(line, " 0A ", " 01 ", 1), 6379); ok {
		t.Error("an established socket counted as listening")
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v, want 2", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
}

// TestProcTreeCPU: a child's CPU counts in its parent's tree while it runs
// and once it has exited and been waited for.
func TestProcTreeCPU(t *testing.T) {
	self := os.Getpid()
	before, err := procTreeCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	// A shell loop busy for a few hundred milliseconds of CPU.
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	after, err := procTreeCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	if child < 50*time.Millisecond {
		t.Fatalf("the child used only %v of CPU; the test needs more to tell", child)
	}
	// Ticks are 10 ms, in two fields: allow two.
	if got := after - before; got < child-20*time.Millisecond {
		t.Errorf("tree CPU grew %v across a child that used %v", got, child)
	}
	own, _ := procCPU(self)
	if tree, _ := procTreeCPU(self); tree < own+child-20*time.Millisecond {
		t.Errorf("tree CPU %v is not own %v + the waited-for child's %v", tree, own, child)
	}
}

func TestProcSetPerUser(t *testing.T) {
	p := &procSet{names: []string{"service", "postgres"}}
	got := p.perUser([]time.Duration{3 * time.Second, -1}, []time.Duration{time.Second, time.Second}, 1000)
	if len(got) != 1 || got["service"] != 2000 {
		t.Errorf("perUser = %v; want service 2000 µs per user, postgres left out (unreadable)", got)
	}
	if got := p.perUser(nil, nil, 0); got != nil {
		t.Errorf("perUser with no users = %v, want nil", got)
	}
}
