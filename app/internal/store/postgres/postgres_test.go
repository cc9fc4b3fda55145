package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/pgtest"
	"github.com/warmpath/warmpath/app/internal/store/postgres"
	"github.com/warmpath/warmpath/app/internal/store/storetest"
)

var wantMigrations = []string{"00001_init.sql", "00002_subjects.sql", "00003_activity_without_index.sql"}

// TestContract runs the store contract suite on a fresh migrated schema per
// subtest; it skips when DATABASE_URL is unset.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMigrate(t *testing.T) {
	url := pgtest.NewSchema(t)
	applied, err := postgres.Migrate(testCtx(t), url)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if diff := cmp.Diff(wantMigrations, applied); diff != "" {
		t.Fatalf("first Migrate applied (-want +got):\n%s", diff)
	}
	applied, err = postgres.Migrate(testCtx(t), url)
	if err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", applied)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	url := pgtest.NewSchema(t)
	const n = 3
	var wg sync.WaitGroup
	results := make([][]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = postgres.Migrate(testCtx(t), url) })
	}
	wg.Wait()
	var all []string
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Migrate #%d: %v", i, errs[i])
		}
		all = append(all, results[i]...)
	}
	// Each migration applied exactly once across all callers.
	slices.Sort(all)
	if diff := cmp.Diff(wantMigrations, all); diff != "" {
		t.Fatalf("migrations applied across concurrent calls (-want +got):\n%s", diff)
	}
}

