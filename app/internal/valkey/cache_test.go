package valkey_test

import (
	"errors"
	vk "github.com/valkey-io/valkey-go"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
)

func TestKeys(t *testing.T) {
	c := valkey.NewFromClient(nil, valkey.Config{})
	k := c.Keys()
	hash := domain.TokenHash{0xab, 0x01}
	tests := []struct {
		got, want string
	}{
		{k.Pending(7), "wp:{u:7}:pending"},
		{k.Inflight(7), "wp:{u:7}:inflight"},
		{k.Items(7), "wp:{u:7}:items"},
		{k.ItemsVersion(7), "wp:{u:7}:items:v"},
		{k.ItemsFloor(7), "wp:{u:7}:items:floor"},
		{k.ItemsLoad(7, "x"), "wp:{u:7}:items:load:x"},
		{k.WarmupStatus(7), "wp:{u:7}:warmup"},
		{k.WarmupLock(7), "wp:{u:7}:warmup:lock"},
		{k.Counter(-1, time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)), "wp:{u:-1}:use:20250314"},
		{k.Token(hash), "wp:tok:ab01" + strings.Repeat("00", 30)},
		{k.SyncDirty(), "wp:{sync}:dirty"},
		{k.SyncBatches(), "wp:{sync}:batches"},
		{k.SyncBatchInfo(), "wp:{sync}:batchinfo"},
		{k.SyncBatch("b1"), "wp:{sync}:batch:b1"},
		{valkey.NewKeys("p").Pending(1), "p:{u:1}:pending"},
		// A period start given in another zone is still the UTC day.
		{valkey.PeriodField(time.Date(2025, 3, 14, 1, 0, 0, 0, time.FixedZone("CET", 3600))), "20250314"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	m := miniredis.RunT(t)
	for _, scheme := range []string{"valkey://", "redis://"} {
		t.Run(scheme, func(t *testing.T) {
			c, err := valkey.New(t.Context(), valkey.Config{URL: scheme + m.Addr(), DisableClientCache: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.LoadScripts(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("LocalTTL above 1s", func(t *testing.T) {
		_, err := valkey.New(t.Context(), valkey.Config{URL: "redis://" + m.Addr(), DisableClientCache: true, LocalTTL: 2 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "LocalTTL") {
			t.Fatalf("err = %v, want a LocalTTL error", err)
		}
	})
}

func TestLoadScripts(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c *valkey.Cache) {
		if err := c.LoadScripts(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestUnavailable(t *testing.T) {
	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = valkey.New(t.Context(), valkey.Config{URL: "redis://" + addr, DisableClientCache: true})
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("server gone", func(t *testing.T) {
		m := miniredis.RunT(t)
		c, err := valkey.New(t.Context(), valkey.Config{URL: "redis://" + m.Addr(), DisableClientCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		m.Close()
		ctx := t.Context()
		_, err = c.CheckAndCount(ctx, 1, day, reset(day), 10)
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("CheckAndCount err = %v, want ErrUnavailable", err)
		}
		_, _, err = c.HasNot(ctx, 1, []string{"a"})
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("HasNot err = %v, want ErrUnavailable", err)
		}
		_, _, err = c.Principal(ctx, domain.TokenHash{})
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Principal err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("server error is not unavailability", func(t *testing.T) {
		c := valkeytest.NewMiniredis(t)
		// A counter that is not a number makes the script fail: a bug, not an outage.
		if err := c.Client().Do(t.Context(), c.Client().B().Set().Key(c.Keys().Counter(1, day)).Value("x").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		_, err := c.CheckAndCount(t.Context(), 1, day, reset(day), 10)
		if err == nil || errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("err = %v, want a non-ErrUnavailable error", err)
		}
	})
}

// The embedded server answers over its in-process connections (Dial, what
// the service uses) and over TCP (URL), one keyspace for both.
func TestStartEmbedded(t *testing.T) {
	e, err := valkey.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := valkey.New(t.Context(), valkey.Config{URL: e.URL, Dial: e.Dial, DisableClientCache: true, Now: testConfig().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SeedUsage(t.Context(), 1, day, reset(day), 0); err != nil {
		t.Fatal(err)
	}
	if r, err := c.CheckAndCount(t.Context(), 1, day, reset(day), 2); err != nil || r.Outcome != valkey.Allowed {
		t.Fatalf("CheckAndCount (in process) = %+v, %v", r, err)
	}
	overTCP, err := valkey.New(t.Context(), valkey.Config{URL: e.URL, DisableClientCache: true, Now: testConfig().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer overTCP.Close()
	if r, err := overTCP.CheckAndCount(t.Context(), 1, day, reset(day), 2); err != nil || r.Outcome != valkey.Allowed || r.Used != 2 {
		t.Fatalf("CheckAndCount (TCP) = %+v, %v; want allowed, used 2", r, err)
	}
	e.Close()
	if _, err := e.Dial(t.Context()); err == nil {
		t.Fatal("Dial after Close: no error")
	}
}

// The embedded server expires keys on the wall clock by itself: a warmup
// lock or a cached principal must not live forever.
func TestStartEmbeddedExpires(t *testing.T) {
	e, err := valkey.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := vk.NewClient(vk.ClientOption{InitAddress: []string{strings.TrimPrefix(e.URL, "redis://")}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if err := c.Do(ctx, c.B().Set().Key("k").Value("v").Px(150*time.Millisecond).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := c.Do(ctx, c.B().Exists().Key("k").Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a key with a 150 ms TTL still exists after 5 s")
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not a wait for an outcome
	}
}
