package valkey

import (
	"crypto/sha1"
	"encoding/hex"

	valkey "github.com/valkey-io/valkey-go"
)

// idemLuaLib checks an idempotency record (a hash: fp = the request's
// fingerprint, until = unix ms while the first request holds the key, then
// status and body once its answer is stored). idem_check returns nil when
// the key is new, else the reply for the caller: {5} another request used
// the key, {6, 0, status, body} replay, {7, ms} still held for ms, or {8}
// the first attempt's answer was lost (its holder died): the key is now
// held by this attempt, which is answered afresh.
const idemLuaLib = `
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function idem_check(key, fp, now, lease)
  local r = redis.call('HMGET', key, 'fp', 'until', 'status', 'body')
  if not r[1] then return nil end
  if r[1] ~= fp then return {5, 0} end
  if r[3] then return {6, 0, r[3], r[4]} end
  local u = tonumber(r[2])
  if u > now then return {7, u - now} end
  redis.call('HSET', key, 'until', now + lease)
  return {8, 0}
end
local function idem_hold(key, fp, now, lease, ttl)
  redis.call('HSET', key, 'fp', fp, 'until', now + lease)
  redis.call('PEXPIRE', key, ttl)
end
`

// hasNotLuaLib is the has-not lookup of the item-set scripts: has_not
// appends to out the 0-based indexes (counted from ARGV[from]) of the items
// ARGV[from..] that the set does not have, ascending, in SMISMEMBERs of at
// most 1,000 members. Duplicates are answered each (the caller keeps one).
// It returns nil, or the error reply of a failed SMISMEMBER: pcall, because
// in the count script a failed lookup is no answer, not a failed count (the
// count's writes follow it).
const hasNotLuaLib = `
local function has_not(out, set, from)
  local n = #ARGV
  local i = from
  while i <= n do
    local j = math.min(i + 999, n)
    local r = redis.pcall('SMISMEMBER', set, unpack(ARGV, i, j))
    if r.err then return r end
    for k = 1, #r do
      if r[k] == 0 then out[#out + 1] = i + k - 1 - from end
    end
    i = j + 1
  end
  return nil
end
`

// countLua is the metered request's one atomic step: the fence, the
// idempotency key, the quota check and the count. It returns {outcome,
// used[, first]} with the outcome codes of domain.UsageOutcome, plus 4 for
// fenced, and the idem_check replies (with the current count as used); first is 1 when this count took the
// period's pending delta from 0 to 1: only then must the user be marked
// dirty (see Cache.Count).
//
// The fence (ARGV[4], server unix ms) makes a script that reaches the server
// after its caller gave up a no-op, so an unknown outcome is settled for good
// once the server's clock passes it. The applied field (ARGV[5], may be
// empty) counts this sender's applied counts for that settlement (outcomes).
// With a fingerprint (ARGV[6]) the key record is written in the same step as
// the count: no count without its record, no record without its count.
//
// The TTLs are kept by the count that starts a pending delta (p == 1: the
// first after each sync claim, and the first of every period), not by every
// count: the counter gets its TTL from SeedUsage and keeps it (INCR, the
// refund's DECR of an existing key), so its check is a backstop; the
// applied hash is set to live until the period's reset plus slack, the
// same instant for every count of the period, so the period's first count
// sets it for all. A hash that loses its last field (outcomes.forget) and
// is recreated mid-delta gets its TTL at the next such count. Two of the
// script's commands fewer on nearly every count.
//
// With the item set's keys (KEYS[5], KEYS[6]) and the query's items
// (ARGV[9..]), an allowed count also answers the has-not lookup, in the same
// round trip (Cache.CountHasNot): the reply is then {1, used, first, lookup
// µs[, 1, i...]}, the lookup timed by the server's own clock (TIME) from the
// script's start (so its time includes the fence, key and quota checks
// before it, a few µs), and 1 followed by hasNotLua's indexes when the set
// is cached (nothing when it is not, or the lookup failed). The lookup runs
// once the count is known to be allowed and before its writes, so the
// fence's reading of the clock is the lookup's start: two TIME calls per
// warm count, not three. Any other outcome never reads the set.
//
// KEYS: counter, pending, applied, idem record (KEYS[3] again without a
// key)[, items, items:v]. ARGV: limit, period field, counter ttl ms, fence
// ms, applied field, fingerprint, idem ttl ms, idem lease ms[, items...].
const countLua = idemLuaLib + hasNotLuaLib + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[4]) then return {4, 0} end
local fp = ARGV[6]
if fp ~= '' then
  local r = idem_check(KEYS[4], fp, now, tonumber(ARGV[8]))
  if r then
    if r[1] == 6 or r[1] == 8 then r[2] = tonumber(redis.call('GET', KEYS[1]) or '0') end
    return r
  end
