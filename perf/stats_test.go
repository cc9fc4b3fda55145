package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func msd(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one value is every percentile", msd(7), 50, 7 * time.Millisecond},
		{"one value p100", msd(7), 100, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 99.9, 100 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.0001, 1 * time.Millisecond},
		// Nearest rank: ceil(0.5*4) = 2nd value, not an interpolation.
		{"p50 of four", msd(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four", msd(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p99 of ten picks the max", msd(1, 1, 1, 1, 1, 1, 1, 1, 1, 50), 99, 50 * time.Millisecond},
		{"p90 of ten ignores the max", msd(1, 1, 1, 1, 1, 1, 1, 1, 1, 50), 90, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	// 100 requests sent 10 ms apart (100/s) over 0.99 s; latencies 1..100 ms;
	// the last two answers are a 503 and a transport error.
	var samples []Sample
	for i := range 100 {
		s := Sample{At: time.Duration(i) * 10 * time.Millisecond, Latency: time.Duration(i+1) * time.Millisecond, Code: 200}
		switch i {
		case 98:
			s.Code = 503
		case 99:
			s.Code, s.Err = 0, "connection refused"
		}
		samples = append(samples, s)
	}
	got := Summarize("run", samples, 0)
	want := Summary{
		Name: "run", Requests: 100,
		DurationS:  1.09, // first send → last answer: 990 ms + 100 ms
		Rate:       100,
		Throughput: 98 / 1.09,
		Success:    0.98,
		P50Ms:      50, P90Ms: 90, P99Ms: 99, P999Ms: 100, MaxMs: 100, MeanMs: 50.5,
		StatusCodes: map[string]int{"200": 98, "503": 1, "0": 1},
		Errors:      []string{"connection refused"},
	}
	approx := cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })
	if d := cmp.Diff(want, got, approx); d != "" {
		t.Errorf("Summarize mismatch (-want +got):\n%s", d)
	}
}

func TestSummarizeGivenDuration(t *testing.T) {
	samples := []Sample{{At: 0, Latency: time.Millisecond, Code: 200}, {At: time.Second, Latency: time.Millisecond, Code: 202}}
	got := Summarize("x", samples, 4*time.Second)
	if got.Throughput != 0.5 || got.DurationS != 4 || got.Rate != 1 {
		t.Errorf("throughput %v over %vs at rate %v, want 0.5 over 4s at rate 1", got.Throughput, got.DurationS, got.Rate)
	}
}

func TestSummarizeEmpty(t *testing.T) {
	got := Summarize("none", nil, 0)
	if got.Requests != 0 || got.P99Ms != 0 || got.Success != 0 || got.StatusCodes == nil {
		t.Errorf("empty summary = %+v", got)
	}
}

func TestSummarizeKeepsFewDistinctErrors(t *testing.T) {
	var samples []Sample
	for i := range 20 {
		samples = append(samples, Sample{Latency: time.Millisecond, Err: fmt.Sprintf("err %d", i%8)}, Sample{Latency: time.Millisecond, Err: "err 0"})
	}
	got := Summarize("errs", samples, 0)
	if len(got.Errors) != maxErrors {
		t.Errorf("kept %d errors %q, want %d distinct", len(got.Errors), got.Errors, maxErrors)
	}
}

func TestWindows(t *testing.T) {
	samples := []Sample{
		{At: 100 * time.Millisecond, Latency: 1 * time.Millisecond},
		{At: 900 * time.Millisecond, Latency: 3 * time.Millisecond},
		{At: 2500 * time.Millisecond, Latency: 9 * time.Millisecond},
		{At: 0, Latency: 2 * time.Millisecond},
	}
	got := Windows(samples, time.Second)
	want := []Window{
		{StartS: 0, Count: 3, P50Ms: 2, P99Ms: 3, MaxMs: 3},
		{StartS: 2, Count: 1, P50Ms: 9, P99Ms: 9, MaxMs: 9},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Windows mismatch (-want +got):\n%s", d)
	}
	if Windows(samples, 0) != nil || Windows(nil, time.Second) != nil {
		t.Error("Windows with no width or no samples must be nil")
	}
}

func BenchmarkSummarize(b *testing.B) {
	samples := make([]Sample, 100_000)
	for i := range samples {
		samples[i] = Sample{At: time.Duration(i) * 500 * time.Microsecond, Latency: time.Duration(i*7919%100_000) * time.Microsecond, Code: 200}
	}
	b.ReportAllocs()
	for b.Loop() {
		Summarize("bench", samples, 0)
	}
}
