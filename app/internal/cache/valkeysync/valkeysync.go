// Package valkeysync is the Valkey side of the write-behind usage sync: the
// dirty index the usage path marks, and the claim → apply → acknowledge queue
// (cachesync.Pending) the sync loop drains into Postgres.
//
// # Keys
//
// Per-user keys share cache/valkey's hash tag {u:<id>}; the sync's own keys
// share the tag {sync}, so every Lua script touches one slot only and the
// scheme works unchanged on Valkey Cluster.
//
//	<prefix>:{u:<id>}:pending     hash period (YYYYMMDD) → delta not yet claimed (written by cache/valkey)
//	<prefix>:{u:<id>}:inflight    hash "<batch>|<period>" → delta claimed by that batch, not yet acknowledged
//	<prefix>:{sync}:dirty         sorted set: user id, score = unix ms when it first became dirty
//	<prefix>:{sync}:batch:<batch> hash: owner, state (claiming|sealed), claimedAt, users, deltas
//	<prefix>:{sync}:batches       sorted set: batch id, score = lease deadline (unix ms)
//	<prefix>:{sync}:batchinfo     hash batch id → "<users>,<oldest dirty ms>" (for stats)
//
// # Marking users dirty
//
// The usage path sends MarkDirtyCmd in the same pipeline as its count script,
// AFTER it. Claim removes users from the index (atomically with writing the
// batch record that names them) BEFORE it moves their pending deltas, so:
// a count that lands before the removal is in pending when the claim reads
// it; a count that lands after it is followed by its own mark, which puts the
// user back. Marking before the count would rely on the server running the
// two pipelined commands back to back (Redis does for a pipeline read in one
// go, but nothing promises it); otherwise a claim between them (mark no-op,
// removal, count) leaves a delta in pending with its user unmarked.
// Marking unconditionally (even for a denied request) is harmless: a user
// with nothing pending is claimed empty and dropped.
//
// The mark and the count are separate commands on different slots. On a
// standalone server a pipeline runs in order on one connection; if the
// client dies between the two, or on Valkey Cluster (where the two go to
// different nodes) a delta may exist without its mark. Sweep, run rarely, is
// the safety net: it SCANs for non-empty pending hashes and marks them, and
// for in-flight entries of batches that no longer exist and reverts them.
//
// # Batches
//
// Claim: (1) one script on {sync} takes up to N oldest users out of the
// dirty index and writes the batch record (state claiming, owner, lease,
// the users with their dirty scores); (2) per user, pipelined, a script moves
// pending into in-flight entries "<batch>|<period>"; (3) one script seals the
// batch: stores its deltas in the record, only if the caller still owns it.
// A sealed batch is the only kind ever applied, and a taker applies exactly
// its stored deltas under its key. A batch taken over before it was sealed
// was never applied: the taker moves its in-flight entries back to pending
// and re-marks its users. Ack deletes the in-flight entries, then the record.
// Crash points: before (1) nothing happened; between (1) and (3) the record
// exists unsealed → reverted after the lease; after (3) the record holds the
// deltas → applied (once, by key) after the lease; during ack the record is
// still there → re-applied as a no-op and acknowledged.
//
// # Seeding
//
// A cold counter must be seeded with persisted + pending + in-flight deltas
// of the period (Queue.SeedUsage, SeedUsageLua). Bound: a batch applied to
// Postgres but not yet acknowledged is counted twice by a seed in that
// window (over by at most that user's batch delta; the quota errs strict),
// and a batch applied AND acknowledged between the seeder's Postgres read and
// its seed script is missed (under by that delta). Both windows are a few
// milliseconds of one sync batch, affect only the quota counter's starting
// value, and never the counts in Postgres.
package valkeysync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	cachevalkey "github.com/warmpath/warmpath/app/internal/cache/valkey"
	"github.com/warmpath/warmpath/app/internal/cachesync"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// Defaults for zero Config fields.
const (
	DefaultPrefix    = "wp"
	DefaultLease     = 5 * time.Second
	DefaultOpTimeout = 5 * time.Second
)

