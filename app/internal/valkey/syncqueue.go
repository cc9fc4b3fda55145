package valkey

// SyncQueue is the Valkey side of the write-behind usage sync: the dirty
// index that CheckAndCount marks, and the claim → apply → acknowledge queue
// (usagesync.Pending) that the usage sync loop drains into Postgres. Its keys
// are those of the package comment: per-user keys share the hash tag
// {u:<id>}, the sync's own keys the tag {sync}, so every script touches one
// slot only and the scheme works unchanged on Valkey Cluster.
//
// # Marking users dirty
//
// CheckAndCount sends the mark (markDirtyCmd) in the same pipeline as its
// count script, AFTER it. Claim removes users from the index (atomically
// with writing the batch record that names them) BEFORE it moves their
// pending deltas, so: a count that lands before the removal is in pending
// when the claim reads it; a count that lands after it is followed by its
// own mark, which puts the user back. Marking before the count would rely on
// the server running the two pipelined commands back to back (Redis does for
// a pipeline read in one go, but nothing promises it); otherwise a claim
// between them (mark no-op, removal, count) leaves a delta in pending with
// its user unmarked. Marking unconditionally (even for a denied request) is
// harmless: a user with nothing pending is claimed empty and dropped.
//
// The mark and the count are separate commands on different slots ({sync}
// and {u:<id>}), which is why the mark cannot live inside the count script.
// On a standalone server a pipeline runs in order on one connection; if the
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
// pending into in-flight entries (inflightField); (3) one script seals the
// batch: stores its deltas in the record, only if the caller still owns it.
// A sealed batch is the only kind ever applied, and a taker applies exactly
// its stored deltas under its key. A batch taken over before it was sealed
// was never applied: the taker moves its in-flight entries back to pending
// and re-marks its users. Ack deletes the in-flight entries, then the record.
// Crash points: before (1) nothing happened; between (1) and (3) the record
// exists unsealed → reverted by a taker; after (3) the record holds the
// deltas → applied (once, by key) by a taker; during ack the record is
// still there → re-applied as a no-op and acknowledged.
//
// # Takeover and liveness
//
// A batch is taken over when its lease expired, or at once when its owner
// is not alive: every instance keeps a liveness key (Keys.SyncAlive, a short
// TTL its sync loop refreshes, deleted by a graceful stop) and is listed in
// Keys.SyncInstances, so a stopping instance can tell whether it is the last
// one (usagesync.Liveness). The lease still protects an owner that beats.
//
// # Seeding
//
// A cold counter is seeded with persisted + pending + in-flight deltas of
// the period (Cache.SeedUsage, seedUsageLua). Bound: a batch applied to
// Postgres but not yet acknowledged is counted twice by a seed in that
// window (over by at most that user's batch delta; the quota errs strict),
// and a batch applied AND acknowledged between the seeder's Postgres read and
// its seed script is missed (under by that delta). Both windows are a few
// milliseconds of one sync batch, affect only the quota counter's starting
// value, and never the counts in Postgres.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/usagesync"
)

// DefaultLease is the lease of a sync batch when SyncQueueConfig.Lease is 0.
const DefaultLease = 5 * time.Second

// SyncQueueConfig configures a SyncQueue.
type SyncQueueConfig struct {
	// Lease is how long a batch stays its owner's without a renewal; use
	// usagesync.DefaultLease(SYNC_INTERVAL). Default DefaultLease.
	Lease time.Duration
	// Now defaults to the Cache's clock. Instances compare lease deadlines
	// made by each other's clocks: skew must stay well below Lease.
	Now func() time.Time
}

// SyncQueue is the Valkey-backed usagesync.Pending. It is safe for
// concurrent use, by any number of processes.
type SyncQueue struct {
	conn
	lease time.Duration
}

var (
	_ usagesync.Pending  = (*SyncQueue)(nil)
	_ usagesync.Liveness = (*SyncQueue)(nil)
)

// SyncQueue returns the usage sync queue on the Cache's client, keys, and
// deadline. The Cache keeps ownership of the client.
func (c *Cache) SyncQueue(cfg SyncQueueConfig) *SyncQueue {
	q := &SyncQueue{conn: c.conn, lease: cfg.Lease}
	if q.lease <= 0 {
		q.lease = DefaultLease
	}
	if cfg.Now != nil {
		q.now = cfg.Now
	}
	return q
}

