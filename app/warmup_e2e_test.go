package main

// End-to-end tests of warmup (issue 3): system warmup that never blocks
// serving, warm answers across instances, the async and inline strategies,
// the full queue, and the first-query metric.
//
// Slow databases are made with toxiproxy (in process) between the service and
// Postgres. Where a test must observe a warmup that has not finished yet, it
// does not rely on latency alone (that would be a race against the clock): it
// holds the store call a warmup job waits on behind a gate (gate_test.go) —
// loading the item set, which no query does, or reading the persisted usage,
// which a query skips for a user whose counter is already seeded — on any
// backend, the embedded default included. The order of events is then fixed
// by the gate, not by timing.

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/warmup"
)

// provision creates n users through the admin API of in, each with items
// "a" and "b" and, when query is set, one metered query (which seeds the
// user's usage counter in Valkey and, once synced, marks the user active).
// At most 16 requests are in flight.
func provision(t *testing.T, in *instance, n int, query bool) []user {
	t.Helper()
	users := make([]user, n)
	errs := make(chan string, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			users[i] = in.newUser(t, "pro", nil)
			if r := in.items(t, users[i].token, []string{"a", "b"}, nil); r.status != 200 {
				errs <- fmt.Sprintf("items: %d %s", r.status, r.raw)
				return
			}
			if query {
				if r := in.query(t, users[i].token, "a", "z"); r.status != 200 {
					errs <- fmt.Sprintf("query: %d %s", r.status, r.raw)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("provision: %s", e)
	}
	return users
}

// provisioner starts an instance straight on Postgres (no proxy) that
// never warms anyone, for provisioning users that stay cold.
func provisioner(t *testing.T, env map[string]string) *instance {
	t.Helper()
	penv := map[string]string{"WARMUP_STRATEGY": "off", "SYSTEM_WARMUP_HOT_USERS": "0"}
	for k, v := range env {
		penv[k] = v
	}
	return start(t, penv)
}

// slowEnv is env with DATABASE_URL through a slow proxy, no migration (the
// provisioner applied it), no hot users, and a generous DB_TIMEOUT.
func slowEnv(t *testing.T, env map[string]string, extra ...string) map[string]string {
	t.Helper()
	out := map[string]string{
		"DATABASE_URL":            slowDatabase(t, env["DATABASE_URL"], 20*time.Millisecond),
		"AUTO_MIGRATE":            "false",
		"SYSTEM_WARMUP_HOT_USERS": "0",
		"DB_TIMEOUT":              "30s",
	}
	for _, k := range []string{"VALKEY_URL", "VALKEY_PREFIX"} {
		out[k] = env[k]
	}
	for i := 0; i+1 < len(extra); i += 2 {
		out[extra[i]] = extra[i+1]
	}
	return out
}

// TestWarmupStartupServesWhileHotUsersWarm: with 300 hot users, a slow
// database and one warmup worker, /livez and a warm query for a hot user
// that is already warm succeed while the other hot users are still queued.
func TestWarmupStartupServesWhileHotUsersWarm(t *testing.T) {
	const hot = 300
	env := realBackendEnv(t, "a second instance must find the users the first made active in Postgres; toxiproxy slows Postgres")

	// A first instance makes 300 users "recently active": one query each,
	// synced to Postgres. It never warms anyone, so all start cold.
	first := provisioner(t, env)
	users := provision(t, first, hot, true)
	if r := call(t, "POST", first.admin+"/admin/sync", "", nil); r.status != 202 {
		t.Fatalf("force sync: %d %s", r.status, r.raw)
	}
	eventually(t, 20*time.Second, "usage synced", func() bool {
		r := call(t, "GET", first.admin+"/admin/sync", "", nil)
		return r.status == 200 && r.body["pendingUsers"] == 0.0 && r.body["heldBatches"] == 0.0
	})
	var active int
	queryRow(t, env["DATABASE_URL"], `SELECT count(*) FROM users WHERE last_active_at IS NOT NULL`, &active)
	if active != hot {
		t.Fatalf("%d of %d users marked active after the sync", active, hot)
	}
	if err := first.stop(); err != nil {
		t.Fatalf("stop first instance: %v", err)
	}
	// The hot list is ordered by activity: with one worker its head is
	// warmed first.
	var headID int64
	queryRow(t, env["DATABASE_URL"], `SELECT id FROM users ORDER BY last_active_at DESC NULLS LAST, id DESC LIMIT 1`, &headID)
	var head user
	for _, u := range users {
		if u.id == headID {
			head = u
		}
	}
	if head.token == "" {
		t.Fatalf("head of the hot list %d is not a provisioned user", headID)
	}

	in := start(t, slowEnv(t, env, "SYSTEM_WARMUP_HOT_USERS", itoa(hot), "WARMUP_WORKERS", "1"))

	if r := call(t, "GET", in.base+"/livez", "", nil); r.status != 200 {
		t.Fatalf("livez: %d", r.status)
	}
	if st := systemWarmup(t, in); st.State == warmup.StateReady && st.Queue.Depth+st.Queue.Running == 0 {
		t.Fatalf("system warmup already done when /livez answered: %+v", st)
	}

	waitWarmup(t, in, head.token, warmup.StateReady)
	hits := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit")
	r := in.query(t, head.token, "a", "b", "z")
	r.wantMissing(t, "warm query", "z")
	if got := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit") - hits; got != 1 {
		t.Fatalf("the warm query should be answered by the item cache: %v hits", got)
	}
	if r := call(t, "GET", in.base+"/livez", "", nil); r.status != 200 {
		t.Fatalf("livez: %d", r.status)
	}
	// Only the hot-user warmup adds to the queue here, so work still queued
	// or running now was queued or running during the query and /livez.
	st := systemWarmup(t, in)
	if st.Queue.Depth+st.Queue.Running == 0 {
		t.Fatalf("hot users all warm already; the test proves nothing: %+v", st)
	}
	if st.State == warmup.StateReady && st.HotUsers.Found != hot {
		t.Fatalf("hot users found %d, want %d: %+v", st.HotUsers.Found, hot, st.HotUsers)
	}
	t.Logf("after the warm query: system %s, hot users %+v, queue %+v", st.State, st.HotUsers, st.Queue)
}

// TestWarmupAcrossInstances: warmed through A, the status reads the same
// through B, and B answers the user's query from the cache.
func TestWarmupAcrossInstances(t *testing.T) {
	env := realBackendEnv(t, "two instances share one Postgres and one Valkey")
	// No hot users: a system job of B for the new user would hold its lock,
	// and A's login warmup would then ride on that job (no session part);
	// see TestWarmupLoginOvertakesOtherInstanceSystemJob.
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	a := start(t, env)
	b := start(t, env)
	u := a.newUser(t, "pro", nil)
	if r := a.items(t, u.token, []string{"k1", "k2"}, nil); r.status != 200 {
		t.Fatalf("items: %d %s", r.status, r.raw)
	}
	warmUp(t, a, b, u.token)
	_, fromA := userWarmup(t, a, u.token)
	stB, fromB := userWarmup(t, b, u.token)
	if d := cmp.Diff(string(fromA), string(fromB)); d != "" {
		t.Fatalf("status differs between instances (-A +B):\n%s", d)
	}
	for _, part := range []string{warmup.PartSession, warmup.PartUsage, warmup.PartItems} {
		if stB.Parts[part].State != warmup.StateReady {
			t.Fatalf("part %s: %+v", part, stB.Parts[part])
		}
	}

	hits := b.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit")
	misses := b.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss")
	r := b.query(t, u.token, "k1", "x")
	r.wantMissing(t, "query through B", "x")
	if got := b.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit") - hits; got != 1 {
		t.Fatalf("B item-cache hits +%v, want +1", got)
	}
	if got := b.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss") - misses; got != 0 {
		t.Fatalf("B item-cache misses +%v, want +0", got)
	}
}

