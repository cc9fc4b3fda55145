package valkey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/warmup"
)

// WarmState is warmup's state shared by every instance: each user's warmup
// status (warmup.StatusStore) and the per-user warmup lock that makes one
// instance at a time warm a user (warmup.Locker). Its keys, WarmupStatus and
// WarmupLock, carry the user's hash tag, so Valkey Cluster works unchanged.
// It is safe for concurrent use.
type WarmState struct{ conn }

var (
	_ warmup.StatusStore = (*WarmState)(nil)
	_ warmup.Locker      = (*WarmState)(nil)
	_ warmup.Admitter    = (*WarmState)(nil)
)

// WarmState returns warmup's shared state on the Cache's client, keys and
// deadline. The Cache keeps ownership of the client.
func (c *Cache) WarmState() *WarmState { return &WarmState{conn: c.conn} }

// Admit stores st and takes the lock with token, both for ttl, only if the
// user has no status and the lock is free, in one script call; otherwise it
// returns the current status (found false: none, the lock is held).
func (s *WarmState) Admit(ctx context.Context, userID int64, token string, st warmup.Status, ttl time.Duration) (admitted bool, cur warmup.Status, found bool, err error) {
	b, err := json.Marshal(st)
	if err != nil {
		return false, warmup.Status{}, false, fmt.Errorf("valkey warm state admit: encode: %w", err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	reply, err := s.scripts.admit.Exec(ctx, s.client, []string{s.keys.WarmupStatus(userID), s.keys.WarmupLock(userID)},
		[]string{token, string(b), strconv.FormatInt(ttlMillis(ttl), 10)}).ToArray()
	if err != nil {
		return false, warmup.Status{}, false, wrapWarm("admit", err)
	}
	if len(reply) == 0 {
		return false, warmup.Status{}, false, errors.New("valkey warm state admit: empty reply")
	}
	if n, err := reply[0].AsInt64(); err != nil || n == 1 {
		return err == nil, warmup.Status{}, false, err
	}
	if len(reply) < 2 {
		return false, warmup.Status{}, false, nil
	}
	raw, err := reply[1].AsBytes()
	if err != nil {
		return false, warmup.Status{}, false, fmt.Errorf("valkey warm state admit: %w", err)
	}
	cur, err = decodeStatus(raw)
	return false, cur, err == nil, err
}

// decodeStatus is a stored status.
func decodeStatus(b []byte) (warmup.Status, error) {
	var st warmup.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return warmup.Status{}, fmt.Errorf("valkey warm state: decode status: %w", err)
	}
	if st.Parts == nil {
		st.Parts = map[string]warmup.PartStatus{}
	}
	return st, nil
}

// Get returns the user's status; found is false when there is none.
func (s *WarmState) Get(ctx context.Context, userID int64) (warmup.Status, bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	b, err := s.client.Do(ctx, s.client.B().Get().Key(s.keys.WarmupStatus(userID)).Build()).AsBytes()
	if valkey.IsValkeyNil(err) {
		return warmup.Status{}, false, nil
	}
	if err != nil {
		return warmup.Status{}, false, wrapWarm("get status", err)
	}
	st, err := decodeStatus(b)
	return st, err == nil, err
}

// Put stores the user's status for ttl.
func (s *WarmState) Put(ctx context.Context, userID int64, st warmup.Status, ttl time.Duration) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("valkey warm state put status: encode: %w", err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	cmd := s.client.B().Set().Key(s.keys.WarmupStatus(userID)).Value(valkey.BinaryString(b)).PxMilliseconds(ttlMillis(ttl)).Build()
	if err := s.client.Do(ctx, cmd).Error(); err != nil {
		return wrapWarm("put status", err)
	}
	return nil
}

// Delete removes the user's status.
func (s *WarmState) Delete(ctx context.Context, userID int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Del().Key(s.keys.WarmupStatus(userID)).Build()).Error(); err != nil {
		return wrapWarm("delete status", err)
	}
	return nil
}

// Acquire takes the user's lock with token for ttl unless someone holds it.
func (s *WarmState) Acquire(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	cmd := s.client.B().Set().Key(s.keys.WarmupLock(userID)).Value(token).Nx().PxMilliseconds(ttlMillis(ttl)).Build()
	err := s.client.Do(ctx, cmd).Error()
	switch {
	case valkey.IsValkeyNil(err):
		return false, nil
	case err != nil:
		return false, wrapWarm("acquire lock", err)
	}
	return true, nil
}

// Extend resets the lock's ttl if token holds it.
func (s *WarmState) Extend(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.scripts.lockExtend.Exec(ctx, s.client, []string{s.keys.WarmupLock(userID)}, []string{token, strconv.FormatInt(ttlMillis(ttl), 10)}).AsInt64()
	if err != nil {
		return false, wrapWarm("extend lock", err)
	}
	return n == 1, nil
}

// Release drops the lock if token holds it; false when it did not (expired,
// or taken by someone else since).
func (s *WarmState) Release(ctx context.Context, userID int64, token string) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.scripts.lockRelease.Exec(ctx, s.client, []string{s.keys.WarmupLock(userID)}, []string{token}).AsInt64()
	if err != nil {
		return false, wrapWarm("release lock", err)
	}
	return n == 1, nil
}

// Swap hands the lock from token from to token to, resetting its ttl, only if
// from holds it.
func (s *WarmState) Swap(ctx context.Context, userID int64, from, to string, ttl time.Duration) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	n, err := s.scripts.lockSwap.Exec(ctx, s.client, []string{s.keys.WarmupLock(userID)}, []string{from, to, strconv.FormatInt(ttlMillis(ttl), 10)}).AsInt64()
	if err != nil {
		return false, wrapWarm("swap lock", err)
	}
	return n == 1, nil
}

// Holder returns the token that holds the user's lock, if any.
func (s *WarmState) Holder(ctx context.Context, userID int64) (string, bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tok, err := s.client.Do(ctx, s.client.B().Get().Key(s.keys.WarmupLock(userID)).Build()).ToString()
	switch {
	case valkey.IsValkeyNil(err):
		return "", false, nil
	case err != nil:
		return "", false, wrapWarm("read lock", err)
	}
	return tok, true, nil
}

// wrapWarm names a warm state operation.
func wrapWarm(op string, err error) error { return wrapErr("warm state "+op, err) }