// markDirtyCmd builds the command that marks userID as having pending usage
// (ZADD <prefix>:{sync}:dirty NX <now ms> <id>; NX keeps the first-dirty time
// for the lag gauge). CheckAndCount pipelines it right AFTER the count
// script (see SyncQueue for why after).
func (c *conn) markDirtyCmd(userID int64) valkey.Completed {
	return c.client.B().Zadd().Key(c.keys.SyncDirty()).Nx().ScoreMember().
		ScoreMember(float64(c.now().UnixMilli()), strconv.FormatInt(userID, 10)).Build()
}

// member is a user taken from the dirty index with its first-dirty score.
type member struct {
	id    int64
	score string
}

// claimChunk is how many users' claim scripts go in one pipeline. Valkey
// runs one connection's pipelined commands back to back before it serves
// anyone else, so a big claim pipeline makes every request's command wait
// behind it: small pipelines bound that wait to a few scripts at the cost of
// more round trips for the sync, which is not latency-sensitive. 32 scripts
// of about 6 µs hold the server about as long as the begin script does
// (~125 µs for 100 users); against 16, the sync's client CPU per user was
// 12 % lower and the full-size lab's p99 ratio within its run-to-run spread
// (README, "The sync at full size").
const claimChunk = 32

// Claim takes up to limit dirty users into a new sealed batch owned by owner.
func (q *SyncQueue) Claim(ctx context.Context, owner string, limit int) (usagesync.Batch, error) {
	if err := ctx.Err(); err != nil {
		return usagesync.Batch{}, fmt.Errorf("valkey claim: %w", err)
	}
	// Once begun, a claim runs to its end even if the caller is cancelled
	// (shutdown): a claim cut short leaves its batch stuck until the lease
	// expires. Each of its round trips (the begin script, one pipeline per
	// claimChunk users, the seal) is bounded by the call deadline.
	ctx = context.WithoutCancel(ctx)
	now := q.now()
	id := newBatchID(now)
	r, err := q.exec(ctx, q.scripts.syncBegin,
		[]string{q.keys.SyncDirty(), q.keys.SyncBatches(), q.keys.SyncBatch(id), q.keys.SyncBatchInfo()},
		[]string{strconv.Itoa(limit), id, owner, ms(now), ms(now.Add(q.lease))}).ToString()
	if err != nil {
		return usagesync.Batch{}, wrapErr("claim: begin batch", err)
	}
	users, err := parseMembers(splitList(r))
	if err != nil {
		return usagesync.Batch{}, fmt.Errorf("valkey claim: %w", err)
	}
	if len(users) == 0 {
		return usagesync.Batch{}, nil
	}

	execs := q.userExecs(id, users)
	deltas := make([]domain.UsageDelta, 0, len(users))
	var claimErr error
	for start := 0; start < len(execs); start += claimChunk {
		end := min(start+claimChunk, len(execs))
		for i, res := range q.execMulti(ctx, q.scripts.syncClaim, execs[start:end]) {
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
			return usagesync.Batch{}, errors.Join(claimErr, err)
		}
		return usagesync.Batch{}, claimErr
	}

	sealed, err := q.exec(ctx, q.scripts.syncSeal, []string{q.keys.SyncBatch(id), q.keys.SyncBatches()},
		[]string{owner, id, ms(q.now().Add(q.lease)), encodeDeltas(deltas)}).AsInt64()
	if err != nil {
		// Unknown whether it sealed: leave it to the lease (a taker either
		// applies the sealed deltas or reverts the unsealed claim).
		return usagesync.Batch{}, wrapErr("claim: seal batch", err)
	}
	if sealed != 1 {
		// Taken over while claiming (we were too slow): the taker reverts;
		// revert our own claims too, in case they landed after its revert.
		if err := q.revert(ctx, id, users); err != nil {
			return usagesync.Batch{}, fmt.Errorf("valkey claim: batch %s taken over while claiming: %w", id, err)
		}
		return usagesync.Batch{}, fmt.Errorf("valkey claim: batch %s taken over while claiming", id)
	}
	return usagesync.Batch{Key: id, Deltas: deltas, Users: len(users)}, nil
}

