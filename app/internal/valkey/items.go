package valkey

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
)

const (
	// floorTTL is how long items:floor outlives its last bump. It only has to
	// outlast any load in flight (a load started before a change must finish
	// within this), not the cached set itself.
	floorTTL = 24 * time.Hour
	// loadTTL is the safety TTL of a load's temporary set, refreshed by every
	// Add: an abandoned load cleans itself up.
	loadTTL = 10 * time.Minute
	// loadChunk caps the members of one SADD, so one command never blocks the
	// server for long.
	loadChunk = 1000
)

// HasNot returns the items that are not in the user's cached set, in input
// order, each once. warm is false (and missing nil) when the set is not
// cached; the caller must then ask the system of record. One round trip.
func (c *Cache) HasNot(ctx context.Context, userID int64, items []string) (missing []string, warm bool, err error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	keys := []string{c.keys.Items(userID), c.keys.ItemsVersion(userID)}
	// Duplicates go to the server as they are (SMISMEMBER answers each);
	// deduplicating the usually short missing list here is cheaper than
	// deduplicating the whole input.
	idx, err := c.scripts.hasNot.Exec(ctx, c.client, keys, items).AsIntSlice()
	if err != nil {
		return nil, false, wrapErr("has not", err)
	}
	if len(idx) == 0 {
		return nil, false, nil
	}
	missing, err = missingAt(items, idx[1:])
	if err != nil {
		return nil, false, err
	}
	return missing, true, nil
}

// missingAt turns a has-not script's answer (ascending 0-based indexes of
// the items the set does not have) into the missing items, in input order,
// each once: HasNot's answer, and CountHasNot's.
func missingAt(items []string, idx []int64) ([]string, error) {
	missing := make([]string, 0, len(idx))
	var seen map[string]struct{}
	if len(idx) > 1 {
		seen = make(map[string]struct{}, len(idx))
	}
	for _, i := range idx {
		if i < 0 || i >= int64(len(items)) {
			return nil, fmt.Errorf("valkey has not: %w: index %d of %d", errUnexpected, i, len(items))
		}
		it := items[i]
		if seen != nil {
			if _, dup := seen[it]; dup {
				continue
			}
			seen[it] = struct{}{}
		}
		missing = append(missing, it)
	}
	return missing, nil
}

// ApplyItems mirrors a committed change of the user's set whose version is
// version (the previous version + 1). When the cache holds version-1 the
// change is applied; when it already holds version or newer nothing happens;
// otherwise (cold, or a gap) the cached set is dropped and the floor raised to
// version, so no load of an older snapshot can install it afterwards.
func (c *Cache) ApplyItems(ctx context.Context, userID int64, version int64, add, remove []string) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	keys := []string{c.keys.Items(userID), c.keys.ItemsVersion(userID), c.keys.ItemsFloor(userID)}
	args := make([]string, 0, 3+len(add)+len(remove))
	args = append(args, strconv.FormatInt(version, 10), strconv.Itoa(len(add)), strconv.FormatInt(floorTTL.Milliseconds(), 10))
	args = append(args, add...)
	args = append(args, remove...)
	if err := c.scripts.applyItems.Exec(ctx, c.client, keys, args).Error(); err != nil {
		return wrapErr("apply items", err)
	}
	return nil
}

// InvalidateItems drops the user's cached set and makes sure no snapshot
// older than atLeastVersion is installed afterwards.
func (c *Cache) InvalidateItems(ctx context.Context, userID int64, atLeastVersion int64) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	keys := []string{c.keys.Items(userID), c.keys.ItemsVersion(userID), c.keys.ItemsFloor(userID)}
	args := []string{strconv.FormatInt(atLeastVersion, 10), strconv.FormatInt(floorTTL.Milliseconds(), 10)}
	if err := c.scripts.invalidateItems.Exec(ctx, c.client, keys, args).Error(); err != nil {
		return wrapErr("invalidate items", err)
	}
	return nil
}

