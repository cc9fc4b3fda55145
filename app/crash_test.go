package main

// End-to-end tests of the built binary: the write-behind usage sync through
// SIGKILLs (exactly once), the embedded default, and a SIGTERM that drains a
// request in flight.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// crashTally counts what the clients saw in the crash test.
type crashTally struct {
	ok        atomic.Int64 // 200: counted, and the client knows it
	ambiguous atomic.Int64 // transport failure after the request may have been sent
	refused   atomic.Int64 // connection refused: never reached the service
	other     atomic.Int64 // any other status (must stay 0)
}

// driveUntilKill runs workers goroutines of queries against p, SIGKILLs it
// after loadFor while they run, waits for them, and tallies the outcomes.
func driveUntilKill(t *testing.T, p *proc, users []user, workers int, loadFor time.Duration, tally *crashTally) {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	const body = `{"items":["a","b","c"]}`
	var killed atomic.Bool
	var started sync.WaitGroup
	var wg sync.WaitGroup
	started.Add(workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for i := w; !killed.Load(); i++ {
				u := users[i%len(users)]
				req := queryRequest(p.base, u.token, body)
				if first {
					started.Done()
					first = false
				}
				resp, err := cl.Do(req)
				switch {
				case err != nil && errors.Is(err, syscall.ECONNREFUSED):
					tally.refused.Add(1)
				case err != nil:
					tally.ambiguous.Add(1)
				case resp.StatusCode == 200:
					// The status line means the handler ran to the end:
					// counted, whether or not the body then arrives.
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					tally.ok.Add(1)
				default:
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					tally.other.Add(1)
					t.Errorf("unexpected status %d: %s", resp.StatusCode, tail(string(raw), 200))
				}
			}
		}()
	}
	started.Wait()
	// The kill lands at a random moment while every worker is sending.
	time.Sleep(loadFor)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	<-p.done
	killed.Store(true)
	wg.Wait()
}

