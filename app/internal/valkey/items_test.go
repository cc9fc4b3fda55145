package valkey_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
)

// load installs a snapshot of version v in chunks of 2 (to exercise Add).
func load(t *testing.T, c *valkey.Cache, user int64, v int64, items []string) error {
	t.Helper()
	l := c.BeginItemsLoad(user)
	for chunk := range slices.Chunk(items, 2) {
		if err := l.Add(t.Context(), chunk); err != nil {
			t.Fatal(err)
		}
	}
	return l.Finish(t.Context(), v, time.Hour)
}

func mustWarm(t *testing.T, c *valkey.Cache, user int64, wantVersion int64, wantItems ...string) {
	t.Helper()
	v, warm, err := c.ItemsWarm(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	if !warm || v != wantVersion {
		t.Fatalf("ItemsWarm = %d, %v; want %d, true", v, warm, wantVersion)
	}
	got := rawMembers(t, c, c.Keys().Items(user))
	if diff := cmp.Diff(wantItems, got, cmpopts.SortSlices(func(a, b string) bool { return a < b }), cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("cached set (-want +got):\n%s", diff)
	}
}

// mustLoad is load, failing the test on an error.
func mustLoad(t *testing.T, c *valkey.Cache, user int64, v int64, items []string) {
	t.Helper()
	if err := load(t, c, user, v, items); err != nil {
		t.Fatal(err)
	}
}

// mustStale fails unless err, what a load returned, is ErrStaleSnapshot.
func mustStale(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, domain.ErrStaleSnapshot) {
		t.Fatalf("%s: %v, want ErrStaleSnapshot", what, err)
	}
}

func mustCold(t *testing.T, c *valkey.Cache, user int64) {
	t.Helper()
	if v, warm, err := c.ItemsWarm(t.Context(), user); err != nil || warm {
		t.Fatalf("ItemsWarm = %d, %v, %v; want cold", v, warm, err)
	}
	if m := rawMembers(t, c, c.Keys().Items(user)); len(m) != 0 {
		t.Fatalf("cold set still holds %v", m)
	}
}

func TestHasNot(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 1
		missing, warm, err := c.HasNot(ctx, user, []string{"a"})
		if err != nil || warm || missing != nil {
			t.Fatalf("cold: HasNot = %v, %v, %v; want nil, false, nil", missing, warm, err)
		}
		mustLoad(t, c, user, 3, []string{"a", "b", "c", "ü", "x y"})
		tests := []struct {
			name  string
			items []string
			want  []string
		}{
			{"none", nil, nil},
			{"all present", []string{"c", "a", "ü", "x y"}, nil},
			{"order kept", []string{"z", "a", "y", "b", "x"}, []string{"z", "y", "x"}},
			{"duplicates once, first occurrence", []string{"q", "a", "p", "q", "a", "p", "r", "q"}, []string{"q", "p", "r"}},
			{"single missing", []string{"nope"}, []string{"nope"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, warm, err := c.HasNot(ctx, user, tt.items)
				if err != nil || !warm {
					t.Fatalf("warm=%v err=%v", warm, err)
				}
				if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("missing (-want +got):\n%s", diff)
				}
			})
		}
		// More than one SMISMEMBER chunk inside the script.
		many := make([]string, 2500)
		for i := range many {
			many[i] = "m" + strconv.Itoa(i)
		}
		many[1700] = "b"
		got, _, err := c.HasNot(ctx, user, many)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Delete(slices.Clone(many), 1700, 1701)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("2500 items (-want +got):\n%s", diff)
		}
	})
}

