package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies every pending migration to the database at url and returns
// the file names it applied (none when the schema is current). Several
// instances may run it at once: a session advisory lock serialises them, and
// whoever comes second finds nothing left to apply.
func Migrate(ctx context.Context, url string) (applied []string, err error) {
	const op = "migrate"
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid DATABASE_URL", op)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()

	lockID, err := migrationLockID(ctx, db)
	if err != nil {
		return nil, wrap(op, err)
	}
	// The lock is per schema, so migrations of unrelated schemas in one
	// database (tests, several deployments) do not wait on each other.
	// 1s between attempts for up to 5 minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, wrap(op, err)
	}
	applied = make([]string, 0, len(results))
	for _, r := range results {
		applied = append(applied, path.Base(r.Source.Path))
	}
	return applied, nil
}

// migrationLockID derives the advisory lock id from the schema the
// migrations go to (the first existing schema on search_path).
func migrationLockID(ctx context.Context, db *sql.DB) (int64, error) {
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return 0, err
	}
	if !schema.Valid {
		return 0, errNoSchema
	}
	h := fnv.New64a()
	h.Write([]byte("warmpath.migrate:" + schema.String))
	return int64(h.Sum64() &^ (1 << 63)), nil
}