// recoverScan bounds the open batches one Recover looks at (oldest lease
// deadline first). Each instance holds only a few at a time, so it is far
// above what a healthy deployment has open.
const recoverScan = 1000

// Recover takes over batches whose lease expired, or whose lease is live but
// whose owner is not alive (no liveness key: killed, or stopped), and returns
// up to limit sealed ones, to be applied under their key; unsealed ones were
// never applied and are reverted to pending here. The caller's own batches
// are left to it while their lease is live.
func (q *SyncQueue) Recover(ctx context.Context, owner string, limit int) ([]usagesync.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("valkey recover: %w", err)
	}
	// Like Claim: a takeover and its revert are not cut short by the caller.
	ctx = context.WithoutCancel(ctx)
	cands, err := q.recoverable(ctx, owner)
	if err != nil {
		return nil, err
	}
	now := q.now()
	var out []usagesync.Batch
	for _, c := range cands {
		if len(out) >= limit {
			break
		}
		v, err := q.exec(ctx, q.scripts.syncTakeover,
			[]string{q.keys.SyncBatch(c.id), q.keys.SyncBatches(), q.keys.SyncBatchInfo(), q.keys.SyncAlive(c.owner)},
			[]string{c.id, ms(now), owner, ms(now.Add(q.lease)), c.owner}).AsStrSlice()
		if valkey.IsValkeyNil(err) {
			continue // renewed, its owner beats again, or already finished by someone else
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
				return out, fmt.Errorf("valkey recover batch %s: %w", c.id, err)
			}
			out = append(out, usagesync.Batch{Key: c.id, Deltas: deltas, Users: countUsers(deltas)})
			continue
		}
		users, err := parseMembers(splitList(v[1]))
		if err != nil {
			return out, fmt.Errorf("valkey recover batch %s: %w", c.id, err)
		}
		if err := q.revert(ctx, c.id, users); err != nil {
			return out, err
		}
	}
	return out, nil
}

// candidate is an open batch that Recover may take over, with the owner it
// had when listed.
type candidate struct{ id, owner string }

// recoverable lists the open batches whose lease expired or whose owner
// (other than self) has no liveness key, oldest deadline first. The takeover
// script checks again, atomically.
func (q *SyncQueue) recoverable(ctx context.Context, self string) ([]candidate, error) {
	open, err := q.do(ctx, q.client.B().Zrange().Key(q.keys.SyncBatches()).Min("0").Max(strconv.Itoa(recoverScan-1)).
		Withscores().Build()).AsZScores()
	if err != nil {
		return nil, wrapErr("recover: list batches", err)
	}
	if len(open) == 0 {
		return nil, nil
	}
	cmds := make(valkey.Commands, len(open))
	for i, b := range open {
		cmds[i] = q.client.B().Hget().Key(q.keys.SyncBatch(b.Member)).Field("owner").Build()
	}
	owners := make([]string, len(open))
	for i, res := range q.doMulti(ctx, cmds) {
		o, err := res.ToString()
		if err != nil && !valkey.IsValkeyNil(err) {
			return nil, wrapErr("recover: read owners", err)
		}
		owners[i] = o
	}
	// Whether each owner under a live lease is alive (one EXISTS per owner).
	nowMs := float64(q.now().UnixMilli())
	alive := map[string]bool{}
	var asked []string
	cmds = cmds[:0]
	for i, b := range open {
		o := owners[i]
		if b.Score <= nowMs || o == "" || o == self {
			continue
		}
		if _, ok := alive[o]; !ok {
			alive[o] = true
			asked = append(asked, o)
			cmds = append(cmds, q.client.B().Exists().Key(q.keys.SyncAlive(o)).Build())
		}
	}
	if len(cmds) > 0 {
		for i, res := range q.doMulti(ctx, cmds) {
			n, err := res.AsInt64()
			if err != nil {
				return nil, wrapErr("recover: check liveness", err)
			}
			alive[asked[i]] = n == 1
		}
	}
	var out []candidate
	for i, b := range open {
		o := owners[i]
		expired := b.Score <= nowMs
		if expired || (o != "" && o != self && !alive[o]) {
			out = append(out, candidate{id: b.Member, owner: o})
		}
	}
	return out, nil
}

