package main

// Several instances on one Postgres and one Valkey: a quota boundary hit
// through three of them at once, and a rolling restart of three binaries
// under steady load with clients that retry with their Idempotency-Key.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/warmup"
	"github.com/warmpath/warmpath/internal/loopback"
)

// answer is one HTTP exchange seen by a load client; err is a transport
// failure (no status).
type answer struct {
	status int
	header http.Header
	raw    []byte
	err    error
}

func (a answer) errCode() string {
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(a.raw, &body)
	return body.Error.Code
}

// post sends one metered query through cl without a testing.TB (it runs in
// load goroutines); key is sent as Idempotency-Key when not empty.
func post(ctx context.Context, cl *http.Client, base, token, key string, body []byte) answer {
	return postBody(ctx, cl, base, token, key, bytes.NewReader(body), len(body))
}

// postBody is post with the body read from rd (n bytes).
func postBody(ctx context.Context, cl *http.Client, base, token, key string, rd io.Reader, n int) answer {
	req, err := http.NewRequestWithContext(ctx, "POST", base+queryRoute, rd)
	if err != nil {
		return answer{err: err}
	}
	req.ContentLength = int64(n)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{err: fmt.Errorf("status %d, body cut: %w", resp.StatusCode, err)}
	}
	return answer{status: resp.StatusCode, header: resp.Header, raw: raw}
}

// TestThreeInstancesQuotaBoundary: users with a quota of 50 are hit at once
// through three instances (3×quota requests each, round-robin, half of them
// with an Idempotency-Key of their own): exactly 50 are admitted per user,
// each with a distinct usage count 1…50, the rest are 429 quota_exceeded
// with Retry-After, and Postgres ends with exactly 50 per user. A warmup
// posted on one instance reads the same on all three.
func TestThreeInstancesQuotaBoundary(t *testing.T) {
	env := realBackendEnv(t, "three instances share one Postgres and one Valkey")
	// No hot users: a system job of another instance would hold a user's
	// warmup lock, and the login warmup would ride on it (see
	// TestWarmupAcrossInstances).
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	insts := []*instance{start(t, env), start(t, env), start(t, env)}

	const (
		quota   = 50
		nUsers  = 4
		perUser = 3 * quota
		workers = 48
	)
	users := make([]user, nUsers)
	for i := range users {
		users[i] = insts[i%3].newUser(t, "free", ptr[int64](quota))
	}

	type result struct {
		user int
		answer
	}
	jobs := make(chan int)
	results := make(chan result, nUsers*perUser)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				u := i % nUsers
				key := ""
				if i%2 == 0 {
					key = "boundary-" + strconv.Itoa(i)
				}
				results <- result{user: u, answer: post(ctx, client, insts[i%3].base, users[u].token, key, []byte(`{"items":["x"]}`))}
			}
		})
	}
	for i := range nUsers * perUser {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(results)

	statuses := make([]map[int]int, nUsers)
	used := make([][]int, nUsers)
	for i := range statuses {
		statuses[i] = map[int]int{}
	}
	var bad []string
	for r := range results {
		switch {
		case r.err != nil:
			bad = append(bad, "transport: "+r.err.Error())
			continue
		case r.status == 200:
			var body struct {
				Usage struct {
					Used  int `json:"used"`
					Limit int `json:"limit"`
				} `json:"usage"`
			}
			if err := json.Unmarshal(r.raw, &body); err != nil || body.Usage.Limit != quota {
				bad = append(bad, fmt.Sprintf("200 with usage %+v (%v): %s", body.Usage, err, r.raw))
			}
			used[r.user] = append(used[r.user], body.Usage.Used)
		case r.status == 429:
			if r.errCode() != "quota_exceeded" || r.header.Get("Retry-After") == "" {
				bad = append(bad, fmt.Sprintf("429 %q Retry-After %q: %s", r.errCode(), r.header.Get("Retry-After"), r.raw))
			}
		default:
			bad = append(bad, fmt.Sprintf("%d: %s", r.status, tail(string(r.raw), 200)))
		}
		statuses[r.user][r.status]++
	}
	if len(bad) > 0 {
		t.Fatalf("%d unexpected answers, first: %s", len(bad), strings.Join(bad[:min(5, len(bad))], "\n"))
	}
	want := make([]int, quota)
	for i := range want {
		want[i] = i + 1
	}
	for u := range users {
		if d := cmp.Diff(map[int]int{200: quota, 429: perUser - quota}, statuses[u]); d != "" {
			t.Errorf("user %d: statuses (-want +got):\n%s", u, d)
		}
		slices.Sort(used[u])
		if d := cmp.Diff(want, used[u]); d != "" {
			t.Errorf("user %d: the admitted requests' usage.used must be 1…%d, each once (-want +got):\n%s", u, quota, d)
		}
	}
	t.Logf("quota boundary: %d users × %d requests through 3 instances, statuses per user %v", nUsers, perUser, statuses)

	// Postgres holds exactly the 200s once each instance has synced.
	for _, in := range insts {
		drainSync(t, in.admin, 30*time.Second)
	}
	pg := persistedUsage(t, env["DATABASE_URL"])
	wantPG := map[int64]int64{}
	for _, u := range users {
		wantPG[u.id] = quota
	}
	if d := cmp.Diff(wantPG, pg); d != "" {
		t.Errorf("persisted usage per user (-want +got):\n%s", d)
	}

	// A warmup posted on one instance reads the same on every instance,
	// while it runs and once it is ready.
	for i, u := range users {
		if r := postWarmup(t, insts[i%3], u.token); r.status != 202 {
			t.Fatalf("POST warmup through instance %d: %d %s", i%3, r.status, r.raw)
		}
	}
	for i, u := range users {
		waitWarmup(t, insts[(i+1)%3], u.token, warmup.StateReady)
		_, first := userWarmup(t, insts[0], u.token)
		for j, in := range insts[1:] {
			_, got := userWarmup(t, in, u.token)
			if d := cmp.Diff(string(first), string(got)); d != "" {
				t.Errorf("user %d: warmup status differs between instance 0 and %d (-0 +%d):\n%s", i, j+1, j+1, d)
			}
		}
		st, _ := userWarmup(t, insts[2], u.token)
		for _, part := range []string{warmup.PartSession, warmup.PartUsage, warmup.PartItems} {
			if st.Parts[part].State != warmup.StateReady {
				t.Errorf("user %d: part %s %+v, want ready", i, part, st.Parts[part])
			}
		}
	}
	// Quota exhausted stays exhausted on every instance after the warmup
	// reloaded the counter.
	for i, in := range insts {
		if r := in.query(t, users[i].token, "x"); r.status != 429 || r.errCode() != "quota_exceeded" {
			t.Errorf("instance %d after warmup: %d %s, want 429 quota_exceeded", i, r.status, r.raw)
		}
	}
}