// TestSyncCrashExactlyOnce SIGKILLs the service at random moments under
// load (SYNC_INTERVAL=20ms, so kills land during syncs), restarts it, forces
// a sync, and checks that every count that reached Valkey reached Postgres
// exactly once, and that Postgres holds the 200s seen (plus at most the
// requests whose outcome the client could not know).
func TestSyncCrashExactlyOnce(t *testing.T) {
	env := binaryEnv(realBackendEnv(t, "SIGKILLed processes must find their counts in a Postgres and a Valkey that outlive them"),
		"SYNC_INTERVAL", "20ms", "SHUTDOWN_TIMEOUT", "10s")
	bin := binary(t)
	rounds := 4
	if v := os.Getenv("WARMPATH_CRASH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("WARMPATH_CRASH_ROUNDS=%q: want a positive integer", v)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("seed %d, %d rounds", seed, rounds)

	const workers = 24
	var users []user
	var tally crashTally
	for round := range rounds {
		p := startProc(t, bin, ".", env)
		if round == 0 {
			for range 10 {
				users = append(users, p.inst().newUser(t, "free", ptr[int64](1_000_000_000)))
			}
		}
		loadFor := 100*time.Millisecond + time.Duration(rng.Int64N(int64(300*time.Millisecond)))
		before := tally.ok.Load()
		driveUntilKill(t, p, users, workers, loadFor, &tally)
		t.Logf("round %d: killed after %s of load; %d ok so far (+%d)", round+1, loadFor.Round(time.Millisecond), tally.ok.Load(), tally.ok.Load()-before)
	}

	// Recovery: one more start picks up what the dead instances left (their
	// claimed batches once the lease expires), then a clean stop.
	final := maps.Clone(env)
	final["LOG_LEVEL"] = "info" // to count the batches taken over
	p := startProc(t, bin, ".", final)
	st := drainSync(t, p.admin, 30*time.Second)
	duplicates := p.inst().metric(t, "warmpath_usage_sync_batches_total", "result", "duplicate")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
	takenOver := strings.Count(p.stderr.String(), "taken over from a dead owner")

	pg := persistedUsage(t, env["DATABASE_URL"])
	vk := hotCounts(t, env["VALKEY_URL"], env["VALKEY_PREFIX"], users)
	pgTotal, vkTotal := sumCounts(pg), sumCounts(vk)
	ok, amb := tally.ok.Load(), tally.ambiguous.Load()
	t.Logf("crash figures: rounds=%d ok=%d ambiguous=%d refused=%d other=%d postgres=%d valkey=%d "+
		"(postgres-ok=%d) last batch=%+v duplicate batches after restart=%v batches taken over from dead owners=%d",
		rounds, ok, amb, tally.refused.Load(), tally.other.Load(), pgTotal, vkTotal, pgTotal-ok, st.LastBatch, duplicates, takenOver)

	// (a) The sync itself is exactly once: every count that reached Valkey
	// reached Postgres, once.
	if d := cmp.Diff(vk, pg); d != "" {
		t.Errorf("per-user counts: Valkey (-) vs Postgres (+):\n%s", d)
	}
	// (b) Postgres holds every 200, and at most the requests whose outcome
	// the client could not know on top.
	if pgTotal < ok || pgTotal > ok+amb {
		t.Errorf("postgres total %d outside [ok=%d, ok+ambiguous=%d]", pgTotal, ok, ok+amb)
	}
	if ok == 0 {
		t.Errorf("no request succeeded: the test proved nothing")
	}
}

// TestBinaryEmbeddedDefault runs the built binary with an empty environment
// (bar PATH, HOME and port-0 listeners) outside the repository: it prints
// demo tokens, answers a query with one, and the "next" block's curl works as
// printed.
func TestBinaryEmbeddedDefault(t *testing.T) {
	bin := binary(t)
	p := startProc(t, bin, t.TempDir(), map[string]string{"HTTP_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0"})
	m := regexp.MustCompile(`demo user alice\s+plan=free\s+id=\d+ token=(wp_\S+)`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no demo token printed:\n%s", p.stdout.String())
	}
	r := p.inst().query(t, m[1], "https://example.com/a", "https://example.com/zzz")
	r.wantMissing(t, "query", "https://example.com/zzz")

	// The "next" block: the demo page, a curl that works as printed, admin.
	out := p.stdout.String()
	for _, want := range []string{"demo page   " + p.base + "/", "API         " + p.base + "/openapi.json", "admin       " + p.admin + "/admin/warmup"} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up output lacks %q:\n%s", want, out)
		}
	}
	c := regexp.MustCompile(`try it +curl -s -X POST (\S+) -H 'Authorization: Bearer (\S+)' -H 'Content-Type: application/json' -d '(.+)'\n`).FindStringSubmatch(out)
	if c == nil {
		t.Fatalf("no curl to try in the start-up output:\n%s", out)
	}
	var body any
	if err := json.Unmarshal([]byte(c[3]), &body); err != nil {
		t.Fatalf("printed curl body %q: %v", c[3], err)
	}
	got := call(t, "POST", c[1], c[2], body)
	got.wantMissing(t, "printed curl", "an-item-you-do-not-have")
	if !strings.Contains(p.stderr.String(), "NOT persisted") {
		t.Errorf("embedded mode must say loudly that nothing is persisted")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
}

// string → chan struct{}