end
local cur = redis.call('GET', KEYS[1])
if not cur then return {3, 0} end
cur = tonumber(cur)
if cur >= tonumber(ARGV[1]) then return {2, cur} end
-- The count will be applied: the lookup first, so that the fence's TIME
-- is also where the lookup's time starts (one TIME fewer than timing the
-- count and the lookup apart). used and first are filled in after.
local out = {1, 0, 0}
if KEYS[6] then
  out[4] = 0
  if redis.call('EXISTS', KEYS[6]) == 1 then
    out[5] = 1
    -- A lookup that fails is no answer: the count stands, the caller asks
    -- the usual way.
    if has_not(out, KEYS[5], 9) then
      for k = #out, 5, -1 do out[k] = nil end
    end
  end
  local t1 = redis.call('TIME')
  out[4] = (tonumber(t1[1]) - tonumber(t[1])) * 1000000 + tonumber(t1[2]) - tonumber(t[2])
end
local n = redis.call('INCR', KEYS[1])
local p = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[5], 1) end
if p == 1 then
  if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  if ARGV[5] ~= '' then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
end
if fp ~= '' then idem_hold(KEYS[4], fp, now, tonumber(ARGV[8]), ARGV[7]) end
out[2] = n
if p == 1 then out[3] = 1 end
return out
`

// idemBeginLua takes an idempotency key for a request that is not metered:
// {1} the key is new and now held, else idem_check's reply.
//
// KEYS: idem record. ARGV: fingerprint, idem ttl ms, idem lease ms.
const idemBeginLua = idemLuaLib + `
local now = server_ms()
local r = idem_check(KEYS[1], ARGV[1], now, tonumber(ARGV[3]))
if r then return r end
idem_hold(KEYS[1], ARGV[1], now, tonumber(ARGV[3]), ARGV[2])
return {1}
`

// idemStoreLua stores the first answer of a key's request, if the record
// is still that request's (it keeps its TTL from the first use).
//
// KEYS: idem record. ARGV: fingerprint, status, body.
const idemStoreLua = `
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3])
return 1
`

// seedUsageLua creates the counter as persisted + the period's deltas not yet
// in Postgres (pending, plus in-flight entries claimed by a sync batch), only
// if it does not exist: a live counter (counted by this or another instance)
// is always more current than a Postgres read.
//
// KEYS: counter, pending, inflight. ARGV: persisted, period field, ttl ms.
const seedUsageLua = inflightLuaLib + `
local p = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local kv = redis.call('HGETALL', KEYS[3])
for i = 1, #kv, 2 do
  if inflight_of_period(kv[i], ARGV[2]) then p = p + tonumber(kv[i + 1]) end
end
local v = tonumber(ARGV[1]) + p
if redis.call('SET', KEYS[1], string.format('%d', v), 'NX', 'PX', ARGV[3]) then return 1 end
return 0
`

// The item-set scripts share one invariant: items:floor is at least every
// version ever applied, invalidated or installed (it is bumped on each, and
// its TTL refreshed), and a load may install snapshot v0 only if v0 >= floor.
// Bumping the floor on the incremental path too matters: when items:v expires
// by TTL, the floor still remembers the newest version, so a load that read an
// older snapshot before the expiry cannot install it afterwards.
const itemsLuaLib = `
local function bump_floor(fkey, v, ttl)
  local f = tonumber(redis.call('GET', fkey) or '0')
  if v > f then
    redis.call('SET', fkey, string.format('%d', v), 'PX', ttl)
  else
    redis.call('PEXPIRE', fkey, ttl)
  end