func TestApplyItems(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 2
		mustLoad(t, c, user, 5, []string{"a", "b"})
		itemsKey := c.Keys().Items(user)
		ttlBefore := rawPTTL(t, c, itemsKey)

		// In order: applied, TTL kept.
		if err := c.ApplyItems(ctx, user, 6, []string{"c", "d"}, []string{"a"}); err != nil {
			t.Fatal(err)
		}
		mustWarm(t, c, user, 6, "b", "c", "d")
		if ttl := rawPTTL(t, c, c.Keys().ItemsVersion(user)); ttl <= 0 || ttl > ttlBefore {
			t.Fatalf("items:v PTTL = %d, want kept (0, %d]", ttl, ttlBefore)
		}
		if ttl := rawPTTL(t, c, itemsKey); ttl <= 0 || ttl > ttlBefore {
			t.Fatalf("items PTTL = %d, want kept (0, %d]", ttl, ttlBefore)
		}
		// Replayed or older: no-op.
		for _, v := range []int64{6, 4} {
			if err := c.ApplyItems(ctx, user, v, []string{"zzz"}, []string{"b"}); err != nil {
				t.Fatal(err)
			}
			mustWarm(t, c, user, 6, "b", "c", "d")
		}
		// Remove everything: the set is empty but still warm.
		if err := c.ApplyItems(ctx, user, 7, nil, []string{"b", "c", "d"}); err != nil {
			t.Fatal(err)
		}
		mustWarm(t, c, user, 7)
		if missing, warm, _ := c.HasNot(ctx, user, []string{"b"}); !warm || len(missing) != 1 {
			t.Fatalf("empty warm set: HasNot = %v, %v", missing, warm)
		}
		// Adding to an empty warm set recreates the set with the version's TTL.
		if err := c.ApplyItems(ctx, user, 8, []string{"e"}, nil); err != nil {
			t.Fatal(err)
		}
		mustWarm(t, c, user, 8, "e")
		if ttl := rawPTTL(t, c, itemsKey); ttl <= 0 {
			t.Fatalf("recreated set PTTL = %d, want > 0", ttl)
		}
		// A gap (9 lost or late, 10 first): drop and raise the floor.
		if err := c.ApplyItems(ctx, user, 10, []string{"f"}, nil); err != nil {
			t.Fatal(err)
		}
		mustCold(t, c, user)
		if f := rawGet(t, c, c.Keys().ItemsFloor(user)); f != "10" {
			t.Fatalf("floor = %q, want 10", f)
		}
		// The late 9 while cold: floor stays at the max.
		if err := c.ApplyItems(ctx, user, 9, []string{"g"}, nil); err != nil {
			t.Fatal(err)
		}
		mustCold(t, c, user)
		if f := rawGet(t, c, c.Keys().ItemsFloor(user)); f != "10" {
			t.Fatalf("floor = %q, want 10", f)
		}
		mustStale(t, "Finish(9) below floor 10", load(t, c, user, 9, []string{"e", "g"}))
		mustCold(t, c, user)
		mustLoad(t, c, user, 10, []string{"e", "g", "f"})
		mustWarm(t, c, user, 10, "e", "f", "g")
	})
}

