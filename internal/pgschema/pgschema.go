// Package pgschema gives a process its own Postgres schema in a shared
// database: create it, hand out a connection URL whose every session lands
// in it, drop it. The tests' isolated stores (app/internal/store/pgtest) and
// the perf lab's services use it.
package pgschema

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// URL adds `-c search_path=<schema>` to base's startup options (keeping any
// options it already has), so the URL alone carries the schema: pgxpool,
// database/sql via pgx/stdlib and a fresh process given it as DATABASE_URL
// all land there. Keyword/value DSNs get an options keyword appended.
func URL(base, schema string) (string, error) {
	opt := "-c search_path=" + schema
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		return base + " options='" + opt + "'", nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", err)
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

// Create creates the empty schema in base's database and returns URL(base,
// schema).
func Create(ctx context.Context, base, schema string) (string, error) {
	err := exec(ctx, base, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %s: %w", schema, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return URL(base, schema)
}

// Drop drops the schemas and everything in them. A process still connected
// (a server under test shutting down) must not hang it: each drop gives up
// after 10 s waiting for locks and leaves its schema behind.
func Drop(ctx context.Context, base string, schemas ...string) error {
	return exec(ctx, base, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "SET lock_timeout = '10s'"); err != nil {
			return fmt.Errorf("drop schemas: %w", err)
		}
		var errs []error
		for _, s := range schemas {
			if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
				errs = append(errs, fmt.Errorf("drop schema %s: %w", s, err))
			}
		}
		return errors.Join(errs...)
	})
}

func exec(ctx context.Context, base string, f func(conn *pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	return f(conn)
}
