package pgschema

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestURL(t *testing.T) {
	tests := []struct{ base, want, options string }{
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?options=-c%20search_path%3Ds1&sslmode=disable", "-c search_path=s1"},
		{"postgresql://u@h/db?options=-c%20statement_timeout%3D5s", "postgresql://u@h/db?options=-c%20statement_timeout%3D5s%20-c%20search_path%3Ds1", "-c statement_timeout=5s -c search_path=s1"},
		{"host=h user=u dbname=db", "host=h user=u dbname=db options='-c search_path=s1'", "-c search_path=s1"},
	}
	for _, tt := range tests {
		got, err := URL(tt.base, "s1")
		if err != nil || got != tt.want {
			t.Errorf("URL(%q) = %q, %v; want %q", tt.base, got, err, tt.want)
			continue
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", got, err)
		}
		if o := cfg.RuntimeParams["options"]; o != tt.options {
			t.Errorf("URL(%q): options %q, want %q", tt.base, o, tt.options)
		}
	}
	if _, err := URL("postgres://h/%zz", "s1"); err == nil {
		t.Error("URL of a malformed URL: no error")
	}
}

// TestCreateDrop: a session on Create's URL lands in the schema; Drop
// removes it.
func TestCreateDrop(t *testing.T) {
	base := os.Getenv("DATABASE_URL")
	if base == "" {
		t.Skip("DATABASE_URL not set: skipping test that needs Postgres")
	}
	ctx := t.Context()
	schema := "wp_pgschema_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	u, err := Create(ctx, base, schema)
	if err != nil {
		t.Fatal(err)
	}
	if got := currentSchema(t, ctx, u); got != schema {
		t.Fatalf("current_schema() = %q, want %q", got, schema)
	}
	if err := Drop(ctx, base, schema); err != nil {
		t.Fatal(err)
	}
	// search_path names a schema that is gone: no current schema.
	if got := currentSchema(t, ctx, u); got != "" {
		t.Fatalf("after Drop, current_schema() = %q, want none", got)
	}
}

func currentSchema(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s *string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return ""
	}
	return *s
}