// Config configures a Queue.
type Config struct {
	// Prefix starts every key; it MUST equal cache/valkey's prefix.
	Prefix string
	// Lease is how long a batch stays its owner's without a renewal; use
	// cachesync.DefaultLease(SYNC_INTERVAL). Default DefaultLease.
	Lease time.Duration
	// OpTimeout is the deadline put on calls whose context has none.
	OpTimeout time.Duration
	// Now defaults to time.Now. Instances compare lease deadlines made by
	// each other's clocks: skew must stay well below Lease.
	Now func() time.Time
}

// Queue is the Valkey-backed cachesync.Pending. It is safe for concurrent
// use, by any number of processes.
type Queue struct {
	client    valkey.Client
	prefix    string
	lease     time.Duration
	opTimeout time.Duration
	now       func() time.Time
	scripts   scripts

	dirty, batches, batchinfo string
}

var _ cachesync.Pending = (*Queue)(nil)

// New returns a Queue on client. It does not own the client.
func New(client valkey.Client, cfg Config) *Queue {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Queue{
		client:    client,
		prefix:    cfg.Prefix,
		lease:     cfg.Lease,
		opTimeout: cfg.OpTimeout,
		now:       cfg.Now,
		scripts:   newScripts(),
		dirty:     DirtyKey(cfg.Prefix),
		batches:   cfg.Prefix + ":{sync}:batches",
		batchinfo: cfg.Prefix + ":{sync}:batchinfo",
	}
}

// DirtyKey is the key of the dirty index for prefix.
func DirtyKey(prefix string) string { return prefix + ":{sync}:dirty" }

// MarkDirtyCmd builds the command that marks userID as having pending usage
// (ZADD <prefix>:{sync}:dirty NX <now ms> <id>; NX keeps the first-dirty time
// for the lag gauge). Pipeline it right AFTER the count script, in the same
// DoMulti (see the package comment for why after).
func MarkDirtyCmd(client valkey.Client, prefix string, userID int64, now time.Time) valkey.Completed {
	return client.B().Zadd().Key(DirtyKey(prefix)).Nx().ScoreMember().
		ScoreMember(float64(now.UnixMilli()), strconv.FormatInt(userID, 10)).Build()
}

// userKey builds <prefix>:{u:<id>}:<part>, as cache/valkey's Cache.Key does.
func (q *Queue) userKey(userID int64, part string) string {
	return q.prefix + ":{u:" + strconv.FormatInt(userID, 10) + "}:" + part
}

func (q *Queue) recordKey(id string) string { return q.prefix + ":{sync}:batch:" + id }

// member is a user taken from the dirty index with its first-dirty score.
type member struct {
	id    int64
	score string
}

// claimChunk is how many users' claim scripts go in one pipeline. Valkey
// runs one connection's pipelined commands back to back (about a read
// buffer's worth, ~100 scripts, before it serves anyone else), so a big
// claim pipeline makes every request's command wait behind it: small
// pipelines bound that wait to a few scripts (tens of µs) at the cost of
// more round trips for the sync, which is not latency-sensitive.
const claimChunk = 16

