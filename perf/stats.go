package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Sample is one request as the load generator saw it.
type Sample struct {
	// At is when the request was sent, relative to the start of its run.
	At time.Duration
	// Latency is send → last byte of the response.
	Latency time.Duration
	// Code is the HTTP status; 0 when the request failed in transport.
	Code uint16
	// Err is the transport error, if any.
	Err string
	// URL is the request's URL (the target's own string, not a copy), so a
	// mixed load can be split by endpoint.
	URL string
}

// ok reports whether the sample is a success: a 2xx answer.
func (s Sample) ok() bool { return s.Code >= 200 && s.Code < 300 }

// Summary is what a run reports: rates, success and exact latency
// percentiles (nearest rank over every sample, no estimation).
type Summary struct {
	Name        string         `json:"name"`
	Requests    int            `json:"requests"`
	DurationS   float64        `json:"durationS"`
	Rate        float64        `json:"rate"`       // requests sent per second
	Throughput  float64        `json:"throughput"` // 2xx answers per second
	Success     float64        `json:"success"`    // share of 2xx answers, 0..1
	P50Ms       float64        `json:"p50Ms"`
	P90Ms       float64        `json:"p90Ms"`
	P99Ms       float64        `json:"p99Ms"`
	P999Ms      float64        `json:"p999Ms"`
	MaxMs       float64        `json:"maxMs"`
	MeanMs      float64        `json:"meanMs"`
	StatusCodes map[string]int `json:"statusCodes"`
	Errors      []string       `json:"errors,omitempty"`
}

// maxErrors bounds the distinct transport errors a summary keeps.
const maxErrors = 5

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. sorted must be ascending; an empty slice gives 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize computes the summary of a run's samples. The send rate comes from
// the span of send times; throughput is 2xx answers over d, or, when d is 0,
// over the time from the first send to the last answer.
func Summarize(name string, samples []Sample, d time.Duration) Summary {
	s := Summary{Name: name, Requests: len(samples), DurationS: d.Seconds(), StatusCodes: map[string]int{}}
	if len(samples) == 0 {
		return s
	}
	lat := make([]time.Duration, len(samples))
	var sum time.Duration
	okCount := 0
	errs := map[string]bool{}
	var span, end time.Duration
	for i, x := range samples {
		lat[i] = x.Latency
		sum += x.Latency
		s.StatusCodes[strconv.Itoa(int(x.Code))]++
		if x.ok() {
			okCount++
		}
		if x.Err != "" && !errs[x.Err] && len(errs) < maxErrors {
			errs[x.Err] = true
			s.Errors = append(s.Errors, x.Err)
		}
		span = max(span, x.At)
		end = max(end, x.At+x.Latency)
	}
	slices.Sort(lat)
	s.P50Ms = ms(Percentile(lat, 50))
	s.P90Ms = ms(Percentile(lat, 90))
	s.P99Ms = ms(Percentile(lat, 99))
	s.P999Ms = ms(Percentile(lat, 99.9))
	s.MaxMs = ms(lat[len(lat)-1])
	s.MeanMs = ms(sum / time.Duration(len(lat)))
	s.Success = float64(okCount) / float64(len(samples))
	if d <= 0 {
		d = end
	}
	s.DurationS = d.Seconds()
	// n requests sent at a constant rate are n-1 intervals apart.
	if span > 0 {
		s.Rate = float64(len(samples)-1) / span.Seconds()
	}
	if d > 0 {
		s.Throughput = float64(okCount) / d.Seconds()
	}
	return s
}

// Window is one time bucket of a run, for the charts.
type Window struct {
	StartS float64 `json:"startS"`
	Count  int     `json:"count"`
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
}

// Windows buckets samples by send time into windows of width w and gives each
// non-empty window its percentiles, in time order.
func Windows(samples []Sample, w time.Duration) []Window {
	if w <= 0 || len(samples) == 0 {
		return nil
	}
	buckets := map[int][]time.Duration{}
	for _, x := range samples {
		i := int(x.At / w)
		buckets[i] = append(buckets[i], x.Latency)
	}
	keys := make([]int, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	out := make([]Window, 0, len(keys))
	for _, k := range keys {
		lat := buckets[k]
		slices.Sort(lat)
		out = append(out, Window{
			StartS: (time.Duration(k) * w).Seconds(), Count: len(lat),
			P50Ms: ms(Percentile(lat, 50)), P99Ms: ms(Percentile(lat, 99)), MaxMs: ms(lat[len(lat)-1]),
		})
	}
	return out
}

// ms is d in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// durations sorts a copy of the samples' latencies.
func durations(samples []Sample) []time.Duration {
	lat := make([]time.Duration, len(samples))
	for i, x := range samples {
		lat[i] = x.Latency
	}
	slices.Sort(lat)
	return lat
}

// median is the middle of xs (the mean of the two middle values for an even
// count); 0 for none. Repeated runs are summarised by their median: one run
// disturbed by a neighbour's burst of CPU moves it by at most one rank.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
