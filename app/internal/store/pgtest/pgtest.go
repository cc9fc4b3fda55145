// Package pgtest gives tests an isolated Postgres: a fresh schema per test in
// the database named by DATABASE_URL, dropped when the test ends. Tests skip
// when DATABASE_URL is unset. Several test processes may share the database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/store/postgres"
	"github.com/warmpath/warmpath/internal/pgschema"
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
	u, err := pgschema.Create(ctx, base, schema)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { dropSchema(t, base, schema) })
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

func dropSchema(t testing.TB, base, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pgschema.Drop(ctx, base, schema); err != nil {
		t.Logf("pgtest: %v", err)
	}
}