// TestWarmupAsyncVsInlineOnSlowDatabase: on a cold user with a slow
// database, the async query is answered from Postgres while its warmup is
// not ready; the inline query is answered only after its warmup finished.
// Both warmups are held running by a gate on LoadItems (see the file comment).
func TestWarmupAsyncVsInlineOnSlowDatabase(t *testing.T) {
	env := backendEnv(t)
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	with := func(strategy string) map[string]string {
		e := map[string]string{"WARMUP_STRATEGY": strategy}
		for k, v := range env {
			e[k] = v
		}
		return e
	}
	async, ag := startGated(t, with("async"))
	inline, ig := startGated(t, with("inline"))
	// Each user on its own instance (embedded instances share nothing);
	// no query yet, so both item sets are cold.
	asyncUser, inlineUser := provision(t, async, 1, false)[0], provision(t, inline, 1, false)[0]
	// A warmup job loads the whole item set, which no query does: held,
	// the job stays running while queries still reach the store.
	ag.load.hold()
	ig.load.hold()
	release := func() { ag.load.release(); ig.load.release() }

	// async: answered from Postgres at once; the warmup cannot be ready.
	hits := async.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit")
	misses := async.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss")
	r := async.query(t, asyncUser.token, "a", "z")
	st, _ := userWarmup(t, async, asyncUser.token)
	r.wantMissing(t, "async query", "z")
	if st.State != warmup.StateQueued && st.State != warmup.StateRunning {
		t.Fatalf("async: warmup state right after the answer = %q, want queued or running", st.State)
	}
	if got := async.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss") - misses; got != 1 {
		t.Fatalf("async: item-cache misses +%v, want +1 (answered from Postgres)", got)
	}
	if got := async.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit") - hits; got != 0 {
		t.Fatalf("async: item-cache hits +%v, want +0", got)
	}

	// inline: the query waits for the warmup, which is held running.
	done := queryAsync(inline, inlineUser.token, "a", "z")
	running := waitWarmup(t, inline, inlineUser.token, warmup.StateRunning)
	select {
	case r := <-done:
		t.Fatalf("inline query answered (%d %s) while its warmup was %s", r.status, r.raw, running.State)
	default:
	}
	release()
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("inline query did not return after the warmup could finish")
	}
	st, _ = userWarmup(t, inline, inlineUser.token)
	r.wantMissing(t, "inline query", "z")
	if st.State != warmup.StateReady {
		t.Fatalf("inline: warmup state right after the answer = %q (%s), want ready", st.State, st.Error)
	}
	if got := inline.metric(t, "warmpath_warmup_jobs_total", "kind", "inline", "result", "ready"); got != 1 {
		t.Fatalf(`warmpath_warmup_jobs_total{kind="inline",result="ready"} = %v, want 1`, got)
	}
	// The async warmup, released, finishes too.
	waitWarmup(t, async, asyncUser.token, warmup.StateReady)
}