// TestSIGTERMDrainsInFlight sends SIGTERM while a slow query (Postgres
// behind a 300 ms latency toxic, warmup off, so the query is cold) is being
// handled: the query still gets its 200, its count is flushed, and the
// process exits 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	env := realBackendEnv(t, "a toxiproxy latency on Postgres holds the query in flight; the flush is read back from Postgres")
	bin := binary(t)
	px, direct := proxyPostgres(t, env)
	binaryEnv(env, "WARMUP_STRATEGY", "off", "SYSTEM_WARMUP_HOT_USERS", "0", "SHUTDOWN_TIMEOUT", "15s")
	p := startProc(t, bin, ".", env)
	u := p.inst().newUser(t, "free", nil)

	addToxic(t, px, `{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":300}}`)
	tap := addTap(t, px)
	select { // forget traffic from before the request
	case <-tap:
	default:
	}

	wrote := make(chan struct{})
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			"POST", p.base+"/api/hasNotEngine-ultra-fast", strings.NewReader(`{"items":["x","y"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		res <- result{status: resp.StatusCode, body: string(raw)}
	}()
	// In flight: written by the client, and the service has gone to Postgres
	// for it (the proxy saw traffic after the request was written).
	before := func(step <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-step:
		case r := <-res:
			t.Fatalf("query answered before %s (not in flight at SIGTERM): %+v", what, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting until %s", what)
		}
	}
	before(wrote, "it was written")
	before(tap, "the service went to Postgres for it")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("in-flight query never answered")
	}
	if r.err != nil || r.status != 200 {
		t.Fatalf("in-flight query at SIGTERM: status %d err %v body %s", r.status, r.err, r.body)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
	// The drained request was counted and the shutdown flush persisted it.
	if got := persistedTotal(t, direct); got != 1 {
		t.Fatalf("postgres total after shutdown = %d, want 1", got)
	}
}

// stopTally counts, per user, what the clients of the graceful-stop test saw.
type stopTally struct {
	mu        sync.Mutex
	ok        map[int64]int64 // 200: counted, and the client knows it
	ambiguous map[int64]int64 // cut after it may have been sent: counted or not
	refused   atomic.Int64    // never reached an instance
	other     atomic.Int64    // any other status (must stay 0)
}

// TestLastGracefulStopAfterKillsLosesNothing reproduces the loss of counts
// held by killed instances: three instances share the backends under load,
// clients retrying every failure on the next instance; one instance is
// SIGKILLed, then another during a forced sync (its Postgres is slow, so the
// kill lands while it holds a claimed batch under a live lease), then the
// last one stops gracefully and the test empties Valkey (every key of its
// prefix). Postgres must hold every 200: lost is exactly 0. Requests cut by a
// kill, whose outcome the client cannot know, are a tolerance on the
// doubled side only (retries without an Idempotency-Key).
func TestLastGracefulStopAfterKillsLosesNothing(t *testing.T) {
	env := binaryEnv(realBackendEnv(t, "instances are killed and the last stop is read back from Postgres after Valkey is emptied"),
		"SYNC_INTERVAL", "50ms", "SHUTDOWN_TIMEOUT", "15s")
	bin := binary(t)

	slow := maps.Clone(env)
	slow["DATABASE_URL"] = slowDatabase(t, env["DATABASE_URL"], 400*time.Millisecond)
	last := maps.Clone(env)
	last["LOG_LEVEL"] = "info" // to see the last stop's work
	procs := []*proc{startProc(t, bin, ".", env), startProc(t, bin, ".", slow), startProc(t, bin, ".", last)}
	var users []user
	for range 10 {
		users = append(users, procs[0].inst().newUser(t, "free", ptr[int64](1_000_000_000)))
	}

	// live holds the base URLs the clients may use; a killed instance is
	// taken out only after the kill, so clients see the kill as it happens.
	var liveMu sync.Mutex
	live := []string{procs[0].base, procs[1].base, procs[2].base}
	drop := func(base string) {
		liveMu.Lock()
		defer liveMu.Unlock()
		live = slices.DeleteFunc(live, func(b string) bool { return b == base })
	}
	tally := stopTally{ok: map[int64]int64{}, ambiguous: map[int64]int64{}}
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	var stopLoad atomic.Bool
	var wg sync.WaitGroup
	const workers = 12
	for w := range workers {
		wg.Go(func() {
			for i := w; !stopLoad.Load(); i++ {
				u := users[i%len(users)]
				liveMu.Lock()
				if len(live) == 0 {
					liveMu.Unlock()
					return
				}
				base := live[i%len(live)]
				liveMu.Unlock()
				resp, err := cl.Do(queryRequest(base, u.token, `{"items":["a","b"]}`))
				switch {
				case err != nil && errors.Is(err, syscall.ECONNREFUSED):
					tally.refused.Add(1)
				case err != nil:
					tally.mu.Lock()
					tally.ambiguous[u.id]++
					tally.mu.Unlock()
				case resp.StatusCode == 200:
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					tally.mu.Lock()
					tally.ok[u.id]++
					tally.mu.Unlock()
				default:
					// A draining instance may refuse new work; the client
					// retries it elsewhere. Nothing was counted.
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusServiceUnavailable {
						tally.other.Add(1)
						t.Errorf("unexpected status %d: %s", resp.StatusCode, tail(string(raw), 200))
					}
				}
				// The next iteration is the retry (on the next instance).
			}
		})
	}
	kill := func(p *proc) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("SIGKILL: %v", err)
		}
		<-p.done
		drop(p.base)
	}

	time.Sleep(700 * time.Millisecond)
	kill(procs[0])
	time.Sleep(500 * time.Millisecond)
	// Forced sync on the slow instance; its batches take >400ms to apply,
	// so 150ms later it holds one, claimed and sealed, under a 5s lease.
	if r := call(t, "POST", procs[1].admin+"/admin/sync", "", nil); r.status != 202 {
		t.Fatalf("POST /admin/sync: %d %s", r.status, r.raw)
	}
	time.Sleep(150 * time.Millisecond)
	kill(procs[1])
	time.Sleep(200 * time.Millisecond)

	// The graceful stop of the last instance, well inside that lease and
	// the killed instances' liveness TTL.
	stopLoad.Store(true)
	if err := procs[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	wg.Wait()
	stopped := time.Now()
	if code := procs[2].wait(t, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0; stderr:\n%s", code, tail(procs[2].stderr.String(), 3000))
	}
	stopTook := time.Since(stopped)
	stderr := procs[2].stderr.String()
	if strings.Contains(stderr, "final usage flush incomplete") {
		t.Errorf("the last stop did not finish its flush:\n%s", tail(stderr, 3000))
	}

	// Valkey emptied (a restart without persistence): only this test's keys.
	deleteValkeyPrefix(t, env["VALKEY_URL"], env["VALKEY_PREFIX"])

	pg := persistedUsage(t, env["DATABASE_URL"])
	var ok, amb, lost, doubled int64
	for _, u := range users {
		o, a, p := tally.ok[u.id], tally.ambiguous[u.id], pg[u.id]
		ok, amb = ok+o, amb+a
		if p < o {
			lost += o - p
			t.Errorf("user %d: postgres %d < %d answered 200: %d lost", u.id, p, o, o-p)
		}
		if p > o+a {
			t.Errorf("user %d: postgres %d > 200s %d + cut requests %d", u.id, p, o, a)
		}
		if p > o {
			doubled += p - o
		}
	}
	t.Logf("graceful-stop figures: ok=%d ambiguous=%d refused=%d other=%d postgres=%d lost=%d doubled=%d (≤ ambiguous) last stop took %s; last stop log: finishing=%v",
		ok, amb, tally.refused.Load(), tally.other.Load(), sumCounts(pg), lost, doubled, stopTook.Round(time.Millisecond),
		strings.Contains(stderr, "last instance to stop"))
	if ok == 0 {
		t.Errorf("no request succeeded: the test proved nothing")
	}
	if !strings.Contains(stderr, "last instance to stop") {
		t.Errorf("the last instance never finished the queue:\n%s", tail(stderr, 3000))
	}
}
