// Package pgtest gives tests an isolated Postgres: a fresh schema per test in
// the database named by DATABASE_URL, dropped when the test ends. Tests skip
// when DATABASE_URL is unset. Several test processes may share the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warmpath/warmpath/app/internal/store/postgres"
)

// SchemaPrefix starts the name of every schema NewSchema creates.
const SchemaPrefix = "wp_test_"

// NewSchema creates an empty schema wp_test_<random> and returns a connection
// URL whose sessions use it (search_path set through the startup `options`
// parameter, so the URL alone carries the schema: pgxpool, database/sql via
// pgx/stdlib and a fresh process given it as DATABASE_URL all land there).
// Migrations are not applied. The schema is dropped in t.Cleanup; close pools
// on it before that (register their cleanup after calling NewSchema).
func NewSchema(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		t.Skip("DATABASE_URL not set: skipping test that needs Postgres")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := SchemaPrefix + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect to DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() { dropSchema(t, base, schema) })

	u, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// NewStore returns a Store on a fresh, migrated schema; it is closed in
// t.Cleanup before the schema is dropped.
func NewStore(t testing.TB) *postgres.Store {
	t.Helper()
	u := NewSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := postgres.Migrate(ctx, u); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
	s, err := postgres.Open(ctx, postgres.Config{URL: u, MaxConns: 16})
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// withSearchPath adds `-c search_path=<schema>` to the URL's startup options
// (keeping any options it already has). Keyword/value DSNs get an options
// keyword appended instead.
func withSearchPath(base, schema string) (string, error) {
	opt := "-c search_path=" + schema
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		return base + " options='" + opt + "'", nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if old := q.Get("options"); old != "" {
		opt = old + " " + opt
	}
	q.Set("options", opt)
	// %20, not '+': libpq-based tools (psql) do not decode '+' as a space.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String(), nil
}

func dropSchema(t testing.TB, base, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Logf("pgtest: drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	// A process still connected (a server under test shutting down) must not
	// hang the cleanup: give up after a while and leave the schema behind.
	if _, err := conn.Exec(ctx, "SET lock_timeout = '10s'"); err != nil {
		t.Logf("pgtest: drop schema %s: %v", schema, err)
		return
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		t.Logf("pgtest: drop schema %s: %v", schema, err)
	}
}