end
local function each(cmd, key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 999, to)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
`

// hasNotLua returns {} when the set is cold, else {1, i...} with the 0-based
// ARGV indexes of the items not in the set, ascending.
//
// KEYS: items, items:v. ARGV: items.
const hasNotLua = hasNotLuaLib + `
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
local out = {1}
local e = has_not(out, KEYS[1], 1)
if e then return e end
return out
`

// applyItemsLua returns 1 (applied), 0 (already included) or 2 (gap or cold:
// the set was dropped and the floor raised).
//
// KEYS: items, items:v, items:floor. ARGV: version, #add, floor ttl ms,
// add..., remove...
const applyItemsLua = itemsLuaLib + `
local ver = tonumber(ARGV[1])
local last_add = 3 + tonumber(ARGV[2])
local cur = redis.call('GET', KEYS[2])
if cur then
  cur = tonumber(cur)
  if cur >= ver then return 0 end
  if cur == ver - 1 then
    each('SADD', KEYS[1], 4, last_add)
    each('SREM', KEYS[1], last_add + 1, #ARGV)
    redis.call('SET', KEYS[2], ARGV[1], 'KEEPTTL')
    -- SADD may have (re)created an empty set without a TTL: give it v's.
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
    bump_floor(KEYS[3], ver, ARGV[3])
    return 1
  end
end
redis.call('UNLINK', KEYS[1], KEYS[2])
bump_floor(KEYS[3], ver, ARGV[3])
return 2
`

// KEYS: items, items:v, items:floor. ARGV: version, floor ttl ms.
const invalidateItemsLua = itemsLuaLib + `
redis.call('UNLINK', KEYS[1], KEYS[2])
bump_floor(KEYS[3], tonumber(ARGV[1]), ARGV[2])
return 1
`

// finishLoadLua returns 1 (installed), 0 (the same or a newer version is
// already installed), -1 (stale: below the floor) or -2 (the temp set
// expired).
//
// KEYS: temp, items, items:v, items:floor. ARGV: version, ttl ms, "1" when
// the load added members, floor ttl ms.
const finishLoadLua = itemsLuaLib + `
local ver = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[3])
if cur and tonumber(cur) >= ver then
  redis.call('UNLINK', KEYS[1])
  return 0
end
local f = tonumber(redis.call('GET', KEYS[4]) or '0')
if ver < f then
  redis.call('UNLINK', KEYS[1])
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- UNLINK first: RENAME would free a large old set synchronously.
  redis.call('UNLINK', KEYS[2])
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
elseif ARGV[3] == '1' then
  return -2