// Claim takes up to limit dirty users into a new sealed batch owned by owner.
func (q *Queue) Claim(ctx context.Context, owner string, limit int) (cachesync.Batch, error) {
	if err := ctx.Err(); err != nil {
		return cachesync.Batch{}, fmt.Errorf("valkey claim: %w", err)
	}
	// Once begun, a claim runs to its end (bounded by OpTimeout) even if the
	// caller is cancelled (shutdown): a claim cut short leaves its batch
	// stuck until the lease expires.
	// The claim is sent in small pipelines (claimChunk users), so it adds
	// round trips but lengthens the budget accordingly.
	budget := q.opTimeout * time.Duration(1+limit/(claimChunk*8))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	now := q.now()
	id := newBatchID(now)
	r, err := q.scripts.begin.Exec(ctx, q.client,
		[]string{q.dirty, q.batches, q.recordKey(id), q.batchinfo},
		[]string{strconv.Itoa(limit), id, owner, ms(now), ms(now.Add(q.lease))}).AsStrSlice()
	if err != nil {
		return cachesync.Batch{}, wrapErr("claim: begin batch", err)
	}
	users, err := parseMembers(r)
	if err != nil {
		return cachesync.Batch{}, fmt.Errorf("valkey claim: %w", err)
	}
	if len(users) == 0 {
		return cachesync.Batch{}, nil
	}

	execs := make([]valkey.LuaExec, len(users))
	for i, u := range users {
		execs[i] = valkey.LuaExec{Keys: []string{q.userKey(u.id, "pending"), q.userKey(u.id, "inflight")}, Args: []string{id}}
	}
	deltas := make([]domain.UsageDelta, 0, len(users))
	var claimErr error
	for start := 0; start < len(execs); start += claimChunk {
		end := min(start+claimChunk, len(execs))
		for i, res := range q.scripts.claim.ExecMulti(ctx, q.client, execs[start:end]...) {
			kv, err := res.AsStrSlice()
			if err != nil {
				claimErr = cmpErr(claimErr, wrapErr("claim: move pending", err))
				continue
			}
			deltas, err = appendDeltas(deltas, users[start+i].id, kv)
			if err != nil {
				claimErr = cmpErr(claimErr, fmt.Errorf("valkey claim: %w", err))
			}
		}
	}
	if claimErr != nil {
		// Some users may have been claimed: put everything back now. If that
		// fails too, the unsealed record is reverted after its lease.
		if err := q.revert(ctx, id, users); err != nil {
			return cachesync.Batch{}, errors.Join(claimErr, err)
		}
		return cachesync.Batch{}, claimErr
	}

	sealed, err := q.scripts.seal.Exec(ctx, q.client, []string{q.recordKey(id), q.batches},
		[]string{owner, id, ms(q.now().Add(q.lease)), encodeDeltas(deltas)}).AsInt64()
	if err != nil {
		// Unknown whether it sealed: leave it to the lease (a taker either
		// applies the sealed deltas or reverts the unsealed claim).
		return cachesync.Batch{}, wrapErr("claim: seal batch", err)
	}
	if sealed != 1 {
		// Taken over while claiming (we were too slow): the taker reverts;
		// revert our own claims too, in case they landed after its revert.
		if err := q.revert(ctx, id, users); err != nil {
			return cachesync.Batch{}, fmt.Errorf("valkey claim: batch %s taken over while claiming: %w", id, err)
		}
		return cachesync.Batch{}, fmt.Errorf("valkey claim: batch %s taken over while claiming", id)
	}
	return cachesync.Batch{Key: id, Deltas: deltas, Users: len(users)}, nil
}

