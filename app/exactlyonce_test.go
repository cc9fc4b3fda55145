package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// keyedClient sends logical requests, each with its own Idempotency-Key,
// and retries each with the same key until it is answered 200, through
// whichever instance is up (base, swapped by the test between kills).
type keyedClient struct {
	base    atomic.Pointer[string]
	cl      *http.Client
	next    atomic.Int64
	ok      sync.Map // key → struct{}: logical requests answered 200
	okN     atomic.Int64
	replays atomic.Int64
	retries atomic.Int64
	statusN sync.Map // status → *atomic.Int64 (every attempt's answer)
}

func (k *keyedClient) seen(status int) {
	v, _ := k.statusN.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// one runs a logical request to its 200, through kills and restarts.
func (k *keyedClient) one(t *testing.T, prefix string, u user) {
	key := prefix + "-" + strconv.FormatInt(k.next.Add(1), 10)
	body := `{"items":["a","b","c"]}`
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			k.retries.Add(1)
			time.Sleep(20 * time.Millisecond) // the client's back-off between retries
		}
		resp, err := k.cl.Do(queryRequest(*k.base.Load(), u.token, body, "Idempotency-Key", key))
		if err != nil {
			continue // refused, reset, timed out: retry with the same key
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		k.seen(resp.StatusCode)
		switch resp.StatusCode {
		case 200:
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				k.replays.Add(1)
			}
			if _, dup := k.ok.LoadOrStore(key, struct{}{}); !dup {
				k.okN.Add(1)
			}
			return
		case 409, 503:
			if s, _ := strconv.Atoi(resp.Header.Get("Retry-After")); s > 0 {
				time.Sleep(time.Duration(s) * time.Second) // as the answer asks
			}
		default:
			t.Errorf("key %s: unexpected status %d", key, resp.StatusCode)
			return
		}
	}
}

// TestExactlyOnceWithIdempotencyKeys: clients that send an Idempotency-Key
// and retry with it until answered, through four SIGKILLs (two during forced
// syncs), then a graceful stop of the last instance, then Valkey emptied:
// Postgres holds exactly one unit per key answered 200. No tolerance.
func TestExactlyOnceWithIdempotencyKeys(t *testing.T) {
	env := binaryEnv(realBackendEnv(t, "SIGKILLed processes must find their counts and keys in a Postgres and a Valkey that outlive them"),
		"SYNC_INTERVAL", "50ms", "SHUTDOWN_TIMEOUT", "10s",
		"VALKEY_TIMEOUT", "100ms", "DB_TIMEOUT", "300ms") // a key held by a killed request frees after 3 × (100 + 300) ms
	bin := binary(t)

	kc := &keyedClient{cl: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
	prefix := "eo-" + randHex(4)
	stop := make(chan struct{})
	clients := &sync.WaitGroup{}
	var users []user
	startLoad := func() {
		clients = closedLoop(16, stop, func(i int) { kc.one(t, prefix, users[i%len(users)]) })
	}

	const kills = 4
	for round := range kills {
		p := startProc(t, bin, ".", env)
		kc.base.Store(&p.base)
		if round == 0 {
			for range 8 {
				users = append(users, p.inst().newUser(t, "free", ptr[int64](1_000_000_000)))
			}
			startLoad()
		}
		before := kc.okN.Load()
		eventually(t, 20*time.Second, "load answered on the new instance", func() bool { return kc.okN.Load() > before+50 })
		if round%2 == 1 {
			// Kill it while a forced sync runs.
			if r := call(t, "POST", p.admin+"/admin/sync", "", nil); r.status != 202 {
				t.Fatalf("POST /admin/sync: %d %s", r.status, r.raw)
			}
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		t.Logf("kill %d: %d keys answered 200 so far", round+1, kc.okN.Load())
	}

	// The last instance: the load goes on, then stops, every logical request
	// in flight is finished (retried to its 200), and the instance stops
	// gracefully.
	p := startProc(t, bin, ".", maps.Clone(env))
	kc.base.Store(&p.base)
	before := kc.okN.Load()
	eventually(t, 20*time.Second, "load answered on the last instance", func() bool { return kc.okN.Load() > before+50 })
	close(stop) // no new logical requests; those under way finish
	clients.Wait()
	if n := kc.next.Load(); n != kc.okN.Load() {
		t.Fatalf("%d logical requests started, %d answered 200: every one must end with its 200", n, kc.okN.Load())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("graceful stop: exit %d; stderr:\n%s", code, tail(p.stderr.String(), 3000))
	}
	deleteValkeyPrefix(t, env["VALKEY_URL"], env["VALKEY_PREFIX"])

	pg := persistedTotal(t, env["DATABASE_URL"])
	var statuses []string
	kc.statusN.Range(func(k, v any) bool {
		statuses = append(statuses, fmt.Sprintf("%d×%d", v.(*atomic.Int64).Load(), k.(int)))
		return true
	})
	t.Logf("exactly once: %d kills, %d keys answered 200, %d answers replayed, %d retries, attempts answered %v, postgres %d",
		kills, kc.okN.Load(), kc.replays.Load(), kc.retries.Load(), statuses, pg)
	if pg != kc.okN.Load() {
		t.Fatalf("postgres holds %d units, want exactly the %d keys answered 200 (lost %d, doubled %d)",
			pg, kc.okN.Load(), max(kc.okN.Load()-pg, 0), max(pg-kc.okN.Load(), 0))
	}
}