// TestSchemaIsolation checks that the URL from pgtest.NewSchema alone carries
// the schema: the pool, goose's database/sql connection and psql all use it.
func TestSchemaIsolation(t *testing.T) {
	url := pgtest.NewSchema(t)
	if _, err := postgres.Migrate(testCtx(t), url); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := postgres.Open(testCtx(t), postgres.Config{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	var schema, gooseSchema string
	if err := s.Pool().QueryRow(testCtx(t), `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatalf("current_schema: %v", err)
	}
	if err := s.Pool().QueryRow(testCtx(t),
		`SELECT table_schema FROM information_schema.tables WHERE table_name = 'goose_db_version' AND table_schema = current_schema()`).
		Scan(&gooseSchema); err != nil {
		t.Fatalf("goose_db_version not in the pool's schema: %v", err)
	}
	if len(schema) < len(pgtest.SchemaPrefix) || schema[:len(pgtest.SchemaPrefix)] != pgtest.SchemaPrefix {
		t.Fatalf("pool's current_schema = %q, want %s…", schema, pgtest.SchemaPrefix)
	}
	// A fresh libpq process (psql) given the URL lands in the same schema.
	if psql, err := exec.LookPath("psql"); err == nil {
		out, err := exec.CommandContext(testCtx(t), psql, url, "-Atc", "SELECT current_schema()").CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v: %s", err, out)
		}
		if got := string(out); got != schema+"\n" {
			t.Fatalf("psql current_schema = %q, want %q", got, schema)
		}
	}
}

func TestUnavailable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ctx := context.Background()
	start := time.Now()
	s, err := postgres.Open(ctx, postgres.Config{
		URL:         "postgres://nobody@127.0.0.1:1/none?sslmode=disable",
		OpTimeout:   timeout,
		BulkTimeout: timeout,
	})
	if err != nil {
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Open: err = %v, want ErrUnavailable", err)
		}
		return
	}
	defer s.Close()
	calls := map[string]func() error{
		"Ping":      func() error { return s.Ping(ctx) },
		"Warm":      func() error { return s.Warm(ctx) },
		"User":      func() error { _, err := s.User(ctx, 1); return err },
		"Principal": func() error { _, err := s.Principal(ctx, domain.TokenHash{}); return err },
		"ItemsHaving": func() error {
			_, err := s.ItemsHaving(ctx, 1, []string{"a"})
			return err
		},
		"ApplyUsageBatch": func() error {
			_, err := s.ApplyUsageBatch(ctx, domain.UsageBatch{Key: "k"})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s: err = %v, want ErrUnavailable", name, err)
		}
	}
	// Not a timing assertion on speed: a hang here would be the bug (each
	// call must be bounded by OpTimeout, not by the test's own deadline).
	t.Logf("%d calls against a closed port took %v", len(calls), time.Since(start))

	s.Close()
	if err := s.Ping(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Errorf("Ping on a closed pool: err = %v, want ErrUnavailable", err)
	}
}

// TestOpTimeout checks that a call without a deadline is cut at its timeout
// (BulkTimeout for ApplyUsageBatch) and reported as unavailable: the server
// answers, but the statement waits on a row another transaction holds.
func TestOpTimeout(t *testing.T) {
	s := pgtest.NewStore(t)
	slow, err := postgres.Open(testCtx(t), postgres.Config{URL: poolURL(t, s), OpTimeout: 200 * time.Millisecond, BulkTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer slow.Close()

	tx, err := s.Pool().Begin(testCtx(t))
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(testCtx(t), `INSERT INTO usage_batches (key, users, total) VALUES ('held', 0, 0)`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	// A point call waits on the user row tx locks: cut at OpTimeout.
	if err := s.UpsertPlans(testCtx(t), []domain.Plan{{Name: "free", Quota: 1, Period: domain.PeriodDay, MaxItems: 10}}); err != nil {
		t.Fatalf("UpsertPlans: %v", err)
	}
	u, err := s.CreateUser(testCtx(t), "held", "free", nil)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if _, err := tx.Exec(testCtx(t), `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, u.ID); err != nil {
		t.Fatalf("lock user: %v", err)
	}
	_, err = slow.UpdateItems(context.Background(), u.ID, []string{"a"}, nil, 10)
	if !errors.Is(err, domain.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("UpdateItems waiting past OpTimeout: err = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	// Same key: the insert waits for tx, which never ends in time.
	_, err = slow.ApplyUsageBatch(context.Background(), domain.UsageBatch{Key: "held"})
	if !errors.Is(err, domain.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ApplyUsageBatch waiting past BulkTimeout: err = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	// The caller's cancellation is not unavailability.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := slow.Ping(cctx); err == nil || errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Ping(cancelled ctx): err = %v, want an error that is not ErrUnavailable", err)
	}
}

// poolURL returns the connection string of s's pool (the test schema's URL).
func poolURL(t *testing.T, s *postgres.Store) string {
	t.Helper()
	return s.Pool().Config().ConnString()
}

func TestWarm(t *testing.T) {
	url := pgtest.NewSchema(t)
	if _, err := postgres.Migrate(testCtx(t), url); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := postgres.Open(testCtx(t), postgres.Config{URL: url, MinConns: 3, MaxConns: 5})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.Warm(testCtx(t)); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	if n := s.Pool().Stat().TotalConns(); n < 3 {
		t.Fatalf("after Warm the pool has %d connections, want at least MinConns=3", n)
	}
	// The hot statements work on warmed connections (prepared by name = SQL).
	for range 5 {
		if _, err := s.Principal(testCtx(t), domain.TokenHash{1}); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("Principal after Warm: err = %v, want ErrNotFound", err)
		}
		if _, err := s.ItemsHaving(testCtx(t), 1, []string{"a"}); err != nil {
			t.Fatalf("ItemsHaving after Warm: %v", err)
		}
	}
}

// BenchmarkItemsHaving probes 1,000 items (half present) against a
// 100,000-item set.
func BenchmarkItemsHaving(b *testing.B) {
	s := pgtest.NewStore(b)
	ctx := testCtx(b)
	if err := s.UpsertPlans(ctx, []domain.Plan{{Name: "pro", Quota: 1, Period: domain.PeriodMonth, MaxItems: 1_000_000}}); err != nil {
		b.Fatal(err)
	}
	u, err := s.CreateUser(ctx, "bench", "pro", nil)
	if err != nil {
		b.Fatal(err)
	}
	const setSize = 100_000
	for start := 0; start < setSize; start += 10_000 {
		add := make([]string, 0, 10_000)
		for i := start; i < start+10_000; i++ {
			add = append(add, fmt.Sprintf("https://example.com/item/%07d", i))
		}
		if _, err := s.UpdateItems(ctx, u.ID, add, nil, 1_000_000); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `ANALYZE items`); err != nil {
		b.Fatal(err)
	}
	probe := make([]string, 0, 1000)
	for i := range 1000 {
		// Even: present (spread over the set); odd: absent.
		if i%2 == 0 {
			probe = append(probe, fmt.Sprintf("https://example.com/item/%07d", i*97))
		} else {
			probe = append(probe, fmt.Sprintf("https://example.com/other/%07d", i))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		have, err := s.ItemsHaving(ctx, u.ID, probe)
		if err != nil {
			b.Fatal(err)
		}
		if len(have) != 500 {
			b.Fatalf("have %d, want 500", len(have))
		}
	}
}

// BenchmarkApplyUsageBatch applies batches of 10,000 deltas (one per user)
// and reports users/s.
func BenchmarkApplyUsageBatch(b *testing.B) {
	s := pgtest.NewStore(b)
	ctx := testCtx(b)
	if err := s.UpsertPlans(ctx, []domain.Plan{{Name: "free", Quota: 1, Period: domain.PeriodDay, MaxItems: 1}}); err != nil {
		b.Fatal(err)
	}
	const users = 10_000
	if _, err := s.Pool().Exec(ctx,
		`INSERT INTO users (name, plan) SELECT 'u' || g, 'free' FROM generate_series(1, $1) g`, users); err != nil {
		b.Fatal(err)
	}
	rows, _ := s.Pool().Query(ctx, `SELECT id FROM users ORDER BY id`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		b.Fatal(err)
	}
	day := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	deltas := make([]domain.UsageDelta, len(ids))
	for i, id := range ids {
		deltas[i] = domain.UsageDelta{UserID: id, PeriodStart: day, Delta: 1}
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n++
		applied, err := s.ApplyUsageBatch(ctx, domain.UsageBatch{Key: fmt.Sprintf("bench-%d", n), Deltas: deltas})
		if err != nil || !applied {
			b.Fatalf("ApplyUsageBatch = %v, %v", applied, err)
		}
	}
	b.ReportMetric(float64(users)*float64(n)/b.Elapsed().Seconds(), "users/s")
}
