package valkey

import (
	"context"
	"fmt"
	"strconv"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Outcome is the result of a quota check (the domain's type, so feature
// packages need not import this one).
type Outcome = domain.UsageOutcome

// Outcomes of CheckAndCount. The zero value is not a valid outcome.
const (
	// Allowed: the request was counted.
	Allowed = domain.UsageAllowed
	// Denied: the quota is used up; nothing was counted.
	Denied = domain.UsageDenied
	// Cold: no counter is cached for the period; nothing was counted. The
	// caller decides from Postgres and seeds the counter (SeedUsage).
	Cold = domain.UsageCold
)

// UsageResult is the answer of CheckAndCount. Used is the count after this
// request when Allowed, the current count when Denied, 0 when Cold.
type UsageResult = domain.UsageResult

// counterSlack keeps a period's counter a little past the period's reset,
// so that late syncs and clock skew never see it vanish early. Every counter
// TTL of the tree is computed here (counterTTL), from the period's reset.
const counterSlack = time.Hour

// counterTTL is the lifetime of the counter of a period that resets at reset.
func (c *Cache) counterTTL(reset time.Time) time.Duration {
	return reset.Sub(c.now()) + counterSlack
}

// CheckAndCount checks the user's counter of the period [start, reset)
// against limit and, if below, counts one request: it increments the counter
// and the pending delta of the period in one atomic step. In the same round
// trip, AFTER the count, it marks the user dirty for the usage sync (see
// SyncQueue for why after, and why a separate command). The counter gets its
// TTL (until reset, plus slack) when it has none.
func (c *Cache) CheckAndCount(ctx context.Context, userID int64, start, reset time.Time, limit int64) (UsageResult, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(start)
	keys := []string{c.keys.counter(userID, period), c.keys.Pending(userID)}
	args := []string{strconv.FormatInt(limit, 10), period, strconv.FormatInt(ttlMillis(c.counterTTL(reset)), 10)}
	vals, err := c.count(ctx, keys, args).AsIntSlice()
	if err != nil {
		return UsageResult{}, wrapErr("check and count", err)
	}
	if len(vals) < 2 || vals[0] < int64(Allowed) || vals[0] > int64(Cold) {
		return UsageResult{}, fmt.Errorf("valkey check and count: %w: %v", errUnexpected, vals)
	}
	if len(vals) == 3 && vals[2] == 1 {
		// The first pending unit since the last claim: mark the user dirty,
		// after the count, so the usage sync finds it without scanning.
		// A claim removes its users from the dirty index before it moves
		// their pending deltas, and leaves pending at 0, so every count
		// either finds a delta still waiting to be moved (its user marked or
		// about to be claimed) or starts a new one and marks. The mark
		// costs a round trip only once per user per sync; its error is not
		// reported (the count ran) and SyncQueue.Sweep repairs a lost one.
		_ = c.client.Do(ctx, c.markDirtyCmd(userID)).Error()
	}
	return UsageResult{Outcome: Outcome(vals[0]), Used: vals[1]}, nil
}

// count runs the count script by its hash, and by its source when the
// server's script cache was flushed (nothing ran then).
func (c *Cache) count(ctx context.Context, keys, args []string) valkey.ValkeyResult {
	b := c.client.B()
	res := c.client.Do(ctx, b.Evalsha().Sha1(c.scripts.checkAndCountSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	if ve, ok := valkey.IsValkeyErr(res.Error()); ok && ve.IsNoScript() {
		res = c.client.Do(ctx, b.Eval().Script(checkAndCountLua).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	}
	return res
}

// SeedUsage creates the user's counter of the period [start, reset) as
// persisted (the count in Postgres) plus the deltas not yet synced (pending,
// and in flight in a sync batch), living until reset plus slack. A counter
// that already exists wins: seeding never lowers a live count nor adds twice.
func (c *Cache) SeedUsage(ctx context.Context, userID int64, start, reset time.Time, persisted int64) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(start)
	keys := []string{c.keys.counter(userID, period), c.keys.Pending(userID), c.keys.Inflight(userID)}
	args := []string{strconv.FormatInt(persisted, 10), period, strconv.FormatInt(ttlMillis(c.counterTTL(reset)), 10)}
	if err := c.scripts.seedUsage.Exec(ctx, c.client, keys, args).Error(); err != nil {
		return wrapErr("seed usage", err)
	}
	return nil
}

// Refund gives back one request counted by CheckAndCount whose work then
// failed: the counter and the pending delta go down by one, and the user is
// marked dirty again so the sync carries the -1 to Postgres.
func (c *Cache) Refund(ctx context.Context, userID int64, periodStart time.Time) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(periodStart)
	keys := []string{c.keys.counter(userID, period), c.keys.Pending(userID)}
	if err := c.scripts.refund.Exec(ctx, c.client, keys, []string{period}).Error(); err != nil {
		return wrapErr("refund usage", err)
	}
	ctx, cancel = c.opCtx(ctx)
	defer cancel()
	if err := c.client.Do(ctx, c.markDirtyCmd(userID)).Error(); err != nil {
		return wrapErr("refund usage: mark dirty", err)
	}
	return nil
}

// Usage returns the user's cached count for the period; found is false when
// the counter is not cached.
func (c *Cache) Usage(ctx context.Context, userID int64, periodStart time.Time) (used int64, found bool, err error) {
	return c.getInt(ctx, "get usage", c.keys.Counter(userID, periodStart))
}

// getInt reads an integer key; found is false when it does not exist.
func (c *conn) getInt(ctx context.Context, op, key string) (n int64, found bool, err error) {
	n, err = c.do(ctx, c.client.B().Get().Key(key).Build()).AsInt64()
	switch {
	case errNil(err):
		return 0, false, nil
	case err != nil:
		return 0, false, wrapErr(op, err)
	}
	return n, true, nil
}

// ttlMillis converts a TTL to whole milliseconds, at least 1 (PX 0 is an
// error, and no key of this package may live forever by accident).
func ttlMillis(ttl time.Duration) int64 {
	return max(ttl.Milliseconds(), 1)
}
