package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

// clusterEnv is the environment of a service on the Valkey Cluster at
// VALKEY_CLUSTER_URL and the real Postgres; the test is skipped without them.
func clusterEnv(t *testing.T) map[string]string {
	t.Helper()
	url := os.Getenv("VALKEY_CLUSTER_URL")
	if url == "" || os.Getenv("DATABASE_URL") == "" {
		t.Skip("needs VALKEY_CLUSTER_URL (a Valkey Cluster's seed nodes, see .ci/run) and DATABASE_URL")
	}
	env := backendEnv(t)
	env["VALKEY_URL"] = url
	env["VALKEY_PREFIX"] = "wpt" + randHex(6)
	env["SYNC_INTERVAL"] = "50ms"
	return env
}

// Two instances on one Postgres and a three-node Valkey Cluster: the quota
// holds at its boundary across both, warmup status is the same from either,
// a change of the item set is seen through the other, and Postgres ends with
// exactly the 200s. Users' keys land on different nodes, each user's keys in
// one slot.
func TestClusterEndToEnd(t *testing.T) {
	env := clusterEnv(t)
	a, b := start(t, env), start(t, env)
	const quota = 20
	users := make([]user, 6)
	for i := range users {
		users[i] = a.newUser(t, "free", ptr[int64](quota))
	}
	u0 := users[0]
	warmUp(t, a, b, u0.token) // status written by a, read through b

	if r := a.items(t, u0.token, []string{"x", "y"}, nil); r.status != 200 {
		t.Fatalf("items on a: %d %s", r.status, r.raw)
	}
	if r := b.query(t, u0.token, "x", "z"); r.status != 200 || len(r.body["missing"].([]any)) != 1 {
		t.Fatalf("query on b after a change on a: %d %s", r.status, r.raw)
	}

	// 2 × quota queries per user, concurrently, alternating instances.
	var ok, denied, other atomic.Int64
	var wg sync.WaitGroup
	for _, u := range users {
		for w := range 4 {
			wg.Go(func() {
				for i := range quota / 2 {
					in := a
					if (w+i)%2 == 1 {
						in = b
					}
					switch r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"x"}}); r.status {
					case 200:
						ok.Add(1)
					case 429:
						denied.Add(1)
					default:
						other.Add(1)
						t.Errorf("query: %d %s", r.status, r.raw)
					}
				}
			})
		}
	}
	wg.Wait()
	// u0 spent one unit above, before the concurrent load.
	if want := int64(len(users)*quota - 1); ok.Load() != want {
		t.Fatalf("%d answered 200 at the quota boundary, want exactly %d (denied %d, other %d)", ok.Load(), want, denied.Load(), other.Load())
	}
	drainSync(t, a.admin, 20*time.Second)
	drainSync(t, b.admin, 20*time.Second)
	if got, want := persistedTotal(t, env["DATABASE_URL"]), ok.Load()+1; got != want {
		t.Fatalf("postgres total %d, want exactly the %d 200s", got, want)
	}

	// Where the keys are: one slot per user, more than one node in all.
	c := rawValkey(t, env["VALKEY_URL"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys := valkey.NewKeys(env["VALKEY_PREFIX"])
	nodes := map[string]bool{}
	for _, u := range users {
		k := keys.Counter(u.id, time.Now().UTC())
		for addr, node := range c.Nodes() {
			if n, err := node.Do(ctx, node.B().Exists().Key(k).Build()).AsInt64(); err == nil && n == 1 {
				nodes[addr] = true
			}
		}
		slot := func(key string) int64 {
			s, err := c.Do(ctx, c.B().ClusterKeyslot().Key(key).Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if slot(k) != slot(keys.Pending(u.id)) || slot(k) != slot(keys.Applied(u.id)) || slot(k) != slot(keys.Items(u.id)) {
			t.Fatalf("user %d's keys are in different slots", u.id)
		}
	}
	if len(nodes) < 2 {
		t.Fatalf("the users' counters are on %d node(s), want them spread over the cluster", len(nodes))
	}

	// Load spread over many users: no node takes most of the commands.
	many := make([]user, 60)
	for i := range many {
		many[i] = a.newUser(t, "pro", nil)
	}
	before := nodeCalls(t, c)
	var served atomic.Int64
	var lw sync.WaitGroup
	for w := range 8 {
		lw.Go(func() {
			for i := range 150 {
				in := a
				if i%2 == 1 {
					in = b
				}
				if r := call(t, "POST", in.base+queryRoute, many[(w*150+i)%len(many)].token, map[string]any{"items": []string{"x"}}); r.status == 200 {
					served.Add(1)
				} else {
					t.Errorf("query: %d %s", r.status, r.raw)
				}
			}
		})
	}
	lw.Wait()
	after := nodeCalls(t, c)
	var total, busiest int64
	for addr, n := range after {
		d := n - before[addr]
		total += d
		busiest = max(busiest, d)
	}
	share := float64(busiest) / float64(total)
	t.Logf("cluster: %d nodes, %d commands during %d queries of %d users; busiest node's share %.2f", len(after), total, served.Load(), len(many), share)
	if share > 0.5 {
		t.Errorf("the busiest node took %.0f %% of the commands, want under half", 100*share)
	}

	// Both instances stop gracefully (their shutdown flushes the rest), then
	// the cluster is emptied: Postgres holds every 200.
	for _, in := range []*instance{a, b} {
		if err := in.stop(); err != nil {
			t.Fatal(err)
		}
	}
	deleteValkeyPrefix(t, env["VALKEY_URL"], env["VALKEY_PREFIX"])
	if got, want := persistedTotal(t, env["DATABASE_URL"]), ok.Load()+1+served.Load(); got != want {
		t.Fatalf("after graceful stops and an emptied cluster: postgres total %d, want exactly the %d 200s", got, want)
	}
}

// nodeCalls is each cluster node's total of commands served (INFO
// commandstats).
func nodeCalls(t *testing.T, c valkeygo.Client) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for addr, node := range c.Nodes() {
		info, err := node.Do(context.Background(), node.B().Info().Section("commandstats").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if _, rest, ok := strings.Cut(line, "calls="); ok {
				n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
				out[addr] += n
			}
		}
	}
	return out
}
