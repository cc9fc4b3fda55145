package valkey

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Keys builds every Valkey key of warmpath from one prefix (see the package
// comment for the scheme). It is the only place in the tree that spells a
// key; tests build theirs through it too. (Cleanups that remove a whole
// prefix match "<prefix>:*" and build no key.)
type Keys struct{ prefix string }

// NewKeys returns the key builder of prefix (DefaultPrefix when empty).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix is the prefix every key starts with (followed by ':').
func (k Keys) Prefix() string { return k.prefix }

// Counter is the user's usage counter of the period starting at periodStart.
func (k Keys) Counter(userID int64, periodStart time.Time) string {
	return k.counter(userID, PeriodField(periodStart))
}

// counter is Counter for a period already formatted (the hot path formats
// it once for the key and the script's arguments).
func (k Keys) counter(userID int64, period string) string { return k.user(userID, "use", period) }

// Pending is the user's hash of deltas not yet claimed by a sync batch
// (field: PeriodField).
func (k Keys) Pending(userID int64) string { return k.user(userID, partPending) }

// Inflight is the user's hash of deltas claimed by sync batches (field:
// inflightField).
func (k Keys) Inflight(userID int64) string { return k.user(userID, partInflight) }

// Applied is the user's hash of counts applied per sender: field
// "<instance>:<epoch>" → how many of that instance's counts in that epoch
// the count script applied (see outcomes).
func (k Keys) Applied(userID int64) string { return k.user(userID, "applied") }

// Idem is the record of one of the user's idempotency keys (digest: the
// hex digest of the client's key, domain.IdemKey.Key).
func (k Keys) Idem(userID int64, digest string) string { return k.user(userID, "idem", digest) }

// The parts of the per-user keys that Sweep recognizes (parseUser).
const (
	partPending  = "pending"
	partInflight = "inflight"
)

// Items is the user's cached item set.
func (k Keys) Items(userID int64) string { return k.user(userID, "items") }

// ItemsVersion is the version of the user's cached set ("warm" when present).
func (k Keys) ItemsVersion(userID int64) string { return k.user(userID, "items", "v") }

// ItemsFloor is the lowest snapshot version a load may still install.
func (k Keys) ItemsFloor(userID int64) string { return k.user(userID, "items", "floor") }

// ItemsLoad is a temporary set of one snapshot load (tag: random; "*" makes
// a SCAN/KEYS pattern of all of them).
func (k Keys) ItemsLoad(userID int64, tag string) string {
	return k.user(userID, "items", "load", tag)
}

// WarmupStatus is the user's warmup status.
func (k Keys) WarmupStatus(userID int64) string { return k.user(userID, "warmup") }

// WarmupLock is the user's warmup lock.
func (k Keys) WarmupLock(userID int64) string { return k.user(userID, "warmup", "lock") }

// Token is the cached principal (or revocation tombstone) of a token hash.
func (k Keys) Token(hash domain.TokenHash) string {
	const tok = ":tok:"
	b := make([]byte, len(k.prefix)+len(tok)+hex.EncodedLen(len(hash)))
	n := copy(b, k.prefix)
	n += copy(b[n:], tok)
	hex.Encode(b[n:], hash[:])
	return string(b)
}

// SyncDirty is the sorted set of users with pending usage (score: unix ms
// when the user first became dirty).
func (k Keys) SyncDirty() string { return k.prefix + ":{sync}:dirty" }

// SyncBatches is the sorted set of open sync batches (score: lease deadline).
func (k Keys) SyncBatches() string { return k.prefix + ":{sync}:batches" }

// SyncBatchInfo is the hash batch id → "<users>,<oldest dirty ms>".
func (k Keys) SyncBatchInfo() string { return k.prefix + ":{sync}:batchinfo" }

// SyncBatch is the record of one sync batch.
func (k Keys) SyncBatch(id string) string { return k.prefix + ":{sync}:batch:" + id }

// SyncAlive is the liveness key of one sync instance (a batch owner): it
// exists while the instance runs, with a short TTL that the instance's sync
// loop keeps refreshing; its value is the instance's state
// (usagesync.Liveness).
func (k Keys) SyncAlive(owner string) string { return k.prefix + ":{sync}:alive:" + owner }

// SyncInstances is the set of owners that have a liveness key (or had one:
// members whose key lapsed are pruned when read), so that an instance finds
// the others without scanning the keyspace.
func (k Keys) SyncInstances() string { return k.prefix + ":{sync}:instances" }

// user builds <prefix>:{u:<id>}[:<part>...] in one allocation (it is on
// every request's path).
func (k Keys) user(userID int64, parts ...string) string {
	n := len(k.prefix) + 24
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, k.prefix...)
	b = append(b, userTag...)
	b = strconv.AppendInt(b, userID, 10)
	b = append(b, '}')
	for _, p := range parts {
		b = append(b, ':')
		b = append(b, p...)
	}
	return string(b)
}

const userTag = ":{u:"

// sweepPatterns match the per-user keys Sweep looks at, pending and
// in-flight hashes only: SCAN filters on the server, so the other per-user
// keys (item sets, idempotency records, …) are never sent to the sweep.
func (k Keys) sweepPatterns() []string {
	return []string{k.prefix + userTag + "*}:" + partPending, k.prefix + userTag + "*}:" + partInflight}
}

// parseUser splits a per-user key into the user id and what follows "}:"
// ("pending", "items:v", …).
func (k Keys) parseUser(key string) (userID int64, part string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.prefix+userTag)
	if !ok {
		return 0, "", false
	}
	idStr, part, ok := strings.Cut(rest, "}:")
	if !ok {
		return 0, "", false
	}
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return id, part, true
}

// PeriodField formats the UTC start of a usage period as YYYYMMDD: the suffix
// of the counter key and the field of the pending hash.
func PeriodField(periodStart time.Time) string {
	return periodStart.UTC().Format(periodLayout)
}

const periodLayout = "20060102"

func parsePeriod(f string) (time.Time, error) {
	t, err := time.ParseInLocation(periodLayout, f, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad period field %q: %w", f, err)
	}
	return t, nil
}

// inflightSep separates the batch id from the period in an in-flight field.
// Batch ids never contain it (newBatchID).
const inflightSep = "|"

// inflightField is the field of the in-flight hash that holds a user's delta
// of one period claimed by one batch: "<batch>|<period>". The Lua scripts
// build and match it with inflightLuaLib, made from the same separator.
func inflightField(batch, period string) string { return batch + inflightSep + period }

// inflightBatch returns the batch id of an in-flight field.
func inflightBatch(field string) (batch string, ok bool) {
	batch, _, ok = strings.Cut(field, inflightSep)
	return batch, ok
}

// inflightLuaLib is inflightField (and its matchers) for the scripts.
const inflightLuaLib = `
local function inflight_field(batch, period) return batch .. '` + inflightSep + `' .. period end
local function inflight_of_batch(field, batch)
  local p = batch .. '` + inflightSep + `'
  if string.sub(field, 1, #p) == p then return string.sub(field, #p + 1) end
  return nil
end
local function inflight_of_period(field, period)
  local s = '` + inflightSep + `' .. period
  return string.sub(field, -#s) == s
end
`
