// Package postgres is the Postgres system of record: a pgx v5 pool behind the
// store.Store contract, and the schema as versioned migrations applied with
// goose. Driver errors stop here: callers only see domain errors (wrapped with
// the operation).
package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/warmpath/warmpath/app/internal/store"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultOpTimeout   = 2 * time.Second
	DefaultBulkTimeout = 30 * time.Second
)

// Config configures Open.
type Config struct {
	// URL is a Postgres connection URL or keyword/value DSN.
	URL string
	// MaxConns and MinConns size the pool (pgxpool defaults when 0).
	MaxConns, MinConns int32
	// OpTimeout bounds every call that has no earlier deadline (default 2s),
	// so a hung database turns into domain.ErrUnavailable instead of a hung
	// request.
	OpTimeout time.Duration
	// BulkTimeout replaces OpTimeout for the bulk calls, LoadItems,
	// ApplyUsageBatch and RecentlyActiveUsers (default 30s): streaming a pro
	// user's million items through the caller's fn, applying a 50,000-delta
	// batch or sorting every user by activity takes longer than a point query
	// and must not be cut at 2s. Connecting is still
	// bounded by OpTimeout, so an unreachable database fails fast.
	BulkTimeout time.Duration
	// Tracer, when set, traces every query (otelpgx).
	Tracer pgx.QueryTracer
}

// Store implements store.Store on Postgres. It is safe for concurrent use.
type Store struct {
	pool        *pgxpool.Pool
	opTimeout   time.Duration
	bulkTimeout time.Duration
}

var _ store.Store = (*Store)(nil)

// Open creates the pool. It does not wait for a connection (serving must not
// wait on the database); Warm makes the pool hot and Ping checks reachability.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The parse error can quote the URL, password included: keep it out.
		return nil, errors.New("open postgres: invalid DATABASE_URL")
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	if cfg.MinConns > 0 {
		pcfg.MinConns = cfg.MinConns
	}
	if pcfg.MinConns > pcfg.MaxConns {
		pcfg.MinConns = pcfg.MaxConns
	}
	if cfg.Tracer != nil {
		pcfg.ConnConfig.Tracer = cfg.Tracer
	}
	s := &Store{opTimeout: cfg.OpTimeout, bulkTimeout: cfg.BulkTimeout}
	if s.opTimeout <= 0 {
		s.opTimeout = DefaultOpTimeout
	}
	if s.bulkTimeout <= 0 {
		s.bulkTimeout = DefaultBulkTimeout
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 || pcfg.ConnConfig.ConnectTimeout > s.opTimeout {
		pcfg.ConnConfig.ConnectTimeout = s.opTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, wrap("open postgres", err)
	}
	s.pool = pool
	return s, nil
}

// Pool returns the underlying pool (health checks, pool metrics).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// hotStatements are prepared on every connection Warm touches, so the first
// request after start does not pay for parsing and planning them.
var hotStatements = []string{sqlPrincipal, sqlItemsHaving, sqlUsage, sqlItemsVersion}

// Warm acquires up to MinConns connections (at least one), pings each and
// prepares the hot statements on it: the system warmup step for the database.
func (s *Store) Warm(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n := int(s.pool.Config().MinConns)
	if n < 1 {
		n = 1
	}
	// Hold every connection until the end, so each Acquire gets a distinct one.
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return wrap("warm postgres: acquire", err)
		}
		conns = append(conns, c)
		if err := c.Ping(ctx); err != nil {
			return wrap("warm postgres: ping", err)
		}
		for _, q := range hotStatements {
			// Naming the statement by its SQL makes pgx use it for every
			// later query with the same text on this connection.
			if _, err := c.Conn().Prepare(ctx, q, q); err != nil {
				return wrap("warm postgres: prepare", err)
			}
		}
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	return wrap("ping postgres", s.pool.Ping(ctx))
}

// opCtx bounds a call by OpTimeout unless the caller's deadline is earlier.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return withTimeout(ctx, s.opTimeout)
}

// bulkCtx is opCtx for the bulk calls, bounded by BulkTimeout.
func (s *Store) bulkCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return withTimeout(ctx, s.bulkTimeout)
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// rollback ends tx when it was not committed; its error is irrelevant then
// (the operation's own error is what the caller needs).
func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// errNoSchema reports a search_path without an existing schema.
var errNoSchema = errors.New("no existing schema on search_path")