// rollingTally is what the rolling-restart load saw.
type rollingTally struct {
	mu       sync.Mutex
	attempts map[string]int // per attempt: "200", "200 replayed", "409", "503", "refused", "transport", …
	final    map[int]int    // per logical request: its final status (0: gave up)
	okKeys   map[string]int // keys answered 200, per user index
	maxLat   time.Duration
	retries  int
	failures []string
	// gen[i] is the generation of instance i (bumped once the old process
	// has exited); served[i][g] the 200s that generation g of i gave.
	gen    [3]atomic.Int64
	served [3]map[int64]int
	// inFlight[i] is the number of requests sent to instance i and not yet
	// answered; atSIGTERM sums it at each restart's SIGTERM.
	inFlight  [3]atomic.Int64
	atSIGTERM int64
	logical   atomic.Int64
	completed atomic.Int64
}

func (r *rollingTally) fail(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) < 20 {
		r.failures = append(r.failures, s)
	}
}

// slowBody is a request body whose second half comes pause after its
// first: a slow client, still uploading when a SIGTERM lands.
type slowBody struct {
	first, rest []byte
	pause       time.Duration
}

func newSlowBody(b []byte, pause time.Duration) *slowBody {
	return &slowBody{first: b[:len(b)/2], rest: b[len(b)/2:], pause: pause}
}

func (s *slowBody) Read(p []byte) (int, error) {
	if len(s.first) > 0 {
		n := copy(p, s.first)
		s.first = s.first[n:]
		return n, nil
	}
	if s.pause > 0 {
		time.Sleep(s.pause)
		s.pause = 0
	}
	if len(s.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.rest)
	s.rest = s.rest[n:]
	return n, nil
}

// retryDelay is how long to wait before retrying a after an answer that
// asks for it (Retry-After, capped), or a short pause.
func retryDelay(a answer) time.Duration {
	if a.header != nil {
		if s, err := strconv.Atoi(a.header.Get("Retry-After")); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, 3*time.Second)
		}
	}
	return 50 * time.Millisecond
}

