package valkey_test

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
)

// countReq is a count of user's request in the test day, without a key.
func countReq(user, limit int64) valkey.CountRequest {
	return valkey.CountRequest{UserID: user, Start: day, Reset: reset(day), Limit: limit}
}

// dirty reports whether user is in the sync's dirty index.
func dirty(t *testing.T, c *valkey.Cache, user int64) bool {
	t.Helper()
	_, err := c.Client().Do(t.Context(), c.Client().B().Zscore().Key(c.Keys().SyncDirty()).Member(strconv.FormatInt(user, 10)).Build()).AsFloat64()
	if err != nil && !isNil(err) {
		t.Fatal(err)
	}
	return err == nil
}

func undirty(t *testing.T, c *valkey.Cache, user int64) {
	t.Helper()
	if err := c.Client().Do(t.Context(), c.Client().B().Zrem().Key(c.Keys().SyncDirty()).Member(strconv.FormatInt(user, 10)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

// appliedCounts returns the values of the user's applied hash, sorted (the
// fields name the sender's epoch, which differs between users).
func appliedCounts(t *testing.T, c *valkey.Cache, user int64) []string {
	t.Helper()
	m, err := c.Client().Do(t.Context(), c.Client().B().Hgetall().Key(c.Keys().Applied(user)).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	var v []string
	for _, n := range m {
		v = append(v, n)
	}
	slices.Sort(v)
	return v
}

// An allowed count on a warm set answers the has-not lookup exactly as
// HasNot does (input order, duplicates once, past the 1,000-member chunks
// of SMISMEMBER); a denied one does not answer.
func TestCountHasNotWarm(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 21
		mustLoad(t, c, user, 1, []string{"a", "b", "c", "i-1500"})
		if err := c.SeedUsage(ctx, user, day, reset(day), 0); err != nil {
			t.Fatal(err)
		}
		long := []string{"x", "a", "y", "x", "c", "z", "y"}
		for i := range 2000 {
			long = append(long, "i-"+strconv.Itoa(i))
		}
		for i, items := range [][]string{{"x", "a", "y", "x", "c", "z", "y"}, long} {
			want, warm, err := c.HasNot(ctx, user, items)
			if err != nil || !warm {
				t.Fatalf("HasNot: warm=%v err=%v", warm, err)
			}
			res, hn, err := c.CountHasNot(ctx, countReq(user, 3), items)
			if err != nil {
				t.Fatal(err)
			}
			if got := (valkey.UsageResult{Outcome: valkey.Allowed, Used: int64(i + 1)}); res != got {
				t.Fatalf("count %d: %+v, want %+v", i, res, got)
			}
			if !hn.Warm {
				t.Fatalf("count %d on a warm set: not answered (%+v)", i, hn)
			}
			if d := cmp.Diff(want, hn.Missing); d != "" {
				t.Fatalf("count %d: missing differs from HasNot's (-HasNot +CountHasNot):\n%s", i, d)
			}
			if hn.QueryTime < 0 || hn.QueryTime > time.Second {
				t.Fatalf("server time %v: want the script's own, in [0, 1s]", hn.QueryTime)
			}
		}
		if d := cmp.Diff([]string{"x", "y", "z"}, mustHasNot(t, c, user, []string{"x", "a", "y", "x", "c", "z", "y"})); d != "" {
			t.Fatal(d)
		}
		// The third is allowed (Used 3); the fourth is denied: no answer.
		if _, hn, err := c.CountHasNot(ctx, countReq(user, 3), []string{"x"}); err != nil || !hn.Warm {
			t.Fatalf("third count: %+v, %v", hn, err)
		}
		res, hn, err := c.CountHasNot(ctx, countReq(user, 3), []string{"x"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (valkey.UsageResult{Outcome: valkey.Denied, Used: 3}); res != want {
			t.Fatalf("over quota: %+v, want %+v", res, want)
		}
		if d := cmp.Diff(domain.CachedHasNot{}, hn); d != "" {
			t.Fatalf("a denied count answered the lookup:\n%s", d)
		}
	})
}

func mustHasNot(t *testing.T, c *valkey.Cache, user int64, items []string) []string {
	t.Helper()
	m, warm, err := c.HasNot(t.Context(), user, items)
	if err != nil || !warm {
		t.Fatalf("HasNot: warm=%v err=%v", warm, err)
	}
	return m
}

// An allowed count on a cold set counts and says cold; a cold counter
// counts nothing and does not answer either.
func TestCountHasNotCold(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 22
		res, hn, err := c.CountHasNot(ctx, countReq(user, 10), []string{"a"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (valkey.UsageResult{Outcome: valkey.Cold}); res != want || hn.Warm || hn.Missing != nil {
			t.Fatalf("cold counter: %+v, %+v; want %+v and no answer", res, hn, want)
		}
		if err := c.SeedUsage(ctx, user, day, reset(day), 4); err != nil {
			t.Fatal(err)
		}
		res, hn, err = c.CountHasNot(ctx, countReq(user, 10), []string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (valkey.UsageResult{Outcome: valkey.Allowed, Used: 5}); res != want {
			t.Fatalf("cold set: %+v, want %+v", res, want)
		}
		if hn.Warm || hn.Missing != nil {
			t.Fatalf("cold set answered: %+v", hn)
		}
		if p := rawHGet(t, c, c.Keys().Pending(user), valkey.PeriodField(day)); p != "1" {
			t.Fatalf("pending = %q, want 1: a cold set does not undo the count", p)
		}
		mustCold(t, c, user)
	})
}

// The script's reply: a denied or cold count ends before the set is read
// (no has-not part at all); an allowed one carries it. And a lookup that
// fails (a key of the wrong type) is no answer,
// never an error: the count was applied and is reported as such.
func TestCountHasNotReply(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const user = 23
		k := c.Keys()
		mustLoad(t, c, user, 1, []string{"a"})
		if err := c.SeedUsage(ctx, user, day, reset(day), 1); err != nil {
			t.Fatal(err)
		}
		eval := func(limit int64) []int64 {
			t.Helper()
			keys := []string{k.Counter(user, day), k.Pending(user), k.Applied(user), k.Applied(user), k.Items(user), k.ItemsVersion(user)}
			fence := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
			args := []string{strconv.FormatInt(limit, 10), valkey.PeriodField(day), "60000", fence, "", "", "0", "0", "b", "a", "c"}
			r, err := c.Client().Do(ctx, c.Client().B().Eval().Script(valkey.CountLua).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()).AsIntSlice()
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if r := eval(1); !slices.Equal(r, []int64{2, 1}) {
			t.Fatalf("denied reply %v, want exactly [2 1]: the set is not read", r)
		}
		r := eval(10)
		if len(r) != 7 || r[0] != 1 || r[1] != 2 || r[4] != 1 || r[5] != 0 || r[6] != 2 {
			t.Fatalf("allowed reply %v, want [1 2 first lookup-µs 1 0 2]", r)
		}
		rawDel(t, c, k.Counter(user, day))
		if r := eval(10); !slices.Equal(r, []int64{3, 0}) {
			t.Fatalf("cold counter reply %v, want exactly [3 0]", r)
		}

		// The set's key holding a string: SMISMEMBER fails; the count still applies.
		// (The seed is 1 persisted + the 1 pending from the allowed count.)
		if err := c.SeedUsage(ctx, user, day, reset(day), 1); err != nil {
			t.Fatal(err)
		}
		if err := c.Client().Do(ctx, c.Client().B().Set().Key(k.Items(user)).Value("not a set").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		res, hn, err := c.CountHasNot(ctx, countReq(user, 10), []string{"a"})
		if err != nil {
			t.Fatalf("a failed lookup: %v, want the count's result", err)
		}
		if want := (valkey.UsageResult{Outcome: valkey.Allowed, Used: 3}); res != want || hn.Warm {
			t.Fatalf("failed lookup: %+v, %+v; want %+v and no answer", res, hn, want)
		}
		if _, _, err := c.HasNot(ctx, user, []string{"a"}); err == nil {
			t.Fatal("HasNot on a set of the wrong type: no error (it must still fail)")
		}
	})
}

// CountHasNot counts exactly as Count does: the same results, counter,
// pending delta, applied field and dirty marks (only the count that starts
// a pending delta marks), the same fence, the same idempotency records.
func TestCountHasNotCountsLikeCount(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		ctx := t.Context()
		const plain, combined = 31, 32
		mustLoad(t, c, combined, 1, []string{"a"})
		for _, u := range []int64{plain, combined} {
			if err := c.SeedUsage(ctx, u, day, reset(day), 0); err != nil {
				t.Fatal(err)
			}
		}
		step := func(i int) {
			t.Helper()
			want, err1 := c.Count(ctx, countReq(plain, 2))
			got, _, err2 := c.CountHasNot(ctx, countReq(combined, 2), []string{"a", "b"})
			if err1 != nil || err2 != nil {
				t.Fatalf("step %d: %v, %v", i, err1, err2)
			}
			if got != want {
				t.Fatalf("step %d: CountHasNot %+v, Count %+v", i, got, want)
			}
		}
		same := func(what string) {
			t.Helper()
			k := c.Keys()
			if a, b := rawGet(t, c, k.Counter(plain, day)), rawGet(t, c, k.Counter(combined, day)); a != b {
				t.Fatalf("%s: counter %q vs %q", what, a, b)
			}
			if a, b := rawHGet(t, c, k.Pending(plain), valkey.PeriodField(day)), rawHGet(t, c, k.Pending(combined), valkey.PeriodField(day)); a != b {
				t.Fatalf("%s: pending %q vs %q", what, a, b)
			}
			if d := cmp.Diff(appliedCounts(t, c, plain), appliedCounts(t, c, combined), cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("%s: applied counts differ:\n%s", what, d)
			}
			if a, b := dirty(t, c, plain), dirty(t, c, combined); a != b {
				t.Fatalf("%s: dirty %v vs %v", what, a, b)
			}
			if a, b := rawPTTL(t, c, k.Counter(plain, day)), rawPTTL(t, c, k.Counter(combined, day)); (a > 0) != (b > 0) {
				t.Fatalf("%s: counter PTTL %d vs %d", what, a, b)
			}
		}
		step(0)
		same("first count")
		if !dirty(t, c, combined) {
			t.Fatal("the count that started the pending delta did not mark the user dirty")
		}
		undirty(t, c, plain)
		undirty(t, c, combined) // as a claim does first
		step(1)
		same("a count that found a delta waiting")
		if dirty(t, c, combined) {
			t.Fatal("a count that found a waiting delta marked the user")
		}
		step(2) // denied
		same("over quota")

		// Fenced: nothing happens, and it is not an unknown outcome.
		valkey.SkewFences(c, -time.Hour)
		_, hn, err := c.CountHasNot(ctx, countReq(combined, 100), []string{"a"})
		valkey.SkewFences(c, time.Hour)
		if !errors.Is(err, domain.ErrUnavailable) || hn.Warm {
			t.Fatalf("fenced: %+v, %v; want an unavailable error and no answer", hn, err)
		}
		var s interface{ Settle(bool) }
		if errors.As(err, &s) {
			t.Fatalf("a fenced count is known not applied, got an unknown outcome: %v", err)
		}
		if n, _, _ := c.Usage(ctx, combined, day); n != 2 {
			t.Fatalf("counter after a fenced count = %d, want 2", n)
		}
		if c.Unsettled() != 0 {
			t.Fatalf("unsettled = %d, want 0", c.Unsettled())
		}

		// With an idempotency key: the first use counts and answers; a
		// repeat is the key's outcome, counted once, not answered.
		r := countReq(combined, 100)
		r.Idem, r.IdemTTL, r.IdemLease = domain.IdemKey{Key: "k", Fingerprint: "f"}, time.Hour, time.Hour
		res, hn, err := c.CountHasNot(ctx, r, []string{"b"})
		if err != nil || res.Outcome != valkey.Allowed || res.Used != 3 || !hn.Warm || !slices.Equal(hn.Missing, []string{"b"}) {
			t.Fatalf("keyed: %+v, %+v, %v; want allowed, used 3, missing [b]", res, hn, err)
		}
		if err := c.IdemStore(ctx, combined, r.Idem, domain.StoredAnswer{Status: 200, Body: "{}"}); err != nil {
			t.Fatal(err)
		}
		res, hn, err = c.CountHasNot(ctx, r, []string{"b"})
		if err != nil || res.Outcome != domain.UsageReplay || res.Used != 3 || hn.Warm {
			t.Fatalf("keyed repeat: %+v, %+v, %v; want a replay at used 3, no answer", res, hn, err)
		}
	})
}

// A count that is not allowed runs no more commands on the server than the
// same count without items: the set is not read (miniredis counts the
// commands scripts run too).
func TestCountHasNotDeniedRunsNoLookup(t *testing.T) {
	m, c := onMiniredis(t)
	ctx := t.Context()
	mustLoad(t, c, 1, 1, []string{"a"})
	if err := c.SeedUsage(ctx, 1, day, reset(day), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Count(ctx, countReq(1, 5)); err != nil { // loads the script
		t.Fatal(err)
	}
	commands := func(f func() error) int {
		t.Helper()
		before := m.CommandCount()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return m.CommandCount() - before
	}
	plain := commands(func() error { _, err := c.Count(ctx, countReq(1, 5)); return err })
	denied := commands(func() error { _, _, err := c.CountHasNot(ctx, countReq(1, 5), []string{"a", "b"}); return err })
	if denied != plain {
		t.Fatalf("a denied CountHasNot ran %d commands, a denied Count %d: the set was read", denied, plain)
	}
	// Not the period's first allowed count: that one also renews TTLs.
	if _, err := c.Count(ctx, countReq(1, 100)); err != nil {
		t.Fatal(err)
	}
	allowedPlain := commands(func() error { _, err := c.Count(ctx, countReq(1, 100)); return err })
	allowed := commands(func() error { _, _, err := c.CountHasNot(ctx, countReq(1, 100), []string{"a", "b"}); return err })
	if allowed <= allowedPlain {
		t.Fatalf("an allowed CountHasNot ran %d commands, an allowed Count %d: want the lookup's on top (the count is not observed otherwise)", allowed, allowedPlain)
	}
}