// ItemsWarm returns the version of the user's cached set; warm is false when
// the set is not cached.
func (c *Cache) ItemsWarm(ctx context.Context, userID int64) (version int64, warm bool, err error) {
	return c.getInt(ctx, "items version", c.keys.ItemsVersion(userID))
}

// ItemsLoad loads a snapshot of a user's set into a temporary key in chunks
// and installs it atomically with Finish. It is not safe for concurrent use.
type ItemsLoad struct {
	c                       *Cache
	userID                  int64
	temp, items, ver, floor string
	added                   bool
}

// BeginItemsLoad starts loading a snapshot of the user's set. Read the
// snapshot and its version from the system of record in one transaction,
// Add it in chunks, then Finish with that version (or Abort).
func (c *Cache) BeginItemsLoad(userID int64) *ItemsLoad {
	return &ItemsLoad{
		c:      c,
		userID: userID,
		temp:   c.keys.ItemsLoad(userID, rand.Text()),
		items:  c.keys.Items(userID),
		ver:    c.keys.ItemsVersion(userID),
		floor:  c.keys.ItemsFloor(userID),
	}
}

// Add adds a chunk of the snapshot to the temporary set, in SADDs of at most
// 1,000 members sent as one pipeline, and refreshes the temporary set's safety
// TTL.
func (l *ItemsLoad) Add(ctx context.Context, chunk []string) error {
	if len(chunk) == 0 {
		return nil
	}
	ctx, cancel := l.c.opCtx(ctx)
	defer cancel()
	b := l.c.client.B()
	cmds := make(valkey.Commands, 0, (len(chunk)+loadChunk-1)/loadChunk+1)
	for i := 0; i < len(chunk); i += loadChunk {
		cmds = append(cmds, b.Sadd().Key(l.temp).Member(chunk[i:min(i+loadChunk, len(chunk))]...).Build())
	}
	cmds = append(cmds, b.Pexpire().Key(l.temp).Milliseconds(loadTTL.Milliseconds()).Build())
	for _, r := range l.c.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return wrapErr("load items", err)
		}
	}
	l.added = true
	return nil
}

// Finish installs the loaded snapshot of version as the user's cached set,
// with ttl. It returns an error wrapping domain.ErrStaleSnapshot when a change
// newer than the snapshot reached the cache meanwhile (or the temporary set
// expired); the caller may load again. When the cache already holds version or
// newer, the snapshot is dropped and Finish returns nil.
func (l *ItemsLoad) Finish(ctx context.Context, version int64, ttl time.Duration) error {
	ctx, cancel := l.c.opCtx(ctx)
	defer cancel()
	added := "0"
	if l.added {
		added = "1"
	}
	keys := []string{l.temp, l.items, l.ver, l.floor}
	args := []string{strconv.FormatInt(version, 10), strconv.FormatInt(ttlMillis(ttl), 10), added, strconv.FormatInt(floorTTL.Milliseconds(), 10)}
	res, err := l.c.scripts.finish.Exec(ctx, l.c.client, keys, args).AsInt64()
	if err != nil {
		return wrapErr("finish items load", err)
	}
	switch res {
	case 1, 0:
		return nil
	case -1:
		return fmt.Errorf("valkey finish items load of user %d at version %d: %w", l.userID, version, domain.ErrStaleSnapshot)
	case -2:
		return fmt.Errorf("valkey finish items load of user %d: temporary set expired: %w", l.userID, domain.ErrStaleSnapshot)
	}
	return fmt.Errorf("valkey finish items load: %w: %d", errUnexpected, res)
}

// Abort drops the temporary set.
func (l *ItemsLoad) Abort(ctx context.Context) error {
	ctx, cancel := l.c.opCtx(ctx)
	defer cancel()
	if err := l.c.client.Do(ctx, l.c.client.B().Unlink().Key(l.temp).Build()).Error(); err != nil {
		return wrapErr("abort items load", err)
	}
	return nil
}
