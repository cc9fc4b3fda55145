package valkey_test

import (
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
	"github.com/warmpath/warmpath/app/internal/waittest"
)

// proxied returns a Cache that reaches the real server (VALKEY_URL) through
// an in-process toxiproxy, with a short call timeout and no breaker, and a
// second Cache on the same prefix that reaches it directly.
func proxied(t *testing.T) (*valkey.Cache, *valkey.Cache, *toxiproxy.Proxy) {
	t.Helper()
	direct := valkeytest.NewWith(t, testConfig())
	u, err := url.Parse(os.Getenv("VALKEY_URL"))
	if err != nil {
		t.Fatal(err)
	}
	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()), "valkey", "127.0.0.1:0", u.Host)
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	u.Host = px.Listen
	cfg := testConfig()
	cfg.URL, cfg.Prefix, cfg.OpTimeout, cfg.BreakerFailures = u.String(), direct.Keys().Prefix(), 200*time.Millisecond, -1
	c, err := valkey.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, direct, px
}

func toxic(t *testing.T, px *toxiproxy.Proxy, js string) {
	t.Helper()
	if _, err := px.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatal(err)
	}
}

// settleAll reconciles until nothing is left to settle.
func settleAll(t *testing.T, c *valkey.Cache) valkey.Settlement {
	t.Helper()
	var all valkey.Settlement
	deadline := time.Now().Add(10 * time.Second)
	for c.Unsettled() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d epochs unsettled after 10 s", c.Unsettled())
		}
		st, err := c.Reconcile(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		all.Applied += st.Applied
		all.NotApplied += st.NotApplied
		all.Corrections = append(all.Corrections, st.Corrections...)
		time.Sleep(20 * time.Millisecond) // a poll interval, not a wait for an outcome
	}
	return all
}

// A count whose reply is lost after the script ran is settled as applied:
// a served request needs no correction, a refused one a -1.
func TestUnknownOutcomeApplied(t *testing.T) {
	for _, served := range []bool{true, false} {
		t.Run(map[bool]string{true: "served", false: "refused"}[served], func(t *testing.T) {
			c, direct, px := proxied(t)
			ctx := t.Context()
			const user = 21
			if err := direct.SeedUsage(ctx, user, day, reset(day), 0); err != nil {
				t.Fatal(err)
			}
			// Counts that reply in time are acknowledged and need nothing.
			for range 3 {
				if res, err := c.CheckAndCount(ctx, user, day, reset(day), 100); err != nil || res.Outcome != valkey.Allowed {
					t.Fatalf("count before the fault: %+v %v", res, err)
				}
			}
			// As after a sync claim: nothing pending, the user not dirty.
			rawDel(t, direct, direct.Keys().Pending(user))
			if err := direct.Client().Do(ctx, direct.Client().B().Zrem().Key(direct.Keys().SyncDirty()).Member("21").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			// Replies now come back after the caller's timeout.
			toxic(t, px, `{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":800}}`)
			_, err := c.CheckAndCount(ctx, user, day, reset(day), 100)
			var s interface{ Settle(bool) }
			if !errors.As(err, &s) {
				t.Fatalf("count with a late reply: err = %v, want an unknown outcome", err)
			}
			s.Settle(served)
			if err := px.Toxics.RemoveToxic(ctx, "slow"); err != nil {
				t.Fatal(err)
			}
			// The request itself went up at once (the latency is on the
			// replies), but through the proxy's goroutines: on a loaded
			// machine it may reach the server a little after the caller gave
			// up, still well before its fence (2 × 200 ms + 100 ms).
			waittest.Until(t, 2*time.Second, "the script ran (counter 4)", func() bool {
				n, _, _ := direct.Usage(ctx, user, day)
				return n == 4
			})
			st := settleAll(t, c)
			if st.Applied != 1 || st.NotApplied != 0 {
				t.Fatalf("settlement %+v, want 1 applied", st)
			}
			// The lost reply carried "first pending unit: mark the user"; the
			// settlement marks it instead, or the sync would never see it.
			if _, err := direct.Client().Do(ctx, direct.Client().B().Zscore().Key(direct.Keys().SyncDirty()).Member("21").Build()).AsFloat64(); err != nil {
				t.Fatalf("user not marked dirty after its unknown count applied: %v", err)
			}
			var want []domain.UsageDelta
			if !served {
				want = []domain.UsageDelta{{UserID: user, PeriodStart: day, Delta: -1}}
			}
			if !equalDeltas(st.Corrections, want) {
				t.Fatalf("corrections %+v, want %+v", st.Corrections, want)
			}
		})
	}
}

// A count that never reached the server in time is fenced when it arrives
// and settled as not applied: a served request is a +1 correction.
func TestUnknownOutcomeNotApplied(t *testing.T) {
	c, direct, px := proxied(t)
	ctx := t.Context()
	const user = 22
	if err := direct.SeedUsage(ctx, user, day, reset(day), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckAndCount(ctx, user, day, reset(day), 100); err != nil {
		t.Fatal(err)
	}
	// Requests are held (not dropped) until the toxic goes: they reach the
	// server long after their fence.
	toxic(t, px, `{"name":"hold","type":"latency","stream":"upstream","attributes":{"latency":3000}}`)
	sent := time.Now()
	_, err := c.CheckAndCount(ctx, user, day, reset(day), 100)
	var s interface{ Settle(bool) }
	if !errors.As(err, &s) {
		t.Fatalf("count held on the way: err = %v, want an unknown outcome", err)
	}
	s.Settle(true)
	// Let the server clock pass the count's fence (send + 2 timeouts +
	// 100 ms) before the held bytes go on.
	time.Sleep(time.Until(sent.Add(600 * time.Millisecond)))
	if err := px.Toxics.RemoveToxic(ctx, "hold"); err != nil {
		t.Fatal(err)
	}
	st := settleAll(t, c)
	if st.Applied != 0 || st.NotApplied != 1 {
		t.Fatalf("settlement %+v, want 1 not applied", st)
	}
	if want := []domain.UsageDelta{{UserID: user, PeriodStart: day, Delta: 1}}; !equalDeltas(st.Corrections, want) {
		t.Fatalf("corrections %+v, want %+v", st.Corrections, want)
	}
	if n, _, _ := direct.Usage(ctx, user, day); n != 11 {
		t.Fatalf("counter = %d, want 11: the held count must have been a no-op", n)
	}
}

func equalDeltas(a, b []domain.UsageDelta) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].UserID != b[i].UserID || !a[i].PeriodStart.Equal(b[i].PeriodStart) || a[i].Delta != b[i].Delta {
			return false
		}
	}
	return true
}