func TestItemsLoad(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()

		t.Run("apply during load makes it stale", func(t *testing.T) {
			const user = 10
			l := c.BeginItemsLoad(user)
			if err := l.Add(ctx, []string{"a", "b"}); err != nil {
				t.Fatal(err)
			}
			// Version 4 commits after the snapshot (version 3) was read; its
			// apply reaches a cold cache.
			if err := c.ApplyItems(ctx, user, 4, []string{"c"}, nil); err != nil {
				t.Fatal(err)
			}
			mustStale(t, "Finish", l.Finish(ctx, 3, time.Hour))
			mustCold(t, c, user)
			assertNoTempKeys(t, c, user)
		})

		t.Run("older than installed is dropped", func(t *testing.T) {
			const user = 11
			mustLoad(t, c, user, 5, []string{"new"})
			for _, v := range []int64{4, 5} {
				if err := load(t, c, user, v, []string{"old"}); err != nil {
					t.Fatalf("Finish(%d) with 5 installed: %v, want nil", v, err)
				}
				mustWarm(t, c, user, 5, "new")
			}
			mustLoad(t, c, user, 6, []string{"newer"})
			mustWarm(t, c, user, 6, "newer")
			assertNoTempKeys(t, c, user)
		})

		t.Run("empty snapshot", func(t *testing.T) {
			const user = 12
			mustLoad(t, c, user, 1, []string{"x"})
			if err := load(t, c, user, 2, nil); err != nil {
				t.Fatal(err)
			}
			mustWarm(t, c, user, 2)
			missing, warm, err := c.HasNot(ctx, user, []string{"x", "x"})
			if err != nil || !warm || !slices.Equal(missing, []string{"x"}) {
				t.Fatalf("HasNot = %v, %v, %v; want [x], true", missing, warm, err)
			}
		})

		t.Run("duplicate items in chunks", func(t *testing.T) {
			const user = 13
			mustLoad(t, c, user, 1, []string{"a", "a", "b", "a", "b"})
			mustWarm(t, c, user, 1, "a", "b")
		})

		t.Run("large chunk is split", func(t *testing.T) {
			const user = 14
			items := make([]string, 2345)
			for i := range items {
				items[i] = "i" + strconv.Itoa(i)
			}
			l := c.BeginItemsLoad(user)
			if err := l.Add(ctx, items); err != nil {
				t.Fatal(err)
			}
			if err := l.Finish(ctx, 1, time.Hour); err != nil {
				t.Fatal(err)
			}
			mustWarm(t, c, user, 1, items...)
		})

		t.Run("abort", func(t *testing.T) {
			const user = 15
			l := c.BeginItemsLoad(user)
			if err := l.Add(ctx, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			if n := len(tempKeys(t, c, user)); n != 1 {
				t.Fatalf("%d temp keys during the load, want 1", n)
			}
			if err := l.Abort(ctx); err != nil {
				t.Fatal(err)
			}
			assertNoTempKeys(t, c, user)
			mustCold(t, c, user)
		})

		t.Run("expired temp set is not installed as empty", func(t *testing.T) {
			const user = 16
			l := c.BeginItemsLoad(user)
			if err := l.Add(ctx, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			for _, k := range tempKeys(t, c, user) {
				if ttl := rawPTTL(t, c, k); ttl <= 0 {
					t.Fatalf("temp key PTTL = %d, want a safety TTL", ttl)
				}
				rawDel(t, c, k) // as its safety TTL would
			}
			mustStale(t, "Finish", l.Finish(ctx, 1, time.Hour))
			mustCold(t, c, user)
		})

		t.Run("set expired after newer applies: older load is stale", func(t *testing.T) {
			const user = 17
			mustLoad(t, c, user, 1, []string{"a"})
			l := c.BeginItemsLoad(user) // reads snapshot 1 ...
			if err := l.Add(ctx, []string{"a"}); err != nil {
				t.Fatal(err)
			}
			for v := int64(2); v <= 3; v++ { // ... while 2 and 3 apply in place
				if err := c.ApplyItems(ctx, user, v, []string{"v" + strconv.FormatInt(v, 10)}, nil); err != nil {
					t.Fatal(err)
				}
			}
			mustWarm(t, c, user, 3, "a", "v2", "v3")
			rawDel(t, c, c.Keys().Items(user), c.Keys().ItemsVersion(user)) // the cached set's TTL runs out
			mustStale(t, "Finish(1) after version 3 was cached", l.Finish(ctx, 1, time.Hour))
			mustCold(t, c, user)
		})

		t.Run("invalidate", func(t *testing.T) {
			const user = 18
			mustLoad(t, c, user, 4, []string{"a"})
			if err := c.InvalidateItems(ctx, user, 6); err != nil {
				t.Fatal(err)
			}
			mustCold(t, c, user)
			if missing, warm, err := c.HasNot(ctx, user, []string{"a"}); err != nil || warm || missing != nil {
				t.Fatalf("HasNot after invalidate = %v, %v, %v", missing, warm, err)
			}
			mustStale(t, "Finish(5) after InvalidateItems(6)", load(t, c, user, 5, []string{"a"}))
			mustLoad(t, c, user, 6, []string{"b"})
			mustWarm(t, c, user, 6, "b")
			if ttl := rawPTTL(t, c, c.Keys().ItemsFloor(user)); ttl <= 0 {
				t.Fatalf("floor PTTL = %d, want > 0", ttl)
			}
		})
	})
}

// tempKeys lists the user's temporary load sets (KEYS on every node: on a
// cluster a KEYS answers for one node only).
func tempKeys(t *testing.T, c *valkey.Cache, user int64) []string {
	t.Helper()
	var all []string
	for _, node := range c.Client().Nodes() {
		keys, err := node.Do(t.Context(), node.B().Keys().Pattern(c.Keys().ItemsLoad(user, "*")).Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, keys...)
	}
	return all
}

func assertNoTempKeys(t *testing.T, c *valkey.Cache, user int64) {
	t.Helper()
	if keys := tempKeys(t, c, user); len(keys) != 0 {
		t.Fatalf("temp keys left: %v", keys)
	}
}

// TestItemsRace drives the protocol the way the service does: writers commit
// versioned changes to a model of Postgres and then apply them to the cache,
// racing one another (with several writers applies arrive out of order);
// loaders read the latest committed snapshot and install it after a chunked
// load, racing the writers; a checker reads the cache atomically meanwhile.
// Invariants: once ApplyItems(v) or a successful Finish(v) returns, the cache
// is cold or holds version >= v (read your writes); whatever version is cached
// holds exactly that version's items.
func TestItemsRace(t *testing.T) {
	for _, writers := range []int{1, 4} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) {
			onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
				itemsRace(t, c, writers)
			})
		})
	}
}