// TestWarmupQueueFullAnswers503: with one worker held running and a queue
// of one, further users' warmups are refused with 503 + Retry-After, and
// their queries still answer 200.
func TestWarmupQueueFullAnswers503(t *testing.T) {
	env := backendEnv(t)
	env["WARMUP_QUEUE_SIZE"], env["WARMUP_WORKERS"] = "1", "1"
	env["SYSTEM_WARMUP_HOT_USERS"] = "0"
	env["WARMUP_TTL"] = "1ms" // the provisioning warmups do not make later ones "ready"
	in, gs := startGated(t, env)
	users := provision(t, in, 5, true) // usage counters seeded: queries never read the store's usage
	eventually(t, 20*time.Second, "provisioning warmups finished", func() bool {
		q := systemWarmup(t, in).Queue
		return q.Depth == 0 && q.Running == 0
	})
	// A warmup job reads its user's persisted usage: held, it stays running.
	gs.usage.hold()
	release := gs.usage.release

	if r := postWarmup(t, in, users[0].token); r.status != 202 {
		t.Fatalf("first warmup: %d %s", r.status, r.raw)
	}
	waitWarmup(t, in, users[0].token, warmup.StateRunning) // the only worker is now held
	r := postWarmup(t, in, users[1].token)
	if r.status != 202 || r.body["warmupStatus"].(map[string]any)["state"] != "queued" {
		t.Fatalf("second warmup should take the one queue slot: %d %s", r.status, r.raw)
	}
	for _, u := range users[2:] {
		r := postWarmup(t, in, u.token)
		if r.status != 503 || r.errCode() != "warmup_queue_full" {
			t.Fatalf("warmup with a full queue: %d %s", r.status, r.raw)
		}
		if r.header.Get("Retry-After") == "" {
			t.Fatalf("503 without Retry-After: %v", r.header)
		}
	}
	for _, u := range users[2:] {
		r := in.query(t, u.token, "a", "z")
		r.wantMissing(t, "query of a user whose warmup was refused", "z")
	}
	if st := systemWarmup(t, in); st.Queue.Depth != 1 || st.Queue.Running != 1 {
		t.Fatalf("queue should still be full: %+v", st.Queue)
	}

	release()
	waitWarmup(t, in, users[0].token, warmup.StateReady)
	waitWarmup(t, in, users[1].token, warmup.StateReady)
	if r := postWarmup(t, in, users[2].token); r.status != 202 {
		t.Fatalf("warmup once the queue drained: %d %s", r.status, r.raw)
	}
}

