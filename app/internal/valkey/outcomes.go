package valkey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// # Unknown outcomes
//
// A count whose reply never came (a timeout, a connection lost after the
// script was sent) may or may not have been applied. The caller still has
// to decide: serve it and count it in process (fail-open), or refuse it
// (fail-closed). Either way the unit would be doubled or lost once Valkey
// answers again, unless it is settled then. Settling is exact and costs no
// per-request record in Valkey:
//
//   - Every count carries a fence, a server-clock deadline past which the
//     script is a no-op. Once the server's TIME passes the fence of every
//     count of an epoch, no count of it can still be applied.
//   - Every count carries its sender's applied field, "<instance>:<epoch>",
//     and the script increments it in the same atomic step as the count
//     (Keys.Applied). Locally the sender keeps, per user and epoch, how many
//     replies said "counted" (acked) and how many outcomes are unknown.
//   - An epoch closes at its first unknown outcome (the user's next count
//     opens a new one), so that once its counts have all replied or failed
//     and the fence has passed, applied − acked is exactly how many of its
//     unknown counts were applied.
//
// The caller reports, per unknown count, whether it served it (Settle). The
// settlement of an epoch is then a correction of the system of record of
// served − applied units (positive: served units Valkey never counted;
// negative: counted units the caller refused), which the caller persists
// next to its in-process counts. Counts with an idempotency key are not
// tracked: their key record settles them.

// outcomes tracks this instance's counts per user (see Unknown outcomes).
type outcomes struct {
	instance string
	epochs   atomic.Uint64
	open     atomic.Int64 // epochs with unknown outcomes not yet settled
	// offset is the server clock minus the local clock in ms, last measured.
	offset atomic.Int64
	shards [64]outcomeShard

	// unmarked are users with a count of unknown outcome (keyed or not):
	// if it applied and started the user's pending delta, its dirty mark
	// was never sent (it follows a reply). Reconcile marks them.
	markMu   sync.Mutex
	unmarked map[int64]struct{}
}

type outcomeShard struct {
	mu    sync.Mutex
	users map[int64]*userOutcomes
}

type userOutcomes struct {
	cur      *epoch
	closed   []*epoch // with unknown outcomes, waiting to be settled
	lastUsed int64    // unix ms
}

type epoch struct {
	field    string // applied field "<instance>:<epoch>"
	start    time.Time
	period   string
	inflight int   // sent, not yet answered or failed
	acked    int64 // answered "counted"
	unknown  int64
	served   int64 // unknown outcomes the caller served
	unset    int   // unknown outcomes the caller has not settled yet
	fence    int64 // highest fence of its counts, server unix ms
}

func newOutcomes() *outcomes {
	var b [6]byte
	_, _ = rand.Read(b[:])
	o := &outcomes{instance: hex.EncodeToString(b[:]), unmarked: map[int64]struct{}{}}
	for i := range o.shards {
		o.shards[i].users = map[int64]*userOutcomes{}
	}
	return o
}

func (o *outcomes) shard(userID int64) *outcomeShard {
	return &o.shards[uint64(userID)%uint64(len(o.shards))]
}

// fence is the server-clock deadline of a count sent now with timeout.
// Its margin covers the error of the clock offset's measurement; a later
// fence only delays a settlement, it never makes one wrong.
func (o *outcomes) fence(timeout time.Duration) int64 {
	return time.Now().UnixMilli() + o.offset.Load() + 2*timeout.Milliseconds() + 100
}

// begin registers a count of userID in period about to be sent.
func (o *outcomes) begin(userID int64, start time.Time, period string, fence int64) *epoch {
	sh := o.shard(userID)
	sh.mu.Lock()
	u := sh.users[userID]
	if u == nil {
		u = &userOutcomes{}
		sh.users[userID] = u
	}
	ep := u.cur
	if ep == nil || ep.period != period {
		ep = &epoch{field: o.instance + ":" + strconv.FormatUint(o.epochs.Add(1), 10), start: start, period: period}
		u.cur = ep
	}
	ep.inflight++
	ep.fence = max(ep.fence, fence)
	u.lastUsed = time.Now().UnixMilli()
	sh.mu.Unlock()
	return ep
}