// Recover takes over up to limit batches whose lease expired. Sealed ones are
// returned to be applied under their key; unsealed ones were never applied
// and are reverted to pending here.
func (q *Queue) Recover(ctx context.Context, owner string, limit int) ([]cachesync.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("valkey recover: %w", err)
	}
	// Like Claim: a takeover and its revert are not cut short by the caller.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.opTimeout)
	defer cancel()
	now := q.now()
	ids, err := q.client.Do(ctx, q.client.B().Zrangebyscore().Key(q.batches).Min("-inf").Max(ms(now)).
		Limit(0, int64(limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, wrapErr("recover: list expired", err)
	}
	var out []cachesync.Batch
	for _, id := range ids {
		v, err := q.scripts.takeover.Exec(ctx, q.client, []string{q.recordKey(id), q.batches, q.batchinfo},
			[]string{id, ms(now), owner, ms(now.Add(q.lease))}).AsStrSlice()
		if valkey.IsValkeyNil(err) {
			continue // renewed, or already finished by someone else
		}
		if err != nil {
			return out, wrapErr("recover: take over", err)
		}
		if len(v) != 3 {
			return out, fmt.Errorf("valkey recover: %w: %v", errUnexpected, v)
		}
		if v[0] == "sealed" {
			deltas, err := decodeDeltas(v[2])
			if err != nil {
				return out, fmt.Errorf("valkey recover batch %s: %w", id, err)
			}
			out = append(out, cachesync.Batch{Key: id, Deltas: deltas, Users: countUsers(deltas)})
			continue
		}
		users, err := parseMembers(splitList(v[1]))
		if err != nil {
			return out, fmt.Errorf("valkey recover batch %s: %w", id, err)
		}
		if err := q.revert(ctx, id, users); err != nil {
			return out, err
		}
	}
	return out, nil
}

// revert moves the in-flight entries of an unsealed batch back to pending,
// re-marks its users (after the move: a user marked before it could be
// claimed by another batch in between and lose its mark), then forgets the
// batch. Every step is idempotent; a failure leaves the record for a retry.
func (q *Queue) revert(ctx context.Context, id string, users []member) error {
	execs := make([]valkey.LuaExec, len(users))
	for i, u := range users {
		execs[i] = valkey.LuaExec{Keys: []string{q.userKey(u.id, "pending"), q.userKey(u.id, "inflight")}, Args: []string{id}}
	}
	for _, res := range q.scripts.revert.ExecMulti(ctx, q.client, execs...) {
		if err := res.Error(); err != nil {
			return wrapErr("revert batch "+id, err)
		}
	}
	if err := q.mark(ctx, users); err != nil {
		return err
	}
	if err := q.scripts.finish.Exec(ctx, q.client, []string{q.recordKey(id), q.batches, q.batchinfo}, []string{id}).Error(); err != nil {
		return wrapErr("revert batch "+id+": forget", err)
	}
	return nil
}

// mark adds users to the dirty index, keeping scores already there.
func (q *Queue) mark(ctx context.Context, users []member) error {
	var cmds valkey.Commands
	for i := 0; i < len(users); i += 1000 {
		c := q.client.B().Zadd().Key(q.dirty).Nx().ScoreMember()
		for _, u := range users[i:min(i+1000, len(users))] {
			score, err := strconv.ParseFloat(u.score, 64)
			if err != nil {
				score = float64(q.now().UnixMilli())
			}
			c = c.ScoreMember(score, strconv.FormatInt(u.id, 10))
		}
		cmds = append(cmds, c.Build())
	}
	for _, res := range q.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			return wrapErr("mark dirty", err)
		}
	}
	return nil
}

// Renew extends owner's lease on a batch; false when it is not owner's.
func (q *Queue) Renew(ctx context.Context, key, owner string) (bool, error) {
	ctx, cancel := q.opCtx(ctx)
	defer cancel()
	n, err := q.scripts.renew.Exec(ctx, q.client, []string{q.recordKey(key), q.batches},
		[]string{owner, key, ms(q.now().Add(q.lease))}).AsInt64()
	if err != nil {
		return false, wrapErr("renew lease", err)
	}
	return n == 1, nil
}

// Ack forgets an applied batch: its in-flight entries, then its record.
func (q *Queue) Ack(ctx context.Context, b cachesync.Batch) error {
	// Not cut by the caller's cancellation either: it is short, and an
	// applied batch is best forgotten now rather than re-applied later.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.opTimeout)
	defer cancel()
	fields := map[int64][]string{}
	var order []int64
	for _, d := range b.Deltas {
		if _, ok := fields[d.UserID]; !ok {
			order = append(order, d.UserID)
		}
		fields[d.UserID] = append(fields[d.UserID], b.Key+"|"+PeriodField(d.PeriodStart))
	}
	if len(order) > 0 {
		cmds := make(valkey.Commands, 0, len(order))
		for _, u := range order {
			cmds = append(cmds, q.client.B().Hdel().Key(q.userKey(u, "inflight")).Field(fields[u]...).Build())
		}
		for _, res := range q.client.DoMulti(ctx, cmds...) {
			if err := res.Error(); err != nil {
				return wrapErr("ack: delete in-flight", err)
			}
		}
	}
	if err := q.scripts.finish.Exec(ctx, q.client, []string{q.recordKey(b.Key), q.batches, q.batchinfo}, []string{b.Key}).Error(); err != nil {
		return wrapErr("ack: forget batch", err)
	}
	return nil
}

