package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// dateOf is the UTC calendar date of t: usage is keyed by the period's start
// date, so any instant of that UTC day addresses the same row.
func dateOf(t time.Time) pgtype.Date {
	t = t.UTC()
	return pgtype.Date{Time: time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), Valid: true}
}

const sqlUsage = `SELECT count FROM usage WHERE user_id = $1 AND period_start = $2`

// Usage returns the persisted count of the user in the period starting at
// periodStart (0 when none, also for an unknown user).
func (s *Store) Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var n int64
	err := s.pool.QueryRow(ctx, sqlUsage, userID, dateOf(periodStart)).Scan(&n)
	if err != nil {
		if err = wrap("usage", err); errors.Is(err, domain.ErrNotFound) {
			return 0, nil
		}
		return 0, err
	}
	return n, nil
}

type usageKey struct {
	user int64
	day  time.Time
}

// ApplyUsageBatch applies a batch at most once, in one statement (so one
// transaction and one round trip): record the key (a key already present
// means the batch was applied: change nothing), upsert every (user, period)
// count, then mark the touched users active. A delta for an unknown user
// fails the whole batch with domain.ErrNotFound. The call is bounded by
// Config.BulkTimeout, not OpTimeout.
func (s *Store) ApplyUsageBatch(ctx context.Context, batch domain.UsageBatch) (bool, error) {
	const op = "apply usage batch"
	if batch.Key == "" {
		return false, fmt.Errorf("%s: empty key", op)
	}
	// Sum per (user, period): one upsert statement may not touch a row twice.
	sums := make(map[usageKey]int64, len(batch.Deltas))
	var total int64
	for _, d := range batch.Deltas {
		sums[usageKey{d.UserID, dateOf(d.PeriodStart).Time}] += d.Delta
		total += d.Delta
	}
	keys := make([]usageKey, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b usageKey) int {
		return cmp.Or(cmp.Compare(a.user, b.user), a.day.Compare(b.day))
	})
	userIDs := make([]int64, 0, len(keys))
	dayCol := make([]pgtype.Date, len(keys))
	countCol := make([]int64, len(keys))
	userCol := make([]int64, len(keys))
	for i, k := range keys {
		if i == 0 || k.user != keys[i-1].user {
			userIDs = append(userIDs, k.user)
		}
		userCol[i] = k.user
		dayCol[i] = pgtype.Date{Time: k.day, Valid: true}
		countCol[i] = sums[k]
	}

	ctx, cancel := s.bulkCtx(ctx)
	defer cancel()
	// One statement, one round trip, its own transaction: record the key;
	// only if it is new, add the counts and mark the users active. A
	// concurrent transaction with the same key blocks on the key until it
	// ends; if it committed, DO NOTHING leaves k empty and the statement
	// changes nothing.
	//
	// The counts go first, in (user, period) order: the update's condition
	// reads the count of u, an init plan evaluated before the update locks
	// its first row (a one-time filter above its scan), so an overlapping
	// batch (another instance, or a re-delivered batch) that shares a usage
	// row waits on it before either has touched a user row, and the two
	// queue up instead of deadlocking. Batches that share users but no
	// period meet only in the update, which takes the rows in its scan's
	// order, the same for both; should they deadlock all the same, Postgres
	// aborts one and its batch is retried under its key. greatest() keeps
	// activity monotonic when an older transaction commits late;
	// last_active_at has no index (migration 00003), so the update is a HOT
	// update where the page has room.
	//
	// A delta for an unknown (or deleted) user fails the foreign key, and
	// with it the whole statement; so every user of a batch that applied
	// exists and is marked (the foreign-key check locks each referenced user
	// row against deletion until the statement ends).
	var recorded int64
	err := s.pool.QueryRow(ctx, `
		WITH k AS (
			INSERT INTO usage_batches (key, users, total) VALUES ($1, $2, $3)
			ON CONFLICT (key) DO NOTHING
			RETURNING 1
		), u AS (
			INSERT INTO usage (user_id, period_start, count)
			SELECT t.* FROM unnest($4::bigint[], $5::date[], $6::bigint[]) t
			WHERE EXISTS (SELECT FROM k)
			ON CONFLICT (user_id, period_start) DO UPDATE SET count = usage.count + excluded.count
			RETURNING 1
		), a AS (
			UPDATE users SET last_active_at = greatest(last_active_at, now())
			WHERE id = ANY($7::bigint[]) AND (SELECT count(*) FROM u) > 0
		)
		SELECT count(*) FROM k`,
		batch.Key, len(userIDs), total, userCol, dayCol, countCol, userIDs).Scan(&recorded)
	if err != nil {
		if pgCode(err) == codeForeignKeyViolation {
			return false, fmt.Errorf("%s: a delta for an unknown user: %w", op, domain.ErrNotFound)
		}
		return false, wrap(op, err)
	}
	if recorded == 0 {
		return false, nil
	}
	return true, nil
}

// RecentlyActiveUsers returns up to limit user ids, most recently active
// first; never-active users last, newest first. It sorts the whole table
// (top-N; no index keeps the order, see migration 00003), so it is bounded by
// BulkTimeout like the other calls that read much.
func (s *Store) RecentlyActiveUsers(ctx context.Context, limit int) ([]int64, error) {
	if limit <= 0 {
		return []int64{}, nil
	}
	ctx, cancel := s.bulkCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx,
		`SELECT id FROM users ORDER BY last_active_at DESC NULLS LAST, id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, wrap("recently active users", err)
	}
	ids := make([]int64, 0, min(limit, 1024))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, wrap("recently active users", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("recently active users", err)
	}
	return ids, nil
}
