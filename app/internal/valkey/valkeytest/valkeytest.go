// Package valkeytest gives tests a *valkey.Cache that is isolated from every
// other test: on the real server named by VALKEY_URL (skipped when unset) or
// on an in-process miniredis. Each cache uses a random key prefix, and its
// keys are deleted when the test ends.
package valkeytest

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

// New returns a Cache on the server at VALKEY_URL with client-side caching on
// and a random prefix. It skips the test when VALKEY_URL is unset. Cleanup
// deletes the prefix's keys (SCAN + UNLINK, never FLUSHDB: other tests share
// the server) and closes the cache.
func New(t testing.TB) *valkey.Cache {
	t.Helper()
	return NewWith(t, valkey.Config{})
}

// NewWith is New with a config; URL and Prefix are set by NewWith.
func NewWith(t testing.TB, cfg valkey.Config) *valkey.Cache {
	t.Helper()
	return fromEnv(t, "VALKEY_URL", "a real Valkey (e.g. VALKEY_URL=redis://127.0.0.1:6379)", cfg)
}

// fromEnv opens a Cache on the URL in the environment variable name (with a
// random prefix unless cfg has one), or skips the test when it is unset.
func fromEnv(t testing.TB, name, what string, cfg valkey.Config) *valkey.Cache {
	t.Helper()
	cfg.URL = os.Getenv(name)
	if cfg.URL == "" {
		t.Skipf("%s not set: skipping test against %s", name, what)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = Prefix()
	}
	return open(t, cfg)
}

// NewCluster returns a Cache on the Valkey Cluster at VALKEY_CLUSTER_URL
// (seed nodes: redis://host1:port?addr=host2:port&addr=…), with a random
// prefix. It skips the test when VALKEY_CLUSTER_URL is unset.
func NewCluster(t testing.TB, cfg valkey.Config) *valkey.Cache {
	t.Helper()
	c := fromEnv(t, "VALKEY_CLUSTER_URL", "a Valkey Cluster (e.g. VALKEY_CLUSTER_URL='redis://127.0.0.1:7001?addr=127.0.0.1:7002&addr=127.0.0.1:7003')", cfg)
	if n := len(c.Client().Nodes()); n < 2 {
		t.Fatalf("VALKEY_CLUSTER_URL reaches %d node(s): not a cluster", n)
	}
	return c
}

// NewMiniredis returns a Cache on a fresh in-process miniredis (client-side
// caching off: miniredis has no CLIENT TRACKING). TTLs run on the wall clock.
func NewMiniredis(t testing.TB) *valkey.Cache {
	t.Helper()
	return NewMiniredisWith(t, valkey.Config{})
}

// NewMiniredisWith is NewMiniredis with a config; URL, Prefix and
// DisableClientCache are set by NewMiniredisWith.
func NewMiniredisWith(t testing.TB, cfg valkey.Config) *valkey.Cache {
	t.Helper()
	m := miniredis.RunT(t)
	m.ClockTTL(true)
	cfg.URL, cfg.Prefix, cfg.DisableClientCache = "redis://"+m.Addr(), Prefix(), true
	return open(t, cfg)
}

// Prefix returns a random key prefix for one test.
func Prefix() string { return "wpt-" + rand.Text()[:12] }

func open(t testing.TB, cfg valkey.Config) *valkey.Cache {
	t.Helper()
	if cfg.OpTimeout == 0 {
		// These tests check behaviour, not deadlines: on a loaded CI machine
		// under -race, 500 ms is not enough for hundreds of concurrent
		// scripts on miniredis, and the breaker would turn slowness into
		// failures.
		cfg.OpTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := valkey.New(ctx, cfg)
	if err != nil {
		t.Fatalf("valkeytest: %v", err)
	}
	t.Cleanup(func() {
		defer c.Close()
		if err := DeletePrefix(c, cfg.Prefix); err != nil {
			t.Errorf("valkeytest: cleanup: %v", err)
		}
	})
	return c
}

// DeletePrefix unlinks every key that starts with prefix+":" on every node.
func DeletePrefix(c *valkey.Cache, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, node := range c.Client().Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return err
			}
			// One key per UNLINK: keys of different users live in different
			// cluster slots.
			cmds := make(valkeygo.Commands, 0, len(e.Elements))
			for _, k := range e.Elements {
				cmds = append(cmds, node.B().Unlink().Key(k).Build())
			}
			for _, r := range node.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					return err
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}