// Stats reports dirty users plus users of open batches, and the first-dirty
// time of the oldest of them.
func (q *Queue) Stats(ctx context.Context) (cachesync.QueueStats, error) {
	ctx, cancel := q.opCtx(ctx)
	defer cancel()
	res := q.client.DoMulti(ctx,
		q.client.B().Zcard().Key(q.dirty).Build(),
		q.client.B().Zrange().Key(q.dirty).Min("0").Max("0").Withscores().Build(),
		q.client.B().Hvals().Key(q.batchinfo).Build())
	n, err := res[0].AsInt64()
	if err != nil {
		return cachesync.QueueStats{}, wrapErr("stats", err)
	}
	oldest := int64(0)
	first, err := res[1].AsZScores()
	if err != nil {
		return cachesync.QueueStats{}, wrapErr("stats", err)
	}
	if len(first) > 0 {
		oldest = int64(first[0].Score)
	}
	infos, err := res[2].AsStrSlice()
	if err != nil {
		return cachesync.QueueStats{}, wrapErr("stats", err)
	}
	for _, info := range infos {
		users, score, ok := strings.Cut(info, ",")
		if !ok {
			continue
		}
		u, _ := strconv.ParseInt(users, 10, 64)
		s, _ := strconv.ParseFloat(score, 64)
		n += u
		if s > 0 && (oldest == 0 || int64(s) < oldest) {
			oldest = int64(s)
		}
	}
	st := cachesync.QueueStats{PendingUsers: n}
	if oldest > 0 {
		st.Oldest = time.UnixMilli(oldest)
	}
	return st, nil
}

// SweepResult counts what a Sweep repaired.
type SweepResult struct {
	// Marked users had pending deltas (they are now in the dirty index).
	Marked int
	// Reverted users had in-flight entries of batches that no longer exist;
	// those entries went back to pending.
	Reverted int
}

// Sweep is the safety net for marks lost between a count and its mark (a
// client dying mid-pipeline, Valkey Cluster) and for claims that a slow,
// overtaken owner made after its batch was reverted: it SCANs every node for
// pending and in-flight hashes, marks users with pending deltas, and reverts
// in-flight entries whose batch record is gone. It walks the keyspace: run it
// rarely (at start, then every few minutes), never on the request path.
func (q *Queue) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	base := q.prefix + ":{u:"
	// SCAN may return a key more than once (the keyspace is rehashed while
	// requests write), and returns keys created during the scan (a reverted
	// in-flight entry creates the user's pending hash): each key is handled
	// once and each user is marked once.
	seen := map[string]bool{}
	marked := map[int64]bool{}
	for _, node := range q.client.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(base+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return res, wrapErr("sweep: scan", err)
			}
			var dirty []member
			for _, key := range e.Elements {
				if seen[key] {
					continue
				}
				seen[key] = true
				rest := strings.TrimPrefix(key, base)
				idStr, part, ok := strings.Cut(rest, "}:")
				if !ok {
					continue
				}
				id, err := strconv.ParseInt(idStr, 10, 64)
				if err != nil {
					continue
				}
				switch part {
				case "pending":
					dirty = append(dirty, member{id: id, score: ms(q.now())})
				case "inflight":
					n, err := q.sweepInflight(ctx, id)
					if err != nil {
						return res, err
					}
					if n > 0 {
						res.Reverted++
						dirty = append(dirty, member{id: id, score: ms(q.now())})
					}
				}
			}
			fresh := dirty[:0]
			for _, m := range dirty {
				if !marked[m.id] {
					marked[m.id] = true
					fresh = append(fresh, m)
				}
			}
			dirty = fresh
			if len(dirty) > 0 {
				if err := q.mark(ctx, dirty); err != nil {
					return res, err
				}
				res.Marked += len(dirty)
			}
			cursor = e.Cursor
			if cursor == 0 {
				break
			}
		}
	}
	return res, nil
}