// TestWarmupFirstQueryMetric: the first query after a login warmup that is
// ready counts once in warmpath_first_query_total{warmup="ready"}; the
// second does not.
func TestWarmupFirstQueryMetric(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "pro", nil)
	in.items(t, u.token, []string{"a"}, nil)
	warmUp(t, in, in, u.token)
	metric := func() float64 {
		return in.metric(t, "warmpath_first_query_total", "warmup", "ready")
	}
	before := metric()
	for i, want := range []float64{1, 1} {
		if r := in.query(t, u.token, "a", "z"); r.status != 200 {
			t.Fatalf("query %d: %d %s", i+1, r.status, r.raw)
		}
		if got := metric() - before; got != want {
			t.Fatalf(`after query %d: warmpath_first_query_total{warmup="ready"} +%v, want +%v`, i+1, got, want)
		}
	}
	if got := in.metric(t, "warmpath_first_query_total"); got != 1 {
		t.Fatalf("warmpath_first_query_total over all states = %v, want 1", got)
	}
}

// TestWarmupLoginOvertakesOtherInstanceSystemJob: a login warmup asked
// through A, for a user whose low-priority system job is queued on B at the
// back of B's hot-user queue, must not wait behind that queue: A has idle
// workers and "login warmups go before system ones" (DESIGN.md). Before the
// fix, A
// finds the user's Valkey lock held by B's queued job, answers "queued" and
// never runs it, so the login warmup waits for B's whole system queue (and
// then runs as a system job, without its session part). Fixed: a login takes
// over a system job's lock while that job is still queued.
func TestWarmupLoginOvertakesOtherInstanceSystemJob(t *testing.T) {
	const hot = 40
	env := realBackendEnv(t, "two instances share one Postgres and one Valkey lock")
	prov := provisioner(t, env)
	users := provision(t, prov, hot, true)
	if err := prov.stop(); err != nil { // the final flush marks them all active
		t.Fatalf("stop provisioner: %v", err)
	}
	var lastID int64
	queryRow(t, env["DATABASE_URL"], `SELECT id FROM users ORDER BY last_active_at DESC NULLS LAST, id DESC OFFSET `+itoa(hot-1)+` LIMIT 1`, &lastID)
	var last user
	for _, u := range users {
		if u.id == lastID {
			last = u
		}
	}
	// B warms the hot users one at a time on a slow database; the last of
	// the list waits at the back of its system queue.
	b := start(t, slowEnv(t, env, "SYSTEM_WARMUP_HOT_USERS", itoa(hot), "WARMUP_WORKERS", "1"))
	eventually(t, 20*time.Second, "B: every hot user enqueued", func() bool {
		return systemWarmup(t, b).HotUsers.Enqueued == hot
	})
	a := start(t, slowEnv(t, env))
	r := postWarmup(t, a, last.token)
	if r.status != 202 {
		t.Fatalf("login warmup through A: %d %s", r.status, r.raw)
	}
	t.Logf("POST through A: %s; B's queue then: %+v", r.raw, systemWarmup(t, b).Queue)
	st := waitWarmup(t, a, last.token, warmup.StateReady)
	// Ordering, not timing: the login warmup must finish while B still has
	// system jobs queued (it would be last of all if it waited behind them).
	if q := systemWarmup(t, b).Queue; q.System == 0 {
		t.Fatalf("the login warmup finished only after B's system queue drained: %+v", q)
	}
	if p := st.Parts[warmup.PartSession]; p.State != warmup.StateReady {
		t.Fatalf("the login warmup's session part: %+v", p)
	}
}