func itemsRace(t *testing.T, c *valkey.Cache, writers int) {
	ctx := t.Context()
	const (
		user         = 77
		loaders      = 3
		commits      = 240
		universeSize = 24
	)
	var (
		mu        sync.Mutex
		version   int64
		set       = map[string]bool{}
		snapshots = map[int64][]string{0: nil}
		installed int
		stale     int
		checked   int
	)
	snapshotOf := func(v int64) []string {
		mu.Lock()
		defer mu.Unlock()
		return snapshots[v]
	}
	checkAtLeast := func(v int64, after string) {
		got, warm, err := c.ItemsWarm(ctx, user)
		if err != nil {
			t.Error(err)
			return
		}
		if warm && got < v {
			t.Errorf("after %s(%d) the cache holds older version %d", after, v, got)
		}
	}
	// checkAtomic reads version and members in one MULTI and compares them
	// with the model.
	checkAtomic := func() {
		b := c.Client().B()
		res := c.Client().DoMulti(ctx,
			b.Multi().Build(),
			b.Get().Key(c.Keys().ItemsVersion(user)).Build(),
			b.Smembers().Key(c.Keys().Items(user)).Build(),
			b.Exec().Build())
		out, err := res[3].ToArray()
		if err != nil {
			t.Error(err)
			return
		}
		v, err := out[0].AsInt64()
		if isNil(err) {
			return // cold
		}
		if err != nil {
			t.Error(err)
			return
		}
		got, err := out[1].AsStrSlice()
		if err != nil {
			t.Error(err)
			return
		}
		slices.Sort(got)
		if diff := cmp.Diff(snapshotOf(v), got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("cached set at version %d differs from the model (-want +got):\n%s", v, diff)
		}
		mu.Lock()
		checked++
		mu.Unlock()
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		rng := rand.New(rand.NewPCG(uint64(w), 1))
		wg.Go(func() {
			for range commits / writers {
				var add, remove []string
				for range 1 + rng.IntN(3) {
					it := "it" + strconv.Itoa(rng.IntN(universeSize))
					if rng.IntN(2) == 0 {
						add = append(add, it)
					} else {
						remove = append(remove, it)
					}
				}
				mu.Lock() // the Postgres transaction
				version++
				v := version
				for _, it := range add {
					set[it] = true
				}
				for _, it := range remove {
					delete(set, it)
				}
				snap := make([]string, 0, len(set))
				for it := range set {
					snap = append(snap, it)
				}
				slices.Sort(snap)
				snapshots[v] = snap
				mu.Unlock()
				if err := c.ApplyItems(ctx, user, v, add, remove); err != nil {
					t.Error(err)
					return
				}
				checkAtLeast(v, "ApplyItems")
			}
		})
	}
	var bg sync.WaitGroup
	// untilDone runs step in bg over and over until done is closed or step
	// returns false.
	untilDone := func(step func() bool) {
		bg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if !step() {
					return
				}
			}
		})
	}
	for range loaders {
		untilDone(func() bool {
			mu.Lock() // a snapshot read
			v, items := version, snapshots[version]
			mu.Unlock()
			l := c.BeginItemsLoad(user)
			for chunk := range slices.Chunk(items, 3) {
				if err := l.Add(ctx, chunk); err != nil {
					t.Error(err)
					return false
				}
			}
			err := l.Finish(ctx, v, time.Hour)
			mu.Lock()
			switch {
			case err == nil:
				installed++
			case errors.Is(err, domain.ErrStaleSnapshot):
				stale++
			default:
				t.Error(err)
			}
			mu.Unlock()
			if err == nil {
				checkAtLeast(v, "Finish")
			}
			return true
		})
	}
	untilDone(func() bool {
		checkAtomic()
		return true
	})
	wg.Wait()
	close(done)
	bg.Wait()
	if t.Failed() {
		return
	}
	checkAtomic()
	// A final load of the latest version must install it (or find it installed).
	if err := load(t, c, user, version, snapshots[version]); err != nil {
		t.Fatal(err)
	}
	mustWarm(t, c, user, version, snapshots[version]...)
	assertNoTempKeys(t, c, user)
	t.Logf("%d versions; loads: %d installed or superseded, %d stale; %d warm states checked", version, installed, stale, checked)
	// With one writer the cache is warm most of the time, so loads must have
	// installed and the checker must have seen warm states. With several,
	// out-of-order applies keep it mostly cold; loads must at least finish.
	if writers == 1 && (installed == 0 || checked == 0) {
		t.Fatal("no load installed or no warm state checked during the race: the test proved nothing")
	}
	if installed+stale == 0 {
		t.Fatal("no load finished during the race: the test proved nothing")
	}
}