// end records how a count of begin ended: counted, not counted (any other
// reply), or unknown. An unknown outcome closes the epoch and returns the
// handle the caller settles.
func (o *outcomes) end(userID int64, ep *epoch, counted, unknown bool) *Unknown {
	sh := o.shard(userID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ep.inflight--
	switch {
	case counted:
		ep.acked++
	case unknown:
		ep.unknown++
		ep.unset++
		if u := sh.users[userID]; u != nil {
			if u.cur == ep {
				u.cur = nil
			}
			if ep.unknown == 1 {
				u.closed = append(u.closed, ep)
				o.open.Add(1)
			}
		}
		return &Unknown{o: o, userID: userID, ep: ep}
	}
	return nil
}

// Unknown is a count whose outcome is unknown (see Unknown outcomes). It
// travels with the error of Cache.Count; the caller MUST call Settle once.
type Unknown struct {
	o      *outcomes
	userID int64
	ep     *epoch
	once   sync.Once
}

// Settle says whether the caller served the request (and counts it in
// process) or refused it.
func (u *Unknown) Settle(served bool) {
	u.once.Do(func() {
		sh := u.o.shard(u.userID)
		sh.mu.Lock()
		u.ep.unset--
		if served {
			u.ep.served++
		}
		sh.mu.Unlock()
	})
}

// Settlement is the result of Cache.Reconcile.
type Settlement = domain.Settlement

// pendingSettle is an epoch ready to be settled, with its user.
type pendingSettle struct {
	userID int64
	ep     *epoch
}

// ready returns the closed epochs whose counts have all ended and been
// settled by the caller and whose fence the server clock has passed.
func (o *outcomes) ready(serverNow int64) []pendingSettle {
	var out []pendingSettle
	o.each(func(_ map[int64]*userOutcomes, id int64, u *userOutcomes) {
		for _, ep := range u.closed {
			if ep.inflight == 0 && ep.unset == 0 && ep.fence < serverNow {
				out = append(out, pendingSettle{id, ep})
			}
		}
	})
	return out
}

// each calls f for every tracked user, under its shard's lock (f may delete
// the user from users).
func (o *outcomes) each(f func(users map[int64]*userOutcomes, id int64, u *userOutcomes)) {
	for i := range o.shards {
		sh := &o.shards[i]
		sh.mu.Lock()
		for id, u := range sh.users {
			f(sh.users, id, u)
		}
		sh.mu.Unlock()
	}
}

// done forgets settled epochs.
func (o *outcomes) done(settled []pendingSettle) {
	for _, s := range settled {
		sh := o.shard(s.userID)
		sh.mu.Lock()
		if u := sh.users[s.userID]; u != nil {
			for i, ep := range u.closed {
				if ep == s.ep {
					u.closed = append(u.closed[:i], u.closed[i+1:]...)
					o.open.Add(-1)
					break
				}
			}
		}
		sh.mu.Unlock()
	}
}

// prune forgets users idle since before idleBefore with nothing to settle
// and returns the applied fields they leave in Valkey.
func (o *outcomes) prune(idleBefore int64) []pendingSettle {
	var out []pendingSettle
	o.each(func(users map[int64]*userOutcomes, id int64, u *userOutcomes) {
		if len(u.closed) > 0 || u.lastUsed >= idleBefore || (u.cur != nil && u.cur.inflight > 0) {
			return
		}
		if u.cur != nil && u.cur.acked > 0 {
			out = append(out, pendingSettle{id, u.cur})
		}
		delete(users, id)
	})
	return out
}

// toMark remembers a user whose dirty mark may be missing.
func (o *outcomes) toMark(userID int64) {
	o.markMu.Lock()
	o.unmarked[userID] = struct{}{}
	o.markMu.Unlock()
}

// markAll marks the remembered users dirty (a mark of a user with nothing
// pending is harmless: its claim finds nothing).
func (c *Cache) markAll(ctx context.Context) error {
	o := c.outcomes
	o.markMu.Lock()
	if len(o.unmarked) == 0 {
		o.markMu.Unlock()
		return nil
	}
	users := make([]int64, 0, len(o.unmarked))
	for id := range o.unmarked {
		users = append(users, id)
	}
	clear(o.unmarked)
	o.markMu.Unlock()
	cmds := make(valkey.Commands, len(users))
	for i, id := range users {
		cmds[i] = c.markDirtyCmd(id)
	}
	var failed error
	for i, r := range c.doMulti(ctx, cmds) {
		if err := r.Error(); err != nil {
			o.toMark(users[i])
			failed = wrapErr("mark users of unknown counts dirty", err)
		}
	}
	return failed
}

// Unsettled reports how many epochs with unknown outcomes wait to be
// settled, plus the users whose dirty mark is still to be sent.
func (c *Cache) Unsettled() int64 {
	c.outcomes.markMu.Lock()
	n := int64(len(c.outcomes.unmarked))
	c.outcomes.markMu.Unlock()
	return c.outcomes.open.Load() + n
}

// Reconcile settles the unknown outcomes that can be settled now (see
// Unknown outcomes) and forgets users idle for long. It is cheap when there
// is nothing to settle; call it periodically, and once more before the last
// in-process counts are persisted at shutdown.
func (c *Cache) Reconcile(ctx context.Context) (Settlement, error) {
	var st Settlement
	if err := c.markAll(ctx); err != nil {
		return st, err
	}
	if c.outcomes.open.Load() > 0 {
		now, err := c.serverTime(ctx)
		if err != nil {
			return st, err
		}
		ready := c.outcomes.ready(now)
		if len(ready) > 0 {
			if st, err = c.settle(ctx, ready); err != nil {
				return st, err
			}
		}
	}
	idle := time.Now().Add(-c.settleIdle()).UnixMilli()
	if stale := c.outcomes.prune(idle); len(stale) > 0 {
		c.forget(ctx, stale)
	}
	return st, nil
}

// Abandon gives up settling: every count of unknown outcome is taken as not
// applied, so its served units are corrections for the system of record
// (they may double what Valkey applied; it is what remains when Valkey
// cannot tell before shutdown). It is the shutdown's last resort.
func (c *Cache) Abandon() Settlement {
	var st Settlement
	var all []pendingSettle
	c.outcomes.each(func(_ map[int64]*userOutcomes, id int64, u *userOutcomes) {
		for _, ep := range u.closed {
			all = append(all, pendingSettle{id, ep})
			st.NotApplied += ep.unknown
			if ep.served != 0 {
				st.Corrections = append(st.Corrections, domain.UsageDelta{UserID: id, PeriodStart: ep.start, Delta: ep.served})
			}
		}
	})
	c.outcomes.done(all)
	return st
}

// settleIdle is how long a user's tracking outlives its last count: past
// every fence of its counts.
func (c *Cache) settleIdle() time.Duration { return 4*c.opTimeout + 10*time.Second }

func (c *Cache) settle(ctx context.Context, ready []pendingSettle) (Settlement, error) {
	cmds := make(valkey.Commands, len(ready))
	for i, r := range ready {
		cmds[i] = c.client.B().Hget().Key(c.keys.Applied(r.userID)).Field(r.ep.field).Build()
	}
	var st Settlement
	res := c.doMulti(ctx, cmds)
	var settled []pendingSettle
	for i, r := range res {
		applied, err := r.AsInt64()
		if errNil(err) {
			applied, err = 0, nil
		}
		if err != nil {
			continue // settled on a later call
		}
		ep := ready[i].ep
		// applied − acked is how many unknown counts were applied, unless
		// Valkey lost the field (restart without persistence): then it is
		// unknowable and taken as none (the served units are kept).
		got := min(max(applied-ep.acked, 0), ep.unknown)
		st.Applied += got
		st.NotApplied += ep.unknown - got
		if d := ep.served - got; d != 0 {
			st.Corrections = append(st.Corrections, domain.UsageDelta{UserID: ready[i].userID, PeriodStart: ep.start, Delta: d})
		}
		settled = append(settled, ready[i])
	}
	c.outcomes.done(settled)
	c.forget(ctx, settled)
	return st, nil
}

// forget deletes settled or abandoned applied fields (best effort: the
// hash's TTL removes what is left).
func (c *Cache) forget(ctx context.Context, eps []pendingSettle) {
	cmds := make(valkey.Commands, len(eps))
	for i, e := range eps {
		cmds[i] = c.client.B().Hdel().Key(c.keys.Applied(e.userID)).Field(e.ep.field).Build()
	}
	_ = c.doMulti(ctx, cmds)
}

// serverTime reads the server's clock (unix ms) and refreshes the offset
// fences are computed with.
func (c *Cache) serverTime(ctx context.Context) (int64, error) {
	before := time.Now()
	vals, err := c.do(ctx, c.client.B().Time().Build()).AsStrSlice()
	if err != nil {
		return 0, wrapErr("time", err)
	}
	if len(vals) != 2 {
		return 0, wrapErr("time", errUnexpected)
	}
	sec, err1 := strconv.ParseInt(vals[0], 10, 64)
	usec, err2 := strconv.ParseInt(vals[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, wrapErr("time", errUnexpected)
	}
	now := sec*1000 + usec/1000
	mid := before.Add(time.Since(before) / 2).UnixMilli()
	c.outcomes.offset.Store(now - mid)
	return now, nil
}
