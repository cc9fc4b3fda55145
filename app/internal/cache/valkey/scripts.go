package valkey

import (
	"crypto/sha1"
	"encoding/hex"

	valkey "github.com/valkey-io/valkey-go"
)

// checkAndCountLua returns {outcome, used}; the outcome codes equal the
// Outcome values.
//
// KEYS: counter, pending. ARGV: limit, period field, ttl ms.
const checkAndCountLua = `
local cur = redis.call('GET', KEYS[1])
if not cur then return {3, 0} end
cur = tonumber(cur)
if cur >= tonumber(ARGV[1]) then return {2, cur} end
local n = redis.call('INCR', KEYS[1])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, n}
`

// seedUsageLua creates the counter as persisted + the period's deltas not yet
// in Postgres (pending, plus in-flight entries "<batch>|<period>" claimed by a
// sync batch of valkeysync), only if it does not exist: a live counter
// (counted by this or another instance) is always more current than a
// Postgres read. In-flight fields are "<batch>|<period>" (see valkeysync).
//
// KEYS: counter, pending, inflight. ARGV: persisted, period field, ttl ms.
const seedUsageLua = `
local p = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local suffix = '|' .. ARGV[2]
local kv = redis.call('HGETALL', KEYS[3])
for i = 1, #kv, 2 do
  if string.sub(kv[i], -#suffix) == suffix then p = p + tonumber(kv[i + 1]) end
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
const hasNotLua = `
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
local out = {1}
local n = #ARGV
local i = 1
while i <= n do
  local j = math.min(i + 999, n)
  local r = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV, i, j))
  for k = 1, #r do
    if r[k] == 0 then out[#out + 1] = i + k - 2 end
  end
  i = j + 1
end
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

// scripts holds the Lua scripts of one Cache. valkey-go's Lua runs EVALSHA and
// falls back to EVAL on NOSCRIPT. None is retryable: a retried
// CheckAndCount could count twice.
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
// a sync batch already took the +1; Postgres then receives the -1).
// KEYS: counter, pending. ARGV: period field.
const refundLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
return 1
`

type scripts struct {
	// checkAndCountSHA is for pipelining the count with Config.AfterCount,
	// which valkey.Lua cannot do.
	checkAndCountSHA                    string
	checkAndCount, seedUsage            *valkey.Lua
	hasNot                              *valkey.Lua
	applyItems, invalidateItems, finish *valkey.Lua
	putPrincipal, refund                *valkey.Lua
}

func newScripts() scripts {
	sum := sha1.Sum([]byte(checkAndCountLua))
	return scripts{
		checkAndCountSHA: hex.EncodeToString(sum[:]),
		checkAndCount:    valkey.NewLuaScript(checkAndCountLua),
		seedUsage:        valkey.NewLuaScript(seedUsageLua),
		hasNot:           valkey.NewLuaScriptReadOnly(hasNotLua),
		applyItems:       valkey.NewLuaScript(applyItemsLua),
		invalidateItems:  valkey.NewLuaScript(invalidateItemsLua),
		finish:           valkey.NewLuaScript(finishLoadLua),
		putPrincipal:     valkey.NewLuaScript(putPrincipalLua),
		refund:           valkey.NewLuaScript(refundLua),
	}
}

func (scripts) sources() []string {
	return []string{checkAndCountLua, seedUsageLua, hasNotLua, applyItemsLua, invalidateItemsLua, finishLoadLua, putPrincipalLua, refundLua}
}
