package valkey_test

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
)

// onEachBackend runs f against the real server (when VALKEY_URL is set) and
// against miniredis, each with a fresh prefix.
func onEachBackend(t *testing.T, f func(t *testing.T, c *valkey.Cache)) {
	t.Helper()
	backends := []struct {
		name string
		open func(testing.TB) *valkey.Cache
	}{
		{"valkey", func(t testing.TB) *valkey.Cache { return valkeytest.NewWith(t, testConfig()) }},
		{"cluster", func(t testing.TB) *valkey.Cache { return valkeytest.NewCluster(t, testConfig()) }},
		{"miniredis", func(t testing.TB) *valkey.Cache { return valkeytest.NewMiniredisWith(t, testConfig()) }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.open(t))
		})
	}
}

// day is a fixed period start (of a daily period), and testNow the test
// caches' clock: 12 h into that day. A counter of day therefore lives
// counterTTL: the 12 h until its reset plus the adapter's hour of slack.
var (
	day     = time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	testNow = day.Add(12 * time.Hour)
)

const counterTTL = 13 * time.Hour

// reset is the reset of the daily period that starts at start.
func reset(start time.Time) time.Time { return start.AddDate(0, 0, 1) }

// testConfig is the config of the test caches: the clock pinned at testNow.
func testConfig() valkey.Config {
	return valkey.Config{Now: func() time.Time { return testNow }}
}

// rawGet returns the string at key, "" when absent.
func rawGet(t *testing.T, c *valkey.Cache, key string) string {
	t.Helper()
	s, err := c.Client().Do(t.Context(), c.Client().B().Get().Key(key).Build()).ToString()
	if err != nil && !isNil(err) {
		t.Fatalf("GET %s: %v", key, err)
	}
	return s
}

func rawHGet(t *testing.T, c *valkey.Cache, key, field string) string {
	t.Helper()
	s, err := c.Client().Do(t.Context(), c.Client().B().Hget().Key(key).Field(field).Build()).ToString()
	if err != nil && !isNil(err) {
		t.Fatalf("HGET %s %s: %v", key, field, err)
	}
	return s
}

func rawPTTL(t *testing.T, c *valkey.Cache, key string) int64 {
	t.Helper()
	n, err := c.Client().Do(t.Context(), c.Client().B().Pttl().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return n
}

func rawDel(t *testing.T, c *valkey.Cache, keys ...string) {
	t.Helper()
	if err := c.Client().Do(t.Context(), c.Client().B().Del().Key(keys...).Build()).Error(); err != nil {
		t.Fatalf("DEL %v: %v", keys, err)
	}
}

func rawMembers(t *testing.T, c *valkey.Cache, key string) []string {
	t.Helper()
	m, err := c.Client().Do(t.Context(), c.Client().B().Smembers().Key(key).Build()).AsStrSlice()
	if err != nil {
		t.Fatalf("SMEMBERS %s: %v", key, err)
	}
	return m
}

func isNil(err error) bool { return valkeygo.IsValkeyNil(err) }

// onMiniredis is a Cache on a fresh miniredis of its own (no client-side
// cache), with the server for the test to look into (its command counts,
// its keys).
func onMiniredis(t *testing.T) (*miniredis.Miniredis, *valkey.Cache) {
	t.Helper()
	m := miniredis.RunT(t)
	cfg := testConfig()
	cfg.URL, cfg.DisableClientCache = "redis://"+m.Addr(), true
	c, err := valkey.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return m, c
}