// logicalRequest sends one logical request (one Idempotency-Key) until it
// has a 200, moving to the next backend on a refused connection at once and
// retrying with the same key after transport errors, 503 and 409.
func logicalRequest(ctx context.Context, cl *http.Client, backends []string, first int, token string, user int, key string, slow time.Duration, tally *rollingTally) {
	const maxAttempts = 40
	body := []byte(`{"items":["a","b","c"]}`)
	began := time.Now()
	defer tally.completed.Add(1)
	for attempt := range maxAttempts {
		if ctx.Err() != nil {
			break
		}
		bi := (first + attempt) % len(backends)
		gen := tally.gen[bi].Load()
		tally.inFlight[bi].Add(1)
		var a answer
		if slow > 0 {
			a = postBody(ctx, cl, backends[bi], token, key, newSlowBody(body, slow), len(body))
		} else {
			a = post(ctx, cl, backends[bi], token, key, body)
		}
		tally.inFlight[bi].Add(-1)
		label := strconv.Itoa(a.status)
		switch {
		case a.err != nil && errors.Is(a.err, syscall.ECONNREFUSED):
			label = "refused"
		case a.err != nil:
			label = "transport"
		case a.status == 200 && a.header.Get("Idempotent-Replayed") == "true":
			label = "200 replayed"
		}
		tally.mu.Lock()
		tally.attempts[label]++
		if attempt > 0 {
			tally.retries++
		}
		tally.mu.Unlock()
		switch {
		case label == "refused":
			continue // never reached a service: the next backend at once
		case a.err != nil:
			time.Sleep(retryDelay(a))
			continue
		case a.status == 200:
			lat := time.Since(began)
			tally.mu.Lock()
			tally.final[200]++
			tally.okKeys[key] = user
			tally.served[bi][gen]++
			tally.maxLat = max(tally.maxLat, lat)
			tally.mu.Unlock()
			return
		case a.status == 503 || (a.status == 409 && a.errCode() == "idempotency_key_in_use"):
			time.Sleep(retryDelay(a))
			continue
		default:
			tally.mu.Lock()
			tally.final[a.status]++
			tally.mu.Unlock()
			tally.fail(fmt.Sprintf("%s: %d %s", key, a.status, tail(string(a.raw), 200)))
			return
		}
	}
	tally.mu.Lock()
	tally.final[0]++
	tally.mu.Unlock()
	tally.fail(fmt.Sprintf("%s: no 200 after %d attempts or before the deadline", key, maxAttempts))
}

