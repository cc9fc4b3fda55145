package main

// Direct reads and locks on the real backends, bypassing the service.

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	valkeygo "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

// withPG runs f on a fresh connection to the database (and schema) of dbURL,
// closed when f returns.
func withPG(t testing.TB, dbURL string, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to postgres: %v", err)
	}
	defer conn.Close(ctx)
	f(ctx, conn)
}

// persistedUsage reads the persisted usage per user, straight from Postgres.
func persistedUsage(t testing.TB, dbURL string) map[int64]int64 {
	t.Helper()
	out := map[int64]int64{}
	withPG(t, dbURL, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, `SELECT user_id, sum(count)::bigint FROM usage GROUP BY user_id`)
		if err != nil {
			t.Fatalf("read usage: %v", err)
		}
		for rows.Next() {
			var id, n int64
			if err := rows.Scan(&id, &n); err != nil {
				t.Fatalf("scan usage: %v", err)
			}
			out[id] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("read usage: %v", err)
		}
	})
	return out
}

// persistedTotal is the total persisted usage, straight from Postgres.
func persistedTotal(t testing.TB, dbURL string) int64 { return sumCounts(persistedUsage(t, dbURL)) }

// hotCounts reads each user's hot counters (valkey.Keys.Counter)
// for today and yesterday (UTC: a run across midnight has both), straight
// from Valkey.
// rawValkey is a plain client (no client-side cache) of the server or
// cluster at valkeyURL, closed at cleanup: for reading and deleting the
// test's keys behind the service's back.
func rawValkey(t testing.TB, valkeyURL string) valkeygo.Client {
	t.Helper()
	opt, err := valkeygo.ParseURL(valkeyURL)
	if err != nil {
		t.Fatalf("parse VALKEY_URL: %v", err)
	}
	opt.DisableCache = true
	c, err := valkeygo.NewClient(opt)
	if err != nil {
		t.Fatalf("connect to valkey: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// deleteValkeyPrefix removes every key of prefix on every node (SCAN +
// UNLINK, one key per UNLINK: on a cluster keys live in many slots): the
// test's Valkey emptied, as a restart without persistence would, without
// touching anyone else's keys.
func deleteValkeyPrefix(t testing.TB, valkeyURL, prefix string) {
	t.Helper()
	c := rawValkey(t, valkeyURL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, node := range c.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Fatal(err)
			}
			cmds := make(valkeygo.Commands, 0, len(e.Elements))
			for _, k := range e.Elements {
				cmds = append(cmds, node.B().Unlink().Key(k).Build())
			}
			for _, r := range node.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					t.Fatal(err)
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
}

func hotCounts(t testing.TB, valkeyURL, prefix string, users []user) map[int64]int64 {
	t.Helper()
	c := rawValkey(t, valkeyURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	out := map[int64]int64{}
	for _, u := range users {
		for _, day := range []time.Time{now, now.AddDate(0, 0, -1)} {
			key := valkey.NewKeys(prefix).Counter(u.id, day)
			n, err := c.Do(ctx, c.B().Get().Key(key).Build()).AsInt64()
			switch {
			case valkeygo.IsValkeyNil(err):
			case err != nil:
				t.Fatalf("GET %s: %v", key, err)
			default:
				out[u.id] += n
			}
		}
	}
	return out
}

func sumCounts(m map[int64]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// queryRow runs one query on the schema of dbURL and scans its single row.
func queryRow(t *testing.T, dbURL, sql string, dest ...any) {
	t.Helper()
	withPG(t, dbURL, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	})
}
