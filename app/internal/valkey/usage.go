package valkey

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// CountRequest is one metered request's count (Cache.Count).
type CountRequest = domain.CountRequest

// CheckAndCount is Count without an idempotency key.
func (c *Cache) CheckAndCount(ctx context.Context, userID int64, start, reset time.Time, limit int64) (UsageResult, error) {
	return c.Count(ctx, CountRequest{UserID: userID, Start: start, Reset: reset, Limit: limit})
}

// Count checks the user's counter of the period [Start, Reset) against the
// limit and, if below, counts one request: it increments the counter and the
// pending delta of the period in one atomic step, with the idempotency
// key's record when there is one. When the count starts the period's
// pending delta, the user is marked dirty for the usage sync right after
// (see SyncQueue for why after, and why a separate command). The counter
// gets its TTL (until reset, plus slack) when it has none.
//
// An error whose outcome is unknown (the script may have run) carries a
// Settle(served bool) method (errors.As) that the caller MUST call once;
// see Reconcile.
func (c *Cache) Count(ctx context.Context, r CountRequest) (UsageResult, error) {
	res, err := c.countWith(ctx, r, nil)
	return res.UsageResult, err
}

// CountHasNot is Count that, when the count is Allowed, also answers the
// has-not lookup of items against the user's cached item set in the same
// script, so a warm metered query costs one round trip (both keys carry the
// user's hash tag: one slot). The answer is HasNot's (input order, each item
// once) with the server's own time for the count and the lookup; it is not
// Warm when the count was not Allowed (the set is never read then) or the
// set is not cached: the caller asks the usual way. Fences, applied fields,
// idempotency records and the dirty mark are Count's, unchanged.
func (c *Cache) CountHasNot(ctx context.Context, r CountRequest, items []string) (UsageResult, domain.CachedHasNot, error) {
	res, err := c.countWith(ctx, r, items)
	return res.UsageResult, res.hasNot, err
}

func (c *Cache) countWith(ctx context.Context, r CountRequest, items []string) (countReply, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(r.Start)
	fence := c.outcomes.fence(c.opTimeout)
	applied := c.keys.Applied(r.UserID)
	// Arrays, sliced: without items nothing here escapes to the heap.
	ks := [6]string{c.keys.counter(r.UserID, period), c.keys.Pending(r.UserID), applied, applied}
	keys := ks[:4]
	var ep *epoch
	field := ""
	if r.Idem.Key != "" {
		keys[3] = c.keys.Idem(r.UserID, r.Idem.Key)
	} else {
		ep = c.outcomes.begin(r.UserID, r.Start, period, fence)
		field = ep.field
	}
	idemTTL, idemLease := "0", "0" // unused without a key: no formatting on the hot path
	if r.Idem.Key != "" {
		idemTTL, idemLease = strconv.FormatInt(ttlMillis(r.IdemTTL), 10), strconv.FormatInt(ttlMillis(r.IdemLease), 10)
	}
	as := [...]string{
		strconv.FormatInt(r.Limit, 10), period, strconv.FormatInt(ttlMillis(c.counterTTL(r.Reset)), 10),
		strconv.FormatInt(fence, 10), field, r.Idem.Fingerprint, idemTTL, idemLease,
	}
	args := as[:]
	if len(items) > 0 {
		ks[4], ks[5] = c.keys.Items(r.UserID), c.keys.ItemsVersion(r.UserID)
		keys = ks[:6]
		args = append(make([]string, 0, len(as)+len(items)), as[:]...)
		args = append(args, items...)
	}
	res, err := parseCount(c.count(ctx, keys, args), items)
	if err != nil && outcomeUnknown(err) {
		c.outcomes.toMark(r.UserID)
	}
	if ep != nil {
		unknown := err != nil && outcomeUnknown(err)
		if u := c.outcomes.end(r.UserID, ep, err == nil && res.Outcome == Allowed, unknown); u != nil {
			return countReply{}, &unknownErr{err: wrapErr("count", err), u: u}
		}
	}
	if err != nil {
		return countReply{}, wrapErr("count", err)
	}
	if res.first {
		// The first pending unit since the last claim: mark the user dirty,
		// after the count, so the usage sync finds it without scanning.
		// A claim removes its users from the dirty index before it moves
		// their pending deltas, and leaves pending at 0, so every count
		// either finds a delta still waiting to be moved (its user marked or
		// about to be claimed) or starts a new one and marks. The mark
		// costs a round trip only once per user per sync; its error is not
		// reported (the count ran) and SyncQueue.Sweep repairs a lost one.
		_ = c.client.Do(ctx, c.markDirtyCmd(r.UserID)).Error()
	}
	return res, nil
}