// Beat marks owner alive for ttl in state: its liveness key, and its
// membership of the instances set (after the key, see aliveLua).
func (q *SyncQueue) Beat(ctx context.Context, owner, state string, ttl time.Duration) error {
	for _, res := range q.doMulti(ctx, valkey.Commands{
		q.client.B().Set().Key(q.keys.SyncAlive(owner)).Value(state).Px(time.Duration(ttlMillis(ttl)) * time.Millisecond).Build(),
		q.client.B().Sadd().Key(q.keys.SyncInstances()).Member(owner).Build(),
	}) {
		if err := res.Error(); err != nil {
			return wrapErr("liveness beat", err)
		}
	}
	return nil
}

// Leave deletes owner's liveness key: its batches may be taken over at once.
func (q *SyncQueue) Leave(ctx context.Context, owner string) error {
	for _, res := range q.doMulti(ctx, valkey.Commands{
		q.client.B().Del().Key(q.keys.SyncAlive(owner)).Build(),
		q.client.B().Srem().Key(q.keys.SyncInstances()).Member(owner).Build(),
	}) {
		if err := res.Error(); err != nil {
			return wrapErr("liveness leave", err)
		}
	}
	return nil
}

// Others returns the state of every alive owner but owner, and forgets the
// owners whose liveness key lapsed.
func (q *SyncQueue) Others(ctx context.Context, owner string) (map[string]string, error) {
	members, err := q.do(ctx, q.client.B().Smembers().Key(q.keys.SyncInstances()).Build()).AsStrSlice()
	if err != nil {
		return nil, wrapErr("liveness: list instances", err)
	}
	members = slices.DeleteFunc(members, func(m string) bool { return m == owner })
	out := map[string]string{}
	if len(members) == 0 {
		return out, nil
	}
	keys := make([]string, 0, len(members)+1)
	keys = append(keys, q.keys.SyncInstances())
	for _, m := range members {
		keys = append(keys, q.keys.SyncAlive(m))
	}
	states, err := q.exec(ctx, q.scripts.syncAlive, keys, members).AsStrSlice()
	if err != nil {
		return nil, wrapErr("liveness: read instances", err)
	}
	if len(states) != len(members) {
		return nil, fmt.Errorf("valkey liveness: %w: %d states for %d instances", errUnexpected, len(states), len(members))
	}
	for i, st := range states {
		if st != "" {
			out[members[i]] = st
		}
	}
	return out, nil
}

// revert moves the in-flight entries of an unsealed batch back to pending,
// re-marks its users (after the move: a user marked before it could be
// claimed by another batch in between and lose its mark), then forgets the
// batch. Every step is idempotent; a failure leaves the record for a retry.
func (q *SyncQueue) revert(ctx context.Context, id string, users []member) error {
	for _, res := range q.execMulti(ctx, q.scripts.syncRevert, q.userExecs(id, users)) {
		if err := res.Error(); err != nil {
			return wrapErr("revert batch "+id, err)
		}
	}
	if err := q.mark(ctx, users); err != nil {
		return err
	}
	if err := q.exec(ctx, q.scripts.syncFinish, q.recordKeys(id), []string{id}).Error(); err != nil {
		return wrapErr("revert batch "+id+": forget", err)
	}
	return nil
}

// mark adds users to the dirty index, keeping scores already there.
func (q *SyncQueue) mark(ctx context.Context, users []member) error {
	var cmds valkey.Commands
	for i := 0; i < len(users); i += 1000 {
		c := q.client.B().Zadd().Key(q.keys.SyncDirty()).Nx().ScoreMember()
		for _, u := range users[i:min(i+1000, len(users))] {
			score, err := strconv.ParseFloat(u.score, 64)
			if err != nil {
				score = float64(q.now().UnixMilli())
			}
			c = c.ScoreMember(score, strconv.FormatInt(u.id, 10))
		}
		cmds = append(cmds, c.Build())
	}
	for _, res := range q.doMulti(ctx, cmds) {
		if err := res.Error(); err != nil {
			return wrapErr("mark dirty", err)
		}
	}
	return nil
}

// Renew extends owner's lease on a batch; false when it is not owner's.
func (q *SyncQueue) Renew(ctx context.Context, key, owner string) (bool, error) {
	n, err := q.exec(ctx, q.scripts.syncRenew, []string{q.keys.SyncBatch(key), q.keys.SyncBatches()},
		[]string{owner, key, ms(q.now().Add(q.lease))}).AsInt64()
	if err != nil {
		return false, wrapErr("renew lease", err)
	}
	return n == 1, nil
}

