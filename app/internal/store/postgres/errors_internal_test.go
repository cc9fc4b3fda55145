package postgres

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// A statement on a connection that has been closed (pgx: "conn closed",
// seen by the sync loop when Postgres went away mid-pass) means the database
// cannot be reached: it must be ErrUnavailable, so callers answer 503 and the
// sync loop treats it as an outage rather than as a bad batch.
func TestWrapConnClosedIsUnavailable(t *testing.T) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		t.Skip("DATABASE_URL not set: skipping test that needs Postgres")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	if err == nil {
		t.Fatal("exec on a closed connection succeeded")
	}
	if got := wrap("op", err); !errors.Is(got, domain.ErrUnavailable) {
		t.Fatalf("wrap(%q) = %v, want domain.ErrUnavailable", err, got)
	}
}