// errFenced: the count reached the server after its fence and did nothing.
var errFenced = errors.New("count reached the server after its deadline; nothing was counted")

type countReply struct {
	UsageResult
	first  bool
	hasNot domain.CachedHasNot
}

// parseCount decodes the reply of countLua or idemBeginLua; items are the
// has-not lookup's items sent with the count (nil for none).
func parseCount(r valkey.ValkeyResult, items []string) (countReply, error) {
	msgs, err := r.ToArray()
	if err != nil {
		return countReply{}, err
	}
	if len(msgs) < 2 {
		return countReply{}, errUnexpected
	}
	code, err1 := msgs[0].AsInt64()
	n, err2 := msgs[1].AsInt64()
	if err1 != nil || err2 != nil {
		return countReply{}, errUnexpected
	}
	var out countReply
	switch code {
	case 1, 2, 3:
		out.Outcome, out.Used = Outcome(code), n
		if len(msgs) >= 3 {
			first, err := msgs[2].AsInt64()
			if err != nil {
				return countReply{}, errUnexpected
			}
			out.first = first == 1
		}
		if code == 1 && len(items) > 0 {
			// The count is done: a has-not part that does not decode is no
			// answer (the caller asks the usual way), never an error.
			out.hasNot, _ = parseCountHasNot(msgs[min(3, len(msgs)):], items)
		}
	case 4:
		return countReply{}, fmt.Errorf("%w: %w", domain.ErrUnavailable, errFenced)
	case 5:
		out.Outcome = domain.UsageReused
	case 6:
		if len(msgs) != 4 {
			return countReply{}, errUnexpected
		}
		st, err1 := msgs[2].AsInt64()
		body, err2 := msgs[3].ToString()
		if err1 != nil || err2 != nil {
			return countReply{}, errUnexpected
		}
		out.Outcome, out.Used, out.Answer = domain.UsageReplay, n, domain.StoredAnswer{Status: int(st), Body: body}
	case 7:
		out.Outcome, out.RetryAfter = domain.UsageInUse, time.Duration(n)*time.Millisecond
	case 8:
		out.Outcome, out.Used = domain.UsageNotCounted, n
	default:
		return countReply{}, fmt.Errorf("%w: outcome %d", errUnexpected, code)
	}
	return out, nil
}

// parseCountHasNot decodes the has-not part of an allowed count's reply:
// {lookup µs[, 1, i...]}.
func parseCountHasNot(msgs []valkey.ValkeyMessage, items []string) (domain.CachedHasNot, error) {
	if len(msgs) < 1 {
		return domain.CachedHasNot{}, errUnexpected
	}
	lookupUS, err := msgs[0].AsInt64()
	if err != nil {
		return domain.CachedHasNot{}, errUnexpected
	}
	out := domain.CachedHasNot{QueryTime: time.Duration(lookupUS) * time.Microsecond}
	if len(msgs) == 1 {
		return out, nil // the set is not cached
	}
	idx := make([]int64, len(msgs)-2)
	for i, m := range msgs[2:] {
		v, err := m.AsInt64()
		if err != nil {
			return domain.CachedHasNot{}, errUnexpected
		}
		idx[i] = v
	}
	missing, err := missingAt(items, idx)
	if err != nil {
		return domain.CachedHasNot{}, err
	}
	out.Warm, out.Missing = true, missing
	return out, nil
}

