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

// CheckAndCount checks the user's counter of the period starting at
// periodStart against limit and, if below, counts one request: it increments
// the counter and the pending delta of the period in one atomic step (one
// round trip). ttl is applied to the counter when it has none.
func (c *Cache) CheckAndCount(ctx context.Context, userID int64, periodStart time.Time, limit int64, ttl time.Duration) (UsageResult, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(periodStart)
	keys := []string{c.Key(userID, "use", period), c.Key(userID, "pending")}
	args := []string{strconv.FormatInt(limit, 10), period, strconv.FormatInt(ttlMillis(ttl), 10)}
	vals, err := c.countResult(ctx, userID, keys, args).AsIntSlice()
	if err != nil {
		return UsageResult{}, wrapErr("check and count", err)
	}
	if len(vals) != 2 || vals[0] < int64(Allowed) || vals[0] > int64(Cold) {
		return UsageResult{}, fmt.Errorf("valkey check and count: %w: %v", errUnexpected, vals)
	}
	return UsageResult{Outcome: Outcome(vals[0]), Used: vals[1]}, nil
}

// countResult runs the count script, pipelined with the AfterCount command
// when there is one (same round trip, sent after the script).
func (c *Cache) countResult(ctx context.Context, userID int64, keys, args []string) valkey.ValkeyResult {
	if c.afterCount == nil {
		return c.scripts.checkAndCount.Exec(ctx, c.client, keys, args)
	}
	b := c.client.B()
	res := c.client.DoMulti(ctx,
		b.Evalsha().Sha1(c.scripts.checkAndCountSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
		c.afterCount(c.client, userID))
	if ve, ok := valkey.IsValkeyErr(res[0].Error()); ok && ve.IsNoScript() {
		// The script cache was flushed (or never loaded): nothing ran, so
		// send the source. The follow-up runs twice, which it must tolerate.
		res = c.client.DoMulti(ctx,
			b.Eval().Script(checkAndCountLua).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
			c.afterCount(c.client, userID))
	}
	// res[1] (the follow-up) is deliberately not checked: when the count ran,
	// reporting an error would make the caller treat a counted request as
	// failed; valkeysync's Sweep repairs a missing dirty mark.
	return res[0]
}

// SeedUsage creates the user's counter of the period as persisted (the count
// in Postgres) plus the deltas not yet synced (pending, and in flight in a
// sync batch), with ttl. A counter that already exists wins: seeding never
// lowers a live count nor adds twice.
func (c *Cache) SeedUsage(ctx context.Context, userID int64, periodStart time.Time, persisted int64, ttl time.Duration) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(periodStart)
	keys := []string{c.Key(userID, "use", period), c.Key(userID, "pending"), c.Key(userID, "inflight")}
	args := []string{strconv.FormatInt(persisted, 10), period, strconv.FormatInt(ttlMillis(ttl), 10)}
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
	keys := []string{c.Key(userID, "use", period), c.Key(userID, "pending")}
	if err := c.scripts.refund.Exec(ctx, c.client, keys, []string{period}).Error(); err != nil {
		return wrapErr("refund usage", err)
	}
	if c.afterCount != nil {
		if err := c.client.Do(ctx, c.afterCount(c.client, userID)).Error(); err != nil {
			return wrapErr("refund usage: mark dirty", err)
		}
	}
	return nil
}

// Usage returns the user's cached count for the period; found is false when
// the counter is not cached.
func (c *Cache) Usage(ctx context.Context, userID int64, periodStart time.Time) (used int64, found bool, err error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	key := c.Key(userID, "use", PeriodField(periodStart))
	used, err = c.client.Do(ctx, c.client.B().Get().Key(key).Build()).AsInt64()
	switch {
	case errNil(err):
		return 0, false, nil
	case err != nil:
		return 0, false, wrapErr("get usage", err)
	}
	return used, true, nil
}

// ttlMillis converts a TTL to whole milliseconds, at least 1 (PX 0 is an
// error, and no key of this package may live forever by accident).
func ttlMillis(ttl time.Duration) int64 {
	return max(ttl.Milliseconds(), 1)
}