// sweepInflight reverts a user's in-flight entries of batches whose record
// is gone. A record is written before any of its claims and deleted after
// its acknowledgement, so such entries were never part of an applied batch.
func (q *Queue) sweepInflight(ctx context.Context, userID int64) (int, error) {
	fields, err := q.client.Do(ctx, q.client.B().Hkeys().Key(q.userKey(userID, "inflight")).Build()).AsStrSlice()
	if err != nil {
		return 0, wrapErr("sweep: read in-flight", err)
	}
	seen := map[string]bool{}
	n := 0
	for _, f := range fields {
		id, _, ok := strings.Cut(f, "|")
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		exists, err := q.client.Do(ctx, q.client.B().Exists().Key(q.recordKey(id)).Build()).AsInt64()
		if err != nil {
			return n, wrapErr("sweep: check batch", err)
		}
		if exists == 1 {
			continue
		}
		moved, err := q.scripts.revert.Exec(ctx, q.client,
			[]string{q.userKey(userID, "pending"), q.userKey(userID, "inflight")}, []string{id}).AsInt64()
		if err != nil {
			return n, wrapErr("sweep: revert", err)
		}
		n += int(moved)
	}
	return n, nil
}

// PeriodField formats a period start as YYYYMMDD (UTC), as cache/valkey does.
func PeriodField(periodStart time.Time) string { return periodStart.UTC().Format("20060102") }

func parsePeriod(f string) (time.Time, error) {
	t, err := time.ParseInLocation("20060102", f, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad period field %q: %w", f, err)
	}
	return t, nil
}

// appendDeltas parses a claim reply {period, delta, ...} of one user.
func appendDeltas(ds []domain.UsageDelta, userID int64, kv []string) ([]domain.UsageDelta, error) {
	if len(kv)%2 != 0 {
		return ds, fmt.Errorf("%w: odd claim reply", errUnexpected)
	}
	for i := 0; i < len(kv); i += 2 {
		p, err := parsePeriod(kv[i])
		if err != nil {
			return ds, err
		}
		n, err := strconv.ParseInt(kv[i+1], 10, 64)
		if err != nil {
			return ds, fmt.Errorf("bad delta %q: %w", kv[i+1], err)
		}
		ds = append(ds, domain.UsageDelta{UserID: userID, PeriodStart: p, Delta: n})
	}
	return ds, nil
}

// encodeDeltas stores deltas in a batch record: "id:YYYYMMDD:delta,...".
func encodeDeltas(ds []domain.UsageDelta) string {
	b := make([]byte, 0, len(ds)*24)
	for i, d := range ds {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d.UserID, 10)
		b = append(b, ':')
		b = d.PeriodStart.UTC().AppendFormat(b, "20060102")
		b = append(b, ':')
		b = strconv.AppendInt(b, d.Delta, 10)
	}
	return string(b)
}

func decodeDeltas(s string) ([]domain.UsageDelta, error) {
	parts := splitList(s)
	ds := make([]domain.UsageDelta, 0, len(parts))
	for _, p := range parts {
		f := strings.Split(p, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("bad stored delta %q", p)
		}
		id, err1 := strconv.ParseInt(f[0], 10, 64)
		period, err2 := parsePeriod(f[1])
		n, err3 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("bad stored delta %q: %w", p, err)
		}
		ds = append(ds, domain.UsageDelta{UserID: id, PeriodStart: period, Delta: n})
	}
	return ds, nil
}

// parseMembers parses {id, score, id, score, ...}.
func parseMembers(r []string) ([]member, error) {
	if len(r)%2 != 0 {
		return nil, fmt.Errorf("%w: odd member list", errUnexpected)
	}
	out := make([]member, 0, len(r)/2)
	for i := 0; i < len(r); i += 2 {
		id, err := strconv.ParseInt(r[i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad user id %q in dirty index: %w", r[i], err)
		}
		out = append(out, member{id: id, score: r[i+1]})
	}
	return out, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func countUsers(ds []domain.UsageDelta) int {
	seen := make(map[int64]struct{}, len(ds))
	for _, d := range ds {
		seen[d.UserID] = struct{}{}
	}
	return len(seen)
}

// newBatchID is unique across instances and sorts by claim time; it never
// contains '|' or ',' (separators in fields and lists).
func newBatchID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "b" + strconv.FormatInt(now.UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func (q *Queue) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, q.opTimeout)
}

var errUnexpected = errors.New("unexpected reply")

// wrapErr names the operation and marks outages as cache/valkey does.
func wrapErr(op string, err error) error { return cachevalkey.WrapErr("valkey "+op, err) }

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