// Ack forgets an applied batch: its in-flight entries, then its record.
func (q *SyncQueue) Ack(ctx context.Context, b usagesync.Batch) error {
	// Not cut by the caller's cancellation either: it is short, and an
	// applied batch is best forgotten now rather than re-applied later.
	ctx = context.WithoutCancel(ctx)
	fields := map[int64][]string{}
	var order []int64
	for _, d := range b.Deltas {
		if _, ok := fields[d.UserID]; !ok {
			order = append(order, d.UserID)
		}
		fields[d.UserID] = append(fields[d.UserID], inflightField(b.Key, PeriodField(d.PeriodStart)))
	}
	if len(order) > 0 {
		cmds := make(valkey.Commands, 0, len(order))
		for _, u := range order {
			cmds = append(cmds, q.client.B().Hdel().Key(q.keys.Inflight(u)).Field(fields[u]...).Build())
		}
		for _, res := range q.doMulti(ctx, cmds) {
			if err := res.Error(); err != nil {
				return wrapErr("ack: delete in-flight", err)
			}
		}
	}
	if err := q.exec(ctx, q.scripts.syncFinish, q.recordKeys(b.Key), []string{b.Key}).Error(); err != nil {
		return wrapErr("ack: forget batch", err)
	}
	return nil
}

