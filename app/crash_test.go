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
	body := []byte(`{"items":["a","b","c"]}`)
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
				req, _ := http.NewRequest("POST", p.base+"/api/hasNotEngine-ultra-fast", strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+u.token)
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
	env := realBackendEnv(t, "SIGKILLed processes must find their counts in a Postgres and a Valkey that outlive them")
	bin := binary(t)
	env["HTTP_ADDR"] = "127.0.0.1:0"
	env["ADMIN_ADDR"] = "127.0.0.1:0"
	env["SYNC_INTERVAL"] = "20ms"
	env["LOG_LEVEL"] = "warn"
	env["SHUTDOWN_TIMEOUT"] = "10s"
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
	env["HTTP_ADDR"] = "127.0.0.1:0"
	env["ADMIN_ADDR"] = "127.0.0.1:0"
	env["WARMUP_STRATEGY"] = "off"
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	env["SHUTDOWN_TIMEOUT"] = "15s"
	env["LOG_LEVEL"] = "warn"
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