else
  redis.call('UNLINK', KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
bump_floor(KEYS[4], ver, ARGV[4])
return 1
`

// putPrincipalLua caches a principal unless the key holds the revocation
// tombstone: a lookup that read the token from Postgres just before it was
// revoked must not put it back (it would be accepted again until the TTL).
// KEYS: token key. ARGV: principal JSON, ttl ms, tombstone. Returns 1 when set.
const putPrincipalLua = `
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

// refundLua gives back one counted request whose query then failed: the
// counter and the pending delta go down by one (the delta may go negative if
// a sync batch already took the +1; Postgres then receives the -1), and the
// request's idempotency record, if any, is forgotten so that a retry with
// the key is counted afresh.
// KEYS: counter, pending[, idem record]. ARGV: period field.
const refundLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if KEYS[3] then redis.call('DEL', KEYS[3]) end
return 1
`

// # Usage sync (SyncQueue)
//
// Every sync script touches keys of ONE slot: per-user scripts only {u:<id>} keys,
// batch scripts only {sync} keys. Cross-slot steps are ordered so that a
// crash between them is recoverable (see the package comment).

// beginLua takes the oldest dirty users out of the index and records the
// batch that claims them, atomically: a user leaves the index only when a
// batch record names it, so a crash right after cannot orphan its pending
// deltas (the record's takeover re-marks it).
//
// KEYS: dirty, batches, record, batchinfo. ARGV: max, batch id, owner, now ms,
// lease-until ms. Returns "id,score,id,score,...", oldest first ("" when
// nothing is dirty): the record's users list itself. One ZPOPMIN and one
// string, not a ZRANGE, a ZREM and a table each way: Valkey serves no one
// else while this runs (for 100 users, p50 in SLOWLOG: 122–133 µs, was
// 154–211 µs).
const beginLua = `
local r = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
if #r == 0 then return '' end
local users = table.concat(r, ',')
redis.call('HSET', KEYS[3], 'owner', ARGV[3], 'state', 'claiming', 'claimedAt', ARGV[4],
  'users', users)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], (#r / 2) .. ',' .. r[2])
return users
`

// claimUserLua moves a user's pending deltas into in-flight entries of the
// batch (field "<batch>|<period>") and returns them {period, delta, ...}.
// Atomic per user: a request counted concurrently lands either in this batch
// or in the next pending hash, never in both, never in neither.
//
// KEYS: pending, inflight. ARGV: batch id.
const claimUserLua = inflightLuaLib + `
local kv = redis.call('HGETALL', KEYS[1])
if #kv == 0 then return kv end
local out = {}
for i = 1, #kv, 2 do
  if tonumber(kv[i + 1]) ~= 0 then
    redis.call('HINCRBY', KEYS[2], inflight_field(ARGV[1], kv[i]), kv[i + 1])
    out[#out + 1] = kv[i]
    out[#out + 1] = kv[i + 1]
  end
end
redis.call('DEL', KEYS[1])
return out
`

// revertUserLua moves a user's in-flight entries of a batch that was never
// sealed (so never applied) back to pending. Returns how many moved.
//
// KEYS: pending, inflight. ARGV: batch id.
const revertUserLua = inflightLuaLib + `
local kv = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #kv, 2 do
  local k = kv[i]
  local period = inflight_of_batch(k, ARGV[1])
  if period then
    redis.call('HINCRBY', KEYS[1], period, kv[i + 1])
    redis.call('HDEL', KEYS[2], k)
    n = n + 1
  end
end
return n
`

// sealLua freezes a claimed batch: its deltas are stored in the record and,
// from now on, any taker applies exactly these under the batch key. Only the
// owner may seal, and only once; 0 means the batch was taken over while it
// was being claimed (the caller must revert its claims and not apply).
//
// KEYS: record, batches. ARGV: owner, batch id, lease-until ms, deltas.
const sealLua = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'claiming' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sealed', 'deltas', ARGV[4])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
return 1
`

// renewLua extends the owner's lease; 0 when the batch is not the owner's
// (anymore).
//
// KEYS: record, batches. ARGV: owner, batch id, lease-until ms.
const renewLua = `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
return 1
`

// takeoverLua makes owner the owner of a batch whose lease has expired, or
// whose lease is live but whose owner is not alive (its liveness key is
// gone: it was killed, or it stopped), and returns {state, users, deltas};
// nil when the batch is not to be taken (its lease is live and its owner
// alive, or no longer the owner the caller saw dead) or is gone. Atomic, so
// two instances never take the same batch, and an owner that beats again
// keeps its batch.
//
// KEYS: record, batches, batchinfo, the liveness key of ARGV[5].
// ARGV: batch id, now ms, owner, lease-until ms, the owner the caller saw.
const takeoverLua = `
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return false end
if tonumber(s) > tonumber(ARGV[2]) then
  if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[5] then return false end
  if redis.call('EXISTS', KEYS[4]) == 1 then return false end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return false
end
redis.call('HSET', KEYS[1], 'owner', ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'state', 'users', 'deltas')
for i = 1, 3 do if not v[i] then v[i] = '' end end
return v
`

// aliveLua reads the liveness keys of the listed owners and returns their
// values in order (empty for a lapsed one), removing lapsed owners from the
// instances set. Atomic against a beat (which sets the key before it adds
// the owner), so an owner that is alive is never removed.
//
// KEYS: instances, then the liveness key of each ARGV. ARGV: owners.
const aliveLua = `
local out = {}
for i = 1, #ARGV do
  local v = redis.call('GET', KEYS[i + 1])
  if v then
    out[i] = v
  else
    redis.call('SREM', KEYS[1], ARGV[i])
    out[i] = ''
  end
end
return out
`

// finishLua forgets a batch record; deleting it is the last step of an ack
// or a revert, so while any step before it is unfinished the record is still
// there to be taken over.
//
// KEYS: record, batches, batchinfo. ARGV: batch id.
const finishLua = `
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`

// # Warmup lock (WarmState)

// extendLockLua resets the lock's TTL only if ARGV[1] (the token) holds it.
// KEYS: lock. ARGV: token, ttl ms. Returns 1 when extended, else 0.
const extendLockLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

// releaseLockLua deletes the lock only if ARGV[1] (the token) holds it, so a
// holder whose lock expired never releases someone else's.
// KEYS: lock. ARGV: token. Returns 1 when released, else 0.
const releaseLockLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

// swapLockLua hands the lock from token ARGV[1] to token ARGV[2] (resetting
// its TTL) only if ARGV[1] holds it: a compare-and-swap, so exactly one of
// two racing swaps from the same token wins.
// KEYS: lock. ARGV: from, to, ttl ms. Returns 1 when swapped, else 0.
const swapLockLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`

// admitLua admits a user's first warmup in one step: the queued status
// (ARGV[2]) and the lock (token ARGV[1]), both for ARGV[3] ms, only if the
// user has no status and the lock is free. KEYS: status, lock. Returns {1}
// when admitted; else {0, status} or {0} (no status: the lock is held),
// having changed nothing.
const admitLua = `
local cur = redis.call('GET', KEYS[1])
if cur then
  return {0, cur}
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {1}
`

// scripts holds every Lua script of the package, shared by a Cache and the
// SyncQueue and WarmState made from it. valkey-go's Lua runs EVALSHA and
// falls back to EVAL on NOSCRIPT. None is retried by the client on its own:
// a resent CheckAndCount could count twice, and the sync protocol's retries
// are explicit.
type scripts struct {
	// count is run by its hash with a builder (the hot path builds its
	// command without valkey.Lua's allocations).
	count                               script
	seedUsage, refund                   *valkey.Lua
	idemBegin, idemStore                *valkey.Lua
	hasNot                              *valkey.Lua
	applyItems, invalidateItems, finish *valkey.Lua
	putPrincipal                        *valkey.Lua

	syncBegin, syncSeal, syncRenew, syncTakeover, syncFinish, syncAlive *valkey.Lua
	// syncClaim and syncRevert run per user, many in one pipeline
	// (conn.evalMulti), and syncRevert alone too.
	syncClaim, syncRevert script

	lockExtend, lockRelease, lockSwap, admit *valkey.Lua
}

// allScripts is every script source, in the order LoadScripts loads them.
var allScripts = []string{
	countLua, seedUsageLua, refundLua, idemBeginLua, idemStoreLua, hasNotLua, applyItemsLua, invalidateItemsLua, finishLoadLua, putPrincipalLua,
	beginLua, claimUserLua, revertUserLua, sealLua, renewLua, takeoverLua, finishLua, aliveLua,
	extendLockLua, releaseLockLua, swapLockLua, admitLua,
}

func newScripts() *scripts {
	return &scripts{
		count:           newScript(countLua),
		idemBegin:       valkey.NewLuaScript(idemBeginLua),
		idemStore:       valkey.NewLuaScript(idemStoreLua),
		seedUsage:       valkey.NewLuaScript(seedUsageLua),
		refund:          valkey.NewLuaScript(refundLua),
		hasNot:          valkey.NewLuaScriptReadOnly(hasNotLua),
		applyItems:      valkey.NewLuaScript(applyItemsLua),
		invalidateItems: valkey.NewLuaScript(invalidateItemsLua),
		finish:          valkey.NewLuaScript(finishLoadLua),
		putPrincipal:    valkey.NewLuaScript(putPrincipalLua),

		syncBegin:    valkey.NewLuaScript(beginLua),
		syncClaim:    newScript(claimUserLua),
		syncRevert:   newScript(revertUserLua),
		syncSeal:     valkey.NewLuaScript(sealLua),
		syncRenew:    valkey.NewLuaScript(renewLua),
		syncTakeover: valkey.NewLuaScript(takeoverLua),
		syncFinish:   valkey.NewLuaScript(finishLua),
		syncAlive:    valkey.NewLuaScript(aliveLua),

		lockExtend:  valkey.NewLuaScript(extendLockLua),
		lockRelease: valkey.NewLuaScript(releaseLockLua),
		lockSwap:    valkey.NewLuaScript(swapLockLua),
		admit:       valkey.NewLuaScript(admitLua),
	}
}

// script is a script also run by its hash with the command builder, in
// pipelines of it (conn.evalMulti); its Lua runs it alone.
type script struct {
	*valkey.Lua
	src, sha string
}

func newScript(src string) script {
	sum := sha1.Sum([]byte(src))
	return script{Lua: valkey.NewLuaScript(src), src: src, sha: hex.EncodeToString(sum[:])}
}
