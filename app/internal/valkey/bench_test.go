package valkey_test

import (
	"context"
	"crypto/sha256"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/valkey"
	"github.com/warmpath/warmpath/app/internal/valkey/valkeytest"
)

// requestContext is a context like the HTTP layer's request contexts,
// which nothing cancels (so the package's calls share their deadlines).
func requestContext(b *testing.B) context.Context { return context.WithoutCancel(b.Context()) }

// BenchmarkCheckAndCount: one quota check + count, one round trip (EVALSHA).
func BenchmarkCheckAndCount(b *testing.B) {
	c := valkeytest.NewWith(b, testConfig())
	ctx := requestContext(b)
	if err := c.SeedUsage(ctx, 1, day, reset(day), 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := c.CheckAndCount(ctx, 1, day, reset(day), math.MaxInt64)
		if err != nil || r.Outcome != valkey.Allowed {
			b.Fatalf("%+v, %v", r, err)
		}
	}
}

// BenchmarkPrincipalWarm: a principal served from the client-side cache.
func BenchmarkPrincipalWarm(b *testing.B) {
	prefix := valkeytest.Prefix()
	base := valkeytest.NewWith(b, valkey.Config{Prefix: prefix})
	counting := &countingClient{Client: base.Client()}
	c := valkey.NewFromClient(counting, valkey.Config{Prefix: prefix})
	ctx := requestContext(b)
	hash := domain.TokenHash(sha256.Sum256([]byte("wp_bench")))
	if err := c.PutPrincipal(ctx, hash, testPrincipal(), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, found, err := c.Principal(ctx, hash); err != nil || !found {
			b.Fatalf("found=%v err=%v", found, err)
		}
	}
	calls, hits, _ := counting.stats()
	b.ReportMetric(float64(hits)/float64(calls), "hit-ratio")
}