// TestRollingRestartUnderLoad runs three service binaries on one Postgres
// and one Valkey under a steady load (about 200 logical requests a second,
// each with its own Idempotency-Key, spread round-robin; a client moves to
// the next instance on a refused connection and retries with the same key
// on a transport error, 503 or 409, honouring Retry-After) and restarts them
// one at a time: SIGTERM, exit 0, a new binary on the same port, ready, and
// load through it. Queries are cold on a Postgres behind a latency proxy and
// one in ten uploads its body slowly, so that each SIGTERM finds requests in
// handlers and uploads under way. Every logical request ends with a 200, and
// once the three have stopped gracefully Postgres holds exactly one unit
// per key answered 200, per user.
func TestRollingRestartUnderLoad(t *testing.T) {
	env := realBackendEnv(t, "three binaries restarted one by one must find counts and idempotency keys in a Postgres and a Valkey that outlive them")
	bin := binary(t)
	// SYNC_INTERVAL longer than a restart and than the final stop: counts
	// still pending when an instance is stopped reach Postgres only through
	// its shutdown flush (or a later instance's sync), never by luck of the
	// timer. HTTP_ADDR is set per instance below.
	binaryEnv(env, "SHUTDOWN_TIMEOUT", "10s", "SYNC_INTERVAL", "5s", "SYSTEM_WARMUP_DELAY", "10ms")
	// Requests that take a while, so that some are inside a handler when
	// each SIGTERM lands: every query is cold (no warmup) and goes to a
	// Postgres behind a latency proxy.
	direct := env["DATABASE_URL"]
	env["DATABASE_URL"] = slowDatabase(t, direct, 25*time.Millisecond)
	env["WARMUP_STRATEGY"] = "off"
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"

	addrs := make([]string, 3)
	for i := range addrs {
		var err error
		if addrs[i], err = loopback.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	procs := make([]*proc, 3)
	backends := make([]string, 3) // fixed: the load reads it while instances restart
	for i, a := range addrs {
		backends[i] = "http://" + a
	}
	startOn := func(i int) {
		e := maps.Clone(env)
		e["HTTP_ADDR"] = addrs[i]
		procs[i] = startProc(t, bin, ".", e)
		if procs[i].base != backends[i] {
			t.Fatalf("instance %d serves on %s, want %s", i, procs[i].base, backends[i])
		}
	}
	for i := range procs {
		startOn(i)
	}
	const nUsers = 20
	users := make([]user, nUsers)
	for i := range users {
		users[i] = procs[i%3].inst().newUser(t, "free", ptr[int64](1_000_000_000))
	}

	tally := &rollingTally{attempts: map[string]int{}, final: map[int]int{}, okKeys: map[string]int{}}
	for i := range tally.served {
		tally.served[i] = map[int64]int{}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Timeout: 15 * time.Second, Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	// The load: one logical request every 5 ms (open model, bounded by
	// maxLogical and by at most 128 in flight) until stop is closed; one in
	// ten is a slow upload (its body's second half slowUpload after the
	// first), which a draining instance may cut: its client retries.
	const (
		slowUpload = 300 * time.Millisecond
		every      = 5 * time.Millisecond
		maxLogical = 8000
		inFlight   = 128
	)
	stop := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		sem := make(chan struct{}, inFlight)
		var reqs sync.WaitGroup
		defer reqs.Wait()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range maxLogical {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sem <- struct{}{}
			tally.logical.Add(1)
			reqs.Go(func() {
				defer func() { <-sem }()
				u := i % nUsers
				var slow time.Duration
				if i%10 == 5 {
					slow = slowUpload
				}
				logicalRequest(ctx, cl, backends, i%3, users[u].token, u, fmt.Sprintf("roll-%d", i), slow, tally)
			})
		}
	})
	// servedBy waits until generation gen of instance i has answered n
	// requests 200 (the load runs through it).
	servedBy := func(i int, n int, what string) {
		gen := tally.gen[i].Load()
		eventually(t, 20*time.Second, what, func() bool {
			tally.mu.Lock()
			defer tally.mu.Unlock()
			return tally.served[i][gen] >= n
		})
	}
	for i := range procs {
		servedBy(i, 100, fmt.Sprintf("load through instance %d before the restarts", i))
	}
	began := time.Now()
	for i := range procs {
		old := procs[i]
		inFlight := tally.inFlight[i].Load()
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM instance %d: %v", i, err)
		}
		if code := old.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("instance %d: exit code %d after SIGTERM, want 0; stderr:\n%s", i, code, tail(old.stderr.String(), 3000))
		}
		tally.gen[i].Add(1) // requests sent from now on reach the new process
		startOn(i)
		tally.mu.Lock()
		tally.atSIGTERM += inFlight
		tally.mu.Unlock()
		t.Logf("instance %d restarted (%s into the restarts, %d requests in flight to it at SIGTERM, %d logical requests completed)",
			i, time.Since(began).Round(time.Millisecond), inFlight, tally.completed.Load())
		servedBy(i, 100, fmt.Sprintf("load through instance %d after its restart", i))
	}
	close(stop)
	load.Wait()

	// Every instance stops gracefully; Postgres then holds every count.
	for i, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM instance %d: %v", i, err)
		}
	}
	for i, p := range procs {
		if code := p.wait(t, 20*time.Second); code != 0 {
			t.Fatalf("final stop of instance %d: exit code %d, want 0; stderr:\n%s", i, code, tail(p.stderr.String(), 3000))
		}
	}

	tally.mu.Lock()
	defer tally.mu.Unlock()
	logical := tally.logical.Load()
	wantPG := map[int64]int64{}
	for _, u := range tally.okKeys {
		wantPG[users[u].id]++
	}
	pg := persistedUsage(t, direct)
	labels := slices.Collect(maps.Keys(tally.attempts))
	sort.Strings(labels)
	var seen []string
	for _, l := range labels {
		seen = append(seen, fmt.Sprintf("%s=%d", l, tally.attempts[l]))
	}
	t.Logf("rolling restart: logical requests=%d final 200=%d final other=%v attempts: %s retries=%d max latency=%s in flight at the SIGTERMs=%d postgres=%d 200s per instance and generation=%v",
		logical, tally.final[200], tally.final, strings.Join(seen, " "), tally.retries, tally.maxLat.Round(time.Millisecond), tally.atSIGTERM, sumCounts(pg), tally.served)

	if len(tally.failures) > 0 {
		t.Errorf("logical requests without a 200 (first %d):\n%s", len(tally.failures), strings.Join(tally.failures, "\n"))
	}
	if int64(tally.final[200]) != logical || int64(len(tally.okKeys)) != logical {
		t.Errorf("%d logical requests, %d answered 200 (%d distinct keys): every one must end with exactly one 200", logical, tally.final[200], len(tally.okKeys))
	}
	if d := cmp.Diff(wantPG, pg); d != "" {
		t.Errorf("persisted usage per user vs keys answered 200 (-want +got):\n%s", d)
	}
	if logical < 600 {
		t.Errorf("only %d logical requests: the load did not run through the restarts", logical)
	}
}
