package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// AttackSpec describes one run of load.
//
// With Rate > 0 it is an open model: requests are sent at a constant arrival
// rate whatever the answers do, and vegeta adds workers when all are busy, so
// a slow answer never delays the next send (no coordinated omission).
// With Rate == 0 it is a closed loop for maximum throughput: exactly Workers
// concurrent requests on at most Workers connections, each sent as soon as
// the previous one of its worker is answered (vegeta's rate=0 mode).
type AttackSpec struct {
	Name     string
	Rate     int
	Duration time.Duration // 0: until the targeter runs out of targets
	Workers  int           // initial workers (open model) or the concurrency (closed loop)
	Timeout  time.Duration // per request; default 10s
	// Warmup is sent before Duration at the same rate on the same
	// connections, and its samples are dropped: connection set-up, vegeta
	// growing its workers and the service's first-use costs never land in
	// the measured figures. Duration is the measured part.
	Warmup   time.Duration
	Targeter vegeta.Targeter
}

// Run is a finished attack: every sample, in send order.
type Run struct {
	Spec    AttackSpec
	Started time.Time
	Samples []Sample // the measured ones, At relative to the end of the warm-up
	// WarmupSamples is how many requests the warm-up sent (not in Samples).
	WarmupSamples int
	Summary       Summary
}

// Attack runs spec until its duration is over, its targets run out or ctx is
// done, and returns every sample.
func Attack(ctx context.Context, spec AttackSpec) Run {
	if spec.Timeout <= 0 {
		spec.Timeout = 10 * time.Second
	}
	workers := uint64(max(spec.Workers, 1))
	opts := []func(*vegeta.Attacker){
		vegeta.Timeout(spec.Timeout),
		vegeta.Workers(workers),
		vegeta.KeepAlive(true),
		vegeta.Redirects(vegeta.NoFollow),
	}
	pacer := vegeta.Rate{Freq: spec.Rate, Per: time.Second}
	if spec.Rate <= 0 {
		pacer = vegeta.Rate{Freq: 0, Per: time.Second}
		opts = append(opts, vegeta.MaxWorkers(workers), vegeta.MaxConnections(int(workers)))
	}
	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	run := Run{Spec: spec, Started: time.Now()}
	expected := int(float64(spec.Rate) * spec.Duration.Seconds())
	run.Samples = make([]Sample, 0, max(expected, 1024))
	total := spec.Duration
	if total > 0 {
		total += spec.Warmup
	}
	for r := range atk.Attack(spec.Targeter, pacer, total, spec.Name) {
		if r.Method == "" && r.Error == vegeta.ErrNoTargets.Error() {
			continue // the end-of-targets marker, not a request
		}
		s := Sample{At: r.Timestamp.Sub(run.Started) - spec.Warmup, Latency: r.Latency, Code: r.Code, URL: r.URL}
		if r.Code == 0 {
			s.Err = r.Error
		}
		if s.At < 0 {
			run.WarmupSamples++
			continue
		}
		run.Samples = append(run.Samples, s)
	}
	run.Summary = Summarize(spec.Name, run.Samples, 0)
	return run
}

// bearer is the headers of an authenticated JSON request.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
}

// rotate returns a targeter that cycles through targets forever; it is safe
// for vegeta's concurrent workers.
func rotate(targets []vegeta.Target) vegeta.Targeter {
	var n atomic.Uint64
	return func(t *vegeta.Target) error {
		if len(targets) == 0 {
			return vegeta.ErrNoTargets
		}
		*t = targets[(n.Add(1)-1)%uint64(len(targets))]
		return nil
	}
}

// withIdempotencyKeys gives every target of next a fresh Idempotency-Key.
func withIdempotencyKeys(next vegeta.Targeter) vegeta.Targeter {
	prefix := randHex(8)
	var n atomic.Uint64
	return func(t *vegeta.Target) error {
		if err := next(t); err != nil {
			return err
		}
		t.Header = t.Header.Clone()
		t.Header.Set("Idempotency-Key", prefix+"-"+strconv.FormatUint(n.Add(1), 10))
		return nil
	}
}

// once returns a targeter that hands out each target once, then stops the
// attack: for workloads where every request must be a different user's first.
func once(targets []vegeta.Target) vegeta.Targeter {
	var n atomic.Uint64
	return func(t *vegeta.Target) error {
		i := n.Add(1) - 1
		if i >= uint64(len(targets)) {
			return vegeta.ErrNoTargets
		}
		*t = targets[i]
		return nil
	}
}

// errNoUsers is returned when a workload has nobody to act as.
var errNoUsers = errors.New("no users provisioned")