// BenchmarkHasNot: 1,000 items (half present) against a warm 100k-item set.
func BenchmarkHasNot(b *testing.B) {
	c := valkeytest.NewWith(b, testConfig())
	ctx := requestContext(b)
	set := make([]string, 100_000)
	for i := range set {
		set[i] = "item-" + strconv.Itoa(i)
	}
	l := c.BeginItemsLoad(1)
	for chunk := range slices.Chunk(set, 10_000) {
		if err := l.Add(ctx, chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Finish(ctx, 1, time.Hour); err != nil {
		b.Fatal(err)
	}
	query := make([]string, 1000)
	for i := range query {
		query[i] = "item-" + strconv.Itoa(i*200) // every other one is past 100k
	}
	b.ReportAllocs()
	for b.Loop() {
		missing, warm, err := c.HasNot(ctx, 1, query)
		if err != nil || !warm || len(missing) != 500 {
			b.Fatalf("missing=%d warm=%v err=%v", len(missing), warm, err)
		}
	}
}

// warmQuerySetup seeds user 1's counter and a 100-item set, and returns a
// 10-item query (half present), the perf lab's shape.
func warmQuerySetup(b *testing.B) (*valkey.Cache, []string) {
	return warmQuerySetupOn(b, valkeytest.NewWith(b, testConfig()))
}

// warmQuerySetupOn is warmQuerySetup on the cache c.
func warmQuerySetupOn(b *testing.B, c *valkey.Cache) (*valkey.Cache, []string) {
	ctx := requestContext(b)
	if err := c.SeedUsage(ctx, 1, day, reset(day), 0); err != nil {
		b.Fatal(err)
	}
	set := make([]string, 100)
	for i := range set {
		set[i] = "https://example.com/item/" + strconv.Itoa(i)
	}
	l := c.BeginItemsLoad(1)
	if err := l.Add(ctx, set); err != nil {
		b.Fatal(err)
	}
	if err := l.Finish(ctx, 1, time.Hour); err != nil {
		b.Fatal(err)
	}
	query := append(slices.Clone(set[:5]), "https://example.com/new/1", "https://example.com/new/2", "https://example.com/new/3", "https://example.com/new/4", "https://example.com/new/5")
	return c, query
}

// BenchmarkWarmQueryTwoRoundTrips: a warm query's Valkey work as it was,
// the count then the has-not lookup (two EVALSHAs).
func BenchmarkWarmQueryTwoRoundTrips(b *testing.B) {
	c, query := warmQuerySetup(b)
	ctx := requestContext(b)
	b.ReportAllocs()
	for b.Loop() {
		r, err := c.CheckAndCount(ctx, 1, day, reset(day), math.MaxInt64)
		if err != nil || r.Outcome != valkey.Allowed {
			b.Fatalf("%+v, %v", r, err)
		}
		missing, warm, err := c.HasNot(ctx, 1, query)
		if err != nil || !warm || len(missing) != 5 {
			b.Fatalf("missing=%d warm=%v err=%v", len(missing), warm, err)
		}
	}
}

// BenchmarkWarmQueryOneRoundTrip: the same work in one call (CountHasNot),
// on VALKEY_URL; on miniredis over TCP (embedded: the tests' server); and
// on the embedded default's server as the service uses it (embedded-pipe:
// StartEmbedded, in-process connections).
func BenchmarkWarmQueryOneRoundTrip(b *testing.B) {
	b.Run("valkey", func(b *testing.B) { benchWarmQueryOneRoundTrip(b, warmQuerySetup) })
	b.Run("embedded", func(b *testing.B) {
		benchWarmQueryOneRoundTrip(b, func(b *testing.B) (*valkey.Cache, []string) {
			return warmQuerySetupOn(b, valkeytest.NewMiniredisWith(b, testConfig()))
		})
	})
	b.Run("embedded-pipe", func(b *testing.B) {
		benchWarmQueryOneRoundTrip(b, func(b *testing.B) (*valkey.Cache, []string) {
			e, err := valkey.StartEmbedded()
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(e.Close)
			cfg := testConfig()
			cfg.URL, cfg.Dial, cfg.DisableClientCache = e.URL, e.Dial, true
			c, err := valkey.New(b.Context(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			return warmQuerySetupOn(b, c)
		})
	})
}

func benchWarmQueryOneRoundTrip(b *testing.B, setup func(b *testing.B) (*valkey.Cache, []string)) {
	c, query := setup(b)
	ctx := requestContext(b)
	b.ReportAllocs()
	for b.Loop() {
		r, hn, err := c.CountHasNot(ctx, valkey.CountRequest{UserID: 1, Start: day, Reset: reset(day), Limit: math.MaxInt64}, query)
		if err != nil || r.Outcome != valkey.Allowed || !hn.Warm || len(hn.Missing) != 5 {
			b.Fatalf("%+v, %+v, %v", r, hn, err)
		}
	}
}

// BenchmarkRoundTripFloor: what one round trip costs at the least, next to
// the warm query's count script, with 32 concurrent callers (as under
// load): the client process's CPU per call (getrusage) and, on a real
// server, the server's (INFO cpu). PING and a script that returns 1 are the
// floor of any call; "count" is the warm query's one call.
func BenchmarkRoundTripFloor(b *testing.B) {
	c, query := warmQuerySetup(b)
	trivial := valkeygo.NewLuaScript("return 1")
	calls := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"ping", func(ctx context.Context) error { return c.Client().Do(ctx, c.Client().B().Ping().Build()).Error() }},
		{"script", func(ctx context.Context) error { return trivial.Exec(ctx, c.Client(), nil, nil).Error() }},
		{"count", func(ctx context.Context) error {
			_, _, err := c.CountHasNot(ctx, valkey.CountRequest{UserID: 1, Start: day, Reset: reset(day), Limit: math.MaxInt64}, query)
			return err
		}},
	}
	for _, call := range calls {
		b.Run(call.name, func(b *testing.B) {
			ctx := requestContext(b)
			server0, client0 := serverCPU(b, c), valkey.ProcessCPU()
			b.SetParallelism(16) // 32 callers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call.do(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64((valkey.ProcessCPU()-client0).Microseconds())/float64(b.N), "client-cpu-µs/op")
			b.ReportMetric(float64((serverCPU(b, c)-server0).Microseconds())/float64(b.N), "server-cpu-µs/op")
		})
	}
}

// serverCPU is the server's used_cpu_user+used_cpu_sys (INFO cpu).
func serverCPU(b *testing.B, c *valkey.Cache) time.Duration {
	b.Helper()
	return valkey.ServerCPU(b, c.Client())
}
