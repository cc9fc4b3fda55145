package valkeysync

import valkey "github.com/valkey-io/valkey-go"

// Every script touches keys of ONE slot: per-user scripts only {u:<id>} keys,
// batch scripts only {sync} keys. Cross-slot steps are ordered so that a
// crash between them is recoverable (see the package comment).

// beginLua takes the oldest dirty users out of the index and records the
// batch that claims them, atomically: a user leaves the index only when a
// batch record names it, so a crash right after cannot orphan its pending
// deltas (the record's takeover re-marks it).
//
// KEYS: dirty, batches, record, batchinfo. ARGV: max, batch id, owner, now ms,
// lease-until ms. Returns {id, score, id, score, ...}, oldest first.
const beginLua = `
local r = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #r == 0 then return r end
local ids = {}
for i = 1, #r, 2 do ids[#ids + 1] = r[i] end
for i = 1, #ids, 1000 do
  redis.call('ZREM', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('HSET', KEYS[3], 'owner', ARGV[3], 'state', 'claiming', 'claimedAt', ARGV[4],
  'users', table.concat(r, ','))
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], #ids .. ',' .. r[2])
return r
`

// claimUserLua moves a user's pending deltas into in-flight entries of the
// batch (field "<batch>|<period>") and returns them {period, delta, ...}.
// Atomic per user: a request counted concurrently lands either in this batch
// or in the next pending hash, never in both, never in neither.
//
// KEYS: pending, inflight. ARGV: batch id.
const claimUserLua = `
local kv = redis.call('HGETALL', KEYS[1])
if #kv == 0 then return kv end
local out = {}
for i = 1, #kv, 2 do
  if tonumber(kv[i + 1]) ~= 0 then
    redis.call('HINCRBY', KEYS[2], ARGV[1] .. '|' .. kv[i], kv[i + 1])
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
const revertUserLua = `
local p = ARGV[1] .. '|'
local kv = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #kv, 2 do
  local k = kv[i]
  if string.sub(k, 1, #p) == p then
    redis.call('HINCRBY', KEYS[1], string.sub(k, #p + 1), kv[i + 1])
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

// takeoverLua makes owner the owner of a batch whose lease has expired and
// returns {state, users, deltas}, or nil when the lease is live again or the
// batch is gone. Atomic, so two instances never take the same expiry.
//
// KEYS: record, batches, batchinfo. ARGV: batch id, now ms, owner, lease-until ms.
const takeoverLua = `
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return false end
if tonumber(s) > tonumber(ARGV[2]) then return false end
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

// scripts holds one Queue's scripts (valkey-go caches each script's SHA in
// its *Lua). None is retryable by the client: valkey-go must not resend one
// on its own after an ambiguous failure; the protocol's retries are explicit.
type scripts struct {
	begin, claim, revert, seal, renew, takeover, finish *valkey.Lua
}

func newScripts() scripts {
	return scripts{
		begin:    valkey.NewLuaScript(beginLua),
		claim:    valkey.NewLuaScript(claimUserLua),
		revert:   valkey.NewLuaScript(revertUserLua),
		seal:     valkey.NewLuaScript(sealLua),
		renew:    valkey.NewLuaScript(renewLua),
		takeover: valkey.NewLuaScript(takeoverLua),
		finish:   valkey.NewLuaScript(finishLua),
	}
}
