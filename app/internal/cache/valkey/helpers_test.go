package valkey_test

import (
	"testing"
	"time"

	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/cache/valkey"
	"github.com/warmpath/warmpath/app/internal/cache/valkeytest"
)

// onEachBackend runs f against the real server (when VALKEY_URL is set) and
// against miniredis, each with a fresh prefix.
func onEachBackend(t *testing.T, f func(t *testing.T, c *valkey.Cache)) {
	t.Helper()
	backends := []struct {
		name string
		open func(testing.TB) *valkey.Cache
	}{
		{"valkey", valkeytest.New},
		{"miniredis", valkeytest.NewMiniredis},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.open(t))
		})
	}
}

// day is a fixed period start; the cache never looks at the clock.
var day = time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)

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