// outcomeUnknown reports whether a failed count may have been applied: any
// failure but a refusal before sending (open breaker, no connection could
// be dialled, a closed client), a fenced no-op, or a server error reply (the
// script did not run, or failed before its first write).
func outcomeUnknown(err error) bool {
	if errors.Is(err, ErrBreakerOpen) || errors.Is(err, errFenced) || errors.Is(err, errUnexpected) || errors.Is(err, valkey.ErrClosing) {
		return false
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return false
	}
	if _, ok := valkey.IsValkeyErr(err); ok {
		return false
	}
	return true
}

// unknownErr is a count error whose outcome is unknown.
type unknownErr struct {
	err error
	u   *Unknown
}

func (e *unknownErr) Error() string { return e.err.Error() + " (outcome unknown)" }
func (e *unknownErr) Unwrap() error { return e.err }

// Settle settles the unknown count (see Unknown.Settle).
func (e *unknownErr) Settle(served bool) { e.u.Settle(served) }

// IdemBegin takes an idempotency key for a request that is not metered:
// Allowed when the key is new (it is held now), else the key's outcome
// (UsageReplay, UsageInUse, UsageReused; UsageNotCounted when the first
// attempt's answer was lost: answer afresh).
func (c *Cache) IdemBegin(ctx context.Context, userID int64, k domain.IdemKey, ttl, lease time.Duration) (UsageResult, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	keys := []string{c.keys.Idem(userID, k.Key)}
	args := []string{k.Fingerprint, strconv.FormatInt(ttlMillis(ttl), 10), strconv.FormatInt(ttlMillis(lease), 10)}
	res := c.scripts.idemBegin.Exec(ctx, c.client, keys, args)
	if v, err := res.ToArray(); err == nil && len(v) == 1 {
		return UsageResult{Outcome: Allowed}, nil
	}
	out, err := parseCount(res, nil)
	if err != nil {
		return UsageResult{}, wrapErr("idempotency begin", err)
	}
	return out.UsageResult, nil
}

// IdemStore stores the first answer of a key's request.
func (c *Cache) IdemStore(ctx context.Context, userID int64, k domain.IdemKey, a domain.StoredAnswer) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	keys := []string{c.keys.Idem(userID, k.Key)}
	if err := c.scripts.idemStore.Exec(ctx, c.client, keys, []string{k.Fingerprint, strconv.Itoa(a.Status), a.Body}).Error(); err != nil {
		return wrapErr("idempotency store", err)
	}
	return nil
}

// IdemForget forgets a key whose request failed, so a retry runs afresh.
func (c *Cache) IdemForget(ctx context.Context, userID int64, k domain.IdemKey) error {
	if err := c.do(ctx, c.client.B().Del().Key(c.keys.Idem(userID, k.Key)).Build()).Error(); err != nil {
		return wrapErr("idempotency forget", err)
	}
	return nil
}

// count runs the count script by its hash, and by its source when the
// server's script cache was flushed (nothing ran then).
func (c *Cache) count(ctx context.Context, keys, args []string) valkey.ValkeyResult {
	b := c.client.B()
	res := c.client.Do(ctx, b.Evalsha().Sha1(c.scripts.count.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	if noScript(res.Error()) {
		res = c.client.Do(ctx, b.Eval().Script(c.scripts.count.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
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
	return c.RefundIdem(ctx, userID, periodStart, domain.IdemKey{})
}

// RefundIdem is Refund of a count made with an idempotency key: the key's
// record goes too, so a retry with it is counted afresh.
func (c *Cache) RefundIdem(ctx context.Context, userID int64, periodStart time.Time, k domain.IdemKey) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	period := PeriodField(periodStart)
	keys := []string{c.keys.counter(userID, period), c.keys.Pending(userID)}
	if k.Key != "" {
		keys = append(keys, c.keys.Idem(userID, k.Key))
	}
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