// Stats reports dirty users plus users of open batches, and the first-dirty
// time of the oldest of them.
func (q *SyncQueue) Stats(ctx context.Context) (usagesync.QueueStats, error) {
	res := q.doMulti(ctx, valkey.Commands{
		q.client.B().Zcard().Key(q.keys.SyncDirty()).Build(),
		q.client.B().Zrange().Key(q.keys.SyncDirty()).Min("0").Max("0").Withscores().Build(),
		q.client.B().Hvals().Key(q.keys.SyncBatchInfo()).Build()})
	n, err := res[0].AsInt64()
	if err != nil {
		return usagesync.QueueStats{}, wrapErr("stats", err)
	}
	oldest := int64(0)
	first, err := res[1].AsZScores()
	if err != nil {
		return usagesync.QueueStats{}, wrapErr("stats", err)
	}
	if len(first) > 0 {
		oldest = int64(first[0].Score)
	}
	infos, err := res[2].AsStrSlice()
	if err != nil {
		return usagesync.QueueStats{}, wrapErr("stats", err)
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
	st := usagesync.QueueStats{PendingUsers: n}
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

// sweepScanCount is the COUNT of each SCAN step of Sweep. Valkey serves no
// other command while a step runs, and a step's time grows with COUNT: on
// Redis 7 with 190,000 keys, 546 µs a step at 1,000 (a stall every request
// behind it waits out), 59 µs at 100. The whole walk costs the server the
// same; the sweep, which runs every few minutes, takes more round trips.
const sweepScanCount = 100

// Sweep is the safety net for marks lost between a count and its mark (a
// client dying mid-pipeline, Valkey Cluster) and for claims that a slow,
// overtaken owner made after its batch was reverted: it SCANs every node for
// pending and in-flight hashes, marks users with pending deltas, and reverts
// in-flight entries whose batch record is gone. It walks the keyspace: run it
// rarely (at start, then every few minutes), never on the request path.
func (q *SyncQueue) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	// SCAN may return a key more than once (the keyspace is rehashed while
	// requests write), and returns keys created during the scan (a reverted
	// in-flight entry creates the user's pending hash): each key is handled
	// once and each user is marked once.
	seen := map[string]bool{}
	marked := map[int64]bool{}
	for _, node := range q.client.Nodes() {
		for _, pattern := range q.keys.sweepPatterns() {
			var cursor uint64
			for {
				sctx, cancel := q.opCtx(ctx)
				e, err := node.Do(sctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(sweepScanCount).Build()).AsScanEntry()
				cancel()
				if err != nil {
					return res, wrapErr("sweep: scan", err)
				}
				var dirty []member
				for _, key := range e.Elements {
					if seen[key] {
						continue
					}
					seen[key] = true
					id, part, ok := q.keys.parseUser(key)
					if !ok {
						continue
					}
					switch part {
					case partPending:
						dirty = append(dirty, member{id: id, score: ms(q.now())})
					case partInflight:
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
	}
	return res, nil
}

// sweepInflight reverts a user's in-flight entries of batches whose record
// is gone. A record is written before any of its claims and deleted after
// its acknowledgement, so such entries were never part of an applied batch.
func (q *SyncQueue) sweepInflight(ctx context.Context, userID int64) (int, error) {
	fields, err := q.do(ctx, q.client.B().Hkeys().Key(q.keys.Inflight(userID)).Build()).AsStrSlice()
	if err != nil {
		return 0, wrapErr("sweep: read in-flight", err)
	}
	seen := map[string]bool{}
	n := 0
	for _, f := range fields {
		id, ok := inflightBatch(f)
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		exists, err := q.do(ctx, q.client.B().Exists().Key(q.keys.SyncBatch(id)).Build()).AsInt64()
		if err != nil {
			return n, wrapErr("sweep: check batch", err)
		}
		if exists == 1 {
			continue
		}
		moved, err := q.exec(ctx, q.scripts.syncRevert.Lua,
			[]string{q.keys.Pending(userID), q.keys.Inflight(userID)}, []string{id}).AsInt64()
		if err != nil {
			return n, wrapErr("sweep: revert", err)
		}
		n += int(moved)
	}
	return n, nil
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
		b = d.PeriodStart.UTC().AppendFormat(b, periodLayout)
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
// contains inflightSep or ',' (separators in fields and lists).
func newBatchID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "b" + strconv.FormatInt(now.UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// recordKeys are the {sync} keys a batch's finish script touches.
func (q *SyncQueue) recordKeys(id string) []string {
	return []string{q.keys.SyncBatch(id), q.keys.SyncBatches(), q.keys.SyncBatchInfo()}
}

// userExecs are the per-user script calls (pending, in-flight; batch id) of
// a claim or a revert.
func (q *SyncQueue) userExecs(id string, users []member) []valkey.LuaExec {
	execs := make([]valkey.LuaExec, len(users))
	for i, u := range users {
		execs[i] = valkey.LuaExec{Keys: []string{q.keys.Pending(u.id), q.keys.Inflight(u.id)}, Args: []string{id}}
	}
	return execs
}

// do, doMulti, exec and execMulti are one round trip each, under the call
// deadline (exec and execMulti a second one for scripts the server's cache
// lost: see evalMulti).
func (c *conn) do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	return c.client.Do(ctx, cmd)
}

func (c *conn) doMulti(ctx context.Context, cmds valkey.Commands) []valkey.ValkeyResult {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	return c.client.DoMulti(ctx, cmds...)
}

func (c *conn) exec(ctx context.Context, s *valkey.Lua, keys, args []string) valkey.ValkeyResult {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	return s.Exec(ctx, c.client, keys, args)
}

func (c *conn) execMulti(ctx context.Context, s script, execs []valkey.LuaExec) []valkey.ValkeyResult {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	return c.evalMulti(ctx, s, execs)
}

// evalMulti runs s once per exec in one pipeline of EVALSHAs, then those
// the server answered NOSCRIPT (they did not run: its script cache was
// flushed) in a second one of EVALs. valkey-go's Lua.ExecMulti would send a
// SCRIPT LOAD to every node before each pipeline, a round trip and a hash
// of the source in the server per pipeline; LoadScripts loads every script
// at start instead.
func (c *conn) evalMulti(ctx context.Context, s script, execs []valkey.LuaExec) []valkey.ValkeyResult {
	b := c.client.B()
	cmds := make(valkey.Commands, len(execs))
	for i, e := range execs {
		cmds[i] = b.Evalsha().Sha1(s.sha).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build()
	}
	res := c.client.DoMulti(ctx, cmds...)
	var again []int
	for i, r := range res {
		if noScript(r.Error()) {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return res
	}
	cmds = cmds[:0]
	for _, i := range again {
		e := execs[i]
		cmds = append(cmds, b.Eval().Script(s.src).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build())
	}
	for j, r := range c.client.DoMulti(ctx, cmds...) {
		res[again[j]] = r
	}
	return res
}

// noScript reports whether err is the server's NOSCRIPT reply.
func noScript(err error) bool {
	ve, ok := valkey.IsValkeyErr(err)
	return ok && ve.IsNoScript()
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
