// Package warmstate keeps warmup state in Valkey, where every instance sees
// it: each user's warmup status (warmup.StatusStore) and the per-user warmup
// lock that makes one instance at a time warm a user (warmup.Locker).
//
// # Keys
//
//	<prefix>:{u:<id>}:warmup        status JSON (warmup.Status), with a TTL
//	<prefix>:{u:<id>}:warmup:lock   lock token, SET NX PX; released by compare-and-delete
//
// The {u:<id>} hash tag puts them in the slot of the user's other keys, so
// Valkey Cluster works unchanged.
package warmstate

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	cachevalkey "github.com/warmpath/warmpath/app/internal/cache/valkey"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// Defaults.
const (
	DefaultPrefix    = "wp"
	DefaultOpTimeout = 500 * time.Millisecond
)

// extendLua resets the lock's TTL only if ARGV[1] (the token) holds it.
// KEYS: lock. ARGV: token, ttl ms. Returns 1 when extended, else 0.
const extendLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

// releaseLua deletes the lock only if ARGV[1] (the token) holds it, so a
// holder whose lock expired never releases someone else's.
// KEYS: lock. ARGV: token. Returns 1 when released, else 0.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

// swapLua hands the lock from token ARGV[1] to token ARGV[2] (resetting its
// TTL) only if ARGV[1] holds it: a compare-and-swap, so exactly one of two
// racing swaps from the same token wins.
// KEYS: lock. ARGV: from, to, ttl ms. Returns 1 when swapped, else 0.
const swapLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`

// Store is the Valkey StatusStore and Locker of warmup. It is safe for
// concurrent use.
type Store struct {
	client    valkey.Client
	prefix    string
	opTimeout time.Duration
	extend    *valkey.Lua
	release   *valkey.Lua
	swap      *valkey.Lua
}

var (
	_ warmup.StatusStore = (*Store)(nil)
	_ warmup.Locker      = (*Store)(nil)
)

// New returns a Store on client whose keys start with prefix (DefaultPrefix
// when empty). It does not own the client.
func New(client valkey.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{
		client:    client,
		prefix:    prefix,
		opTimeout: DefaultOpTimeout,
		extend:    valkey.NewLuaScript(extendLua),
		release:   valkey.NewLuaScript(releaseLua),
		swap:      valkey.NewLuaScript(swapLua),
	}
}

// StatusKey is the key of the user's warmup status.
func (s *Store) StatusKey(userID int64) string {
	return s.prefix + ":{u:" + strconv.FormatInt(userID, 10) + "}:warmup"
}

// LockKey is the key of the user's warmup lock.
func (s *Store) LockKey(userID int64) string { return s.StatusKey(userID) + ":lock" }

// Get returns the user's status; found is false when there is none.
func (s *Store) Get(ctx context.Context, userID int64) (warmup.Status, bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	b, err := s.client.Do(ctx, s.client.B().Get().Key(s.StatusKey(userID)).Build()).AsBytes()
	if valkey.IsValkeyNil(err) {
		return warmup.Status{}, false, nil
	}
	if err != nil {
		return warmup.Status{}, false, wrapErr("get status", err)
	}
	var st warmup.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return warmup.Status{}, false, fmt.Errorf("warmstate get status: decode: %w", err)
	}
	if st.Parts == nil {
		st.Parts = map[string]warmup.PartStatus{}
	}
	return st, true, nil
}

// Put stores the user's status for ttl.
func (s *Store) Put(ctx context.Context, userID int64, st warmup.Status, ttl time.Duration) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("warmstate put status: encode: %w", err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	cmd := s.client.B().Set().Key(s.StatusKey(userID)).Value(valkey.BinaryString(b)).PxMilliseconds(millis(ttl)).Build()
	if err := s.client.Do(ctx, cmd).Error(); err != nil {
		return wrapErr("put status", err)
	}
	return nil
}

// Delete removes the user's status.
func (s *Store) Delete(ctx context.Context, userID int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Del().Key(s.StatusKey(userID)).Build()).Error(); err != nil {
		return wrapErr("delete status", err)
	}
	return nil
}

// Acquire takes the user's lock with token for ttl unless someone holds it.
func (s *Store) Acquire(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	cmd := s.client.B().Set().Key(s.LockKey(userID)).Value(token).Nx().PxMilliseconds(millis(ttl)).Build()
	err := s.client.Do(ctx, cmd).Error()
	switch {
	case valkey.IsValkeyNil(err):
		return false, nil
	case err != nil:
		return false, wrapErr("acquire lock", err)
	}
	return true, nil
}

// Extend resets the lock's ttl if token holds it.
func (s *Store) Extend(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.extend.Exec(ctx, s.client, []string{s.LockKey(userID)}, []string{token, strconv.FormatInt(millis(ttl), 10)}).AsInt64()
	if err != nil {
		return false, wrapErr("extend lock", err)
	}
	return n == 1, nil
}

// Release drops the lock if token holds it; false when it did not (expired,
// or taken by someone else since).
func (s *Store) Release(ctx context.Context, userID int64, token string) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.release.Exec(ctx, s.client, []string{s.LockKey(userID)}, []string{token}).AsInt64()
	if err != nil {
		return false, wrapErr("release lock", err)
	}
	return n == 1, nil
}

// Swap hands the lock from token from to token to, resetting its ttl, only if
// from holds it.
func (s *Store) Swap(ctx context.Context, userID int64, from, to string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.swap.Exec(ctx, s.client, []string{s.LockKey(userID)}, []string{from, to, strconv.FormatInt(millis(ttl), 10)}).AsInt64()
	if err != nil {
		return false, wrapErr("swap lock", err)
	}
	return n == 1, nil
}

// Holder returns the token that holds the user's lock, if any.
func (s *Store) Holder(ctx context.Context, userID int64) (string, bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tok, err := s.client.Do(ctx, s.client.B().Get().Key(s.LockKey(userID)).Build()).ToString()
	switch {
	case valkey.IsValkeyNil(err):
		return "", false, nil
	case err != nil:
		return "", false, wrapErr("read lock", err)
	}
	return tok, true, nil
}

// opCtx bounds a call by opTimeout unless ctx already ends sooner.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.opTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opTimeout)
}

// millis is a TTL in whole milliseconds, at least 1 (PX 0 is an error).
func millis(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// wrapErr names the operation; anything but a server reply (network, timeout,
// closed client) also wraps domain.ErrUnavailable.
func wrapErr(op string, err error) error { return cachevalkey.WrapErr("warmstate "+op, err) }
