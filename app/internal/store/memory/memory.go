// Package memory is the embedded system of record: the whole store.Store
// contract in process memory, for first runs with nothing installed and for
// tests. It follows the Postgres store's semantics exactly (the same contract
// suite runs against both) but persists nothing.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store"
)

// DefaultChunkSize is the LoadItems chunk size used when the caller passes
// chunkSize < 1.
const DefaultChunkSize = 1024

// Store implements store.Store in memory. It is safe for concurrent use: one
// mutex guards everything, which also makes every method atomic (the
// transactions of the Postgres store).
type Store struct {
	now func() time.Time

	mu         sync.Mutex
	plans      map[string]domain.Plan
	users      map[int64]*user
	tokens     map[int64]*domain.Token
	tokenIDs   map[domain.TokenHash]int64
	usage      map[usageKey]int64
	batches    map[string]struct{}
	subjects   map[subjectKey]int64
	lastUserID int64
	lastToken  int64
	// activity orders RecentlyActiveUsers: every applied batch takes the next
	// value and stamps its users with it (Postgres stamps them with the
	// batch's now(), equal within a batch, later for later batches).
	activity int64
}

type user struct {
	domain.User
	items      map[string]struct{}
	version    int64
	lastActive int64 // 0: never active
}

type usageKey struct {
	user int64
	day  time.Time
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		now:      time.Now,
		plans:    map[string]domain.Plan{},
		users:    map[int64]*user{},
		tokens:   map[int64]*domain.Token{},
		tokenIDs: map[domain.TokenHash]int64{},
		usage:    map[usageKey]int64{},
		batches:  map[string]struct{}{},
		subjects: map[subjectKey]int64{},
	}
}

// Warm does nothing: memory is always warm. It exists so the store can be
// wired like the Postgres one.
func (s *Store) Warm(ctx context.Context) error { return ctx.Err() }

// Ping reports the context's error, if any: memory is always reachable.
func (s *Store) Ping(ctx context.Context) error { return ctx.Err() }

// Close does nothing; the data goes when the process does.
func (s *Store) Close() {}

// UpsertPlans creates or updates plans by name. A name given twice keeps its
// last entry.
func (s *Store) UpsertPlans(ctx context.Context, plans []domain.Plan) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("upsert plans: %w", err)
	}
	for _, p := range plans {
		if p.Name == "" {
			return fmt.Errorf("upsert plans: empty plan name")
		}
		if !p.Period.Valid() {
			return fmt.Errorf("upsert plans: plan %q: invalid period %q", p.Name, p.Period)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range plans {
		s.plans[p.Name] = p
	}
	return nil
}

// Plans lists all plans sorted by name.
func (s *Store) Plans(ctx context.Context) ([]domain.Plan, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]domain.Plan, 0, len(s.plans))
	for _, p := range s.plans {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b domain.Plan) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// CreateUser creates a user on an existing plan (domain.ErrUnknownPlan
// otherwise).
func (s *Store) CreateUser(ctx context.Context, name, plan string, quotaOverride *int64) (domain.User, error) {
	if err := ctx.Err(); err != nil {
		return domain.User{}, fmt.Errorf("create user: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.plans[plan]; !ok {
		return domain.User{}, fmt.Errorf("create user: plan %q: %w", plan, domain.ErrUnknownPlan)
	}
	s.lastUserID++
	u := &user{
		User: domain.User{
			ID:            s.lastUserID,
			Name:          name,
			Plan:          plan,
			QuotaOverride: clone(quotaOverride),
			CreatedAt:     s.stamp(),
		},
		items: map[string]struct{}{},
	}
	s.users[u.ID] = u
	return u.public(), nil
}

// User returns one user or domain.ErrNotFound.
func (s *Store) User(ctx context.Context, id int64) (domain.User, error) {
	if err := ctx.Err(); err != nil {
		return domain.User{}, fmt.Errorf("get user %d: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return domain.User{}, fmt.Errorf("get user %d: %w", id, domain.ErrNotFound)
	}
	return u.public(), nil
}

// CreateToken stores a token hash for an existing user (domain.ErrNotFound
// otherwise; domain.ErrConflict when the hash already exists). Times are
// kept at microsecond precision, like Postgres.
func (s *Store) CreateToken(ctx context.Context, userID int64, hash domain.TokenHash, expiresAt *time.Time) (domain.Token, error) {
	if err := ctx.Err(); err != nil {
		return domain.Token{}, fmt.Errorf("create token: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[userID]; !ok {
		return domain.Token{}, fmt.Errorf("create token: user %d: %w", userID, domain.ErrNotFound)
	}
	if _, ok := s.tokenIDs[hash]; ok {
		return domain.Token{}, fmt.Errorf("create token: hash exists: %w", domain.ErrConflict)
	}
	s.lastToken++
	tok := &domain.Token{
		ID:        s.lastToken,
		UserID:    userID,
		Hash:      hash,
		CreatedAt: s.stamp(),
		ExpiresAt: pgTime(expiresAt),
	}
	s.tokens[tok.ID] = tok
	s.tokenIDs[hash] = tok.ID
	return cloneToken(tok), nil
}

// RevokeToken marks a token revoked at `at` (keeping an earlier revocation)
// and returns it.
func (s *Store) RevokeToken(ctx context.Context, tokenID int64, at time.Time) (domain.Token, error) {
	if err := ctx.Err(); err != nil {
		return domain.Token{}, fmt.Errorf("revoke token %d: %w", tokenID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, ok := s.tokens[tokenID]
	if !ok {
		return domain.Token{}, fmt.Errorf("revoke token %d: %w", tokenID, domain.ErrNotFound)
	}
	if tok.RevokedAt == nil {
		tok.RevokedAt = pgTime(&at)
	}
	return cloneToken(tok), nil
}

// Principal resolves a token hash to its principal; expired and revoked
// tokens are returned with their times set. domain.ErrNotFound when unknown.
func (s *Store) Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	if err := ctx.Err(); err != nil {
		return domain.Principal{}, fmt.Errorf("resolve principal: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.tokenIDs[hash]
	if !ok {
		return domain.Principal{}, fmt.Errorf("resolve principal: %w", domain.ErrNotFound)
	}
	tok := s.tokens[id]
	u := s.users[tok.UserID]
	plan := s.plans[u.Plan]
	if u.QuotaOverride != nil {
		plan.Quota = *u.QuotaOverride
	}
	return domain.Principal{
		UserID:    u.ID,
		TokenID:   tok.ID,
		Plan:      plan,
		ExpiresAt: clone(tok.ExpiresAt),
		RevokedAt: clone(tok.RevokedAt),
	}, nil
}

// ItemsHaving returns which of items the user's set contains, without
// duplicates. An unknown user has an empty set.
func (s *Store) ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("items having: %w", err)
	}
	have := []string{}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[userID]
	if !ok || len(u.items) == 0 {
		return have, nil
	}
	var seen map[string]struct{}
	for _, it := range items {
		if _, in := u.items[it]; !in {
			continue
		}
		if seen == nil {
			seen = make(map[string]struct{})
		}
		if _, dup := seen[it]; dup {
			continue
		}
		seen[it] = struct{}{}
		have = append(have, it)
	}
	return have, nil
}

// UpdateItems adds then removes items atomically and bumps the version. Over
// maxItems it changes nothing and returns domain.ErrTooManyItems. Like
// Postgres, it refuses to add items that Postgres text cannot hold (NUL bytes,
// invalid UTF-8), so both stores accept the same sets.
func (s *Store) UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	const op = "update items"
	if err := ctx.Err(); err != nil {
		return domain.ItemChange{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, it := range add {
		if !storable(it) {
			return domain.ItemChange{}, fmt.Errorf("%s: item %q is not UTF-8 text without NUL bytes", op, it)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[userID]
	if !ok {
		return domain.ItemChange{}, fmt.Errorf("%s: user %d: %w", op, userID, domain.ErrNotFound)
	}
	// Work out the outcome first, so a refused change touches nothing.
	toAdd := make(map[string]struct{})
	for _, it := range add {
		if _, in := u.items[it]; !in {
			toAdd[it] = struct{}{}
		}
	}
	toRemove := make(map[string]struct{})
	for _, it := range remove {
		_, in := u.items[it]
		_, adding := toAdd[it]
		if in || adding {
			toRemove[it] = struct{}{}
		}
	}
	ch := domain.ItemChange{Added: int64(len(toAdd)), Removed: int64(len(toRemove))}
	ch.Total = int64(len(u.items)) + ch.Added - ch.Removed
	if ch.Total > maxItems {
		return domain.ItemChange{}, fmt.Errorf("%s: %d items, plan allows %d: %w", op, ch.Total, maxItems, domain.ErrTooManyItems)
	}
	for it := range toAdd {
		u.items[it] = struct{}{}
	}
	for it := range toRemove {
		delete(u.items, it)
	}
	u.version++
	ch.Version = u.version
	return ch, nil
}

// LoadItems calls fn with the user's set in chunks of at most chunkSize
// (default DefaultChunkSize), sorted byte-wise, from one snapshot taken
// under the lock (fn runs without it), and returns that snapshot's version.
// Every chunk is a fresh slice fn may keep. fn's error is returned as is.
func (s *Store) LoadItems(ctx context.Context, userID int64, chunkSize int, fn func(chunk []string) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("load items: %w", err)
	}
	if chunkSize < 1 {
		chunkSize = DefaultChunkSize
	}
	s.mu.Lock()
	u, ok := s.users[userID]
	if !ok {
		s.mu.Unlock()
		return 0, fmt.Errorf("load items: user %d: %w", userID, domain.ErrNotFound)
	}
	version := u.version
	all := make([]string, 0, len(u.items))
	for it := range u.items {
		all = append(all, it)
	}
	s.mu.Unlock()

	slices.Sort(all)
	for len(all) > 0 {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("load items: %w", err)
		}
		n := min(chunkSize, len(all))
		// Clip so fn appending to its chunk cannot overwrite the next one.
		if err := fn(slices.Clip(all[:n])); err != nil {
			return 0, err
		}
		all = all[n:]
	}
	return version, nil
}

// ItemsVersion returns the current version of the user's set (0 when never
// changed; domain.ErrNotFound for an unknown user).
func (s *Store) ItemsVersion(ctx context.Context, userID int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("items version: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[userID]
	if !ok {
		return 0, fmt.Errorf("items version: user %d: %w", userID, domain.ErrNotFound)
	}
	return u.version, nil
}

// Usage returns the count of the user in the period starting at periodStart
// (any instant of that UTC day; 0 when none, also for an unknown user).
func (s *Store) Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("usage: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage[usageKey{userID, dayOf(periodStart)}], nil
}

// ApplyUsageBatch applies a batch at most once, atomically. A delta for an
// unknown user fails the whole batch with domain.ErrNotFound (and does not
// record its key).
func (s *Store) ApplyUsageBatch(ctx context.Context, batch domain.UsageBatch) (bool, error) {
	const op = "apply usage batch"
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	if batch.Key == "" {
		return false, fmt.Errorf("%s: empty key", op)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, done := s.batches[batch.Key]; done {
		return false, nil
	}
	for _, d := range batch.Deltas {
		if _, ok := s.users[d.UserID]; !ok {
			return false, fmt.Errorf("%s: user %d: %w", op, d.UserID, domain.ErrNotFound)
		}
	}
	s.batches[batch.Key] = struct{}{}
	if len(batch.Deltas) == 0 {
		return true, nil
	}
	s.activity++
	for _, d := range batch.Deltas {
		s.usage[usageKey{d.UserID, dayOf(d.PeriodStart)}] += d.Delta
		s.users[d.UserID].lastActive = s.activity
	}
	return true, nil
}

// RecentlyActiveUsers returns up to limit user ids, most recently active
// first; never-active users last, newest first.
func (s *Store) RecentlyActiveUsers(ctx context.Context, limit int) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recently active users: %w", err)
	}
	if limit <= 0 {
		return []int64{}, nil
	}
	s.mu.Lock()
	type entry struct{ id, active int64 }
	all := make([]entry, 0, len(s.users))
	for id, u := range s.users {
		all = append(all, entry{id, u.lastActive})
	}
	s.mu.Unlock()
	// Never active (0) sorts last because activity stamps start at 1.
	slices.SortFunc(all, func(a, b entry) int {
		return cmp.Or(cmp.Compare(b.active, a.active), cmp.Compare(b.id, a.id))
	})
	ids := make([]int64, 0, min(limit, len(all)))
	for _, e := range all[:min(limit, len(all))] {
		ids = append(ids, e.id)
	}
	return ids, nil
}

// stamp is the current time as Postgres would store it (UTC, microseconds).
func (s *Store) stamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func (u *user) public() domain.User {
	pu := u.User
	pu.QuotaOverride = clone(u.QuotaOverride)
	return pu
}

// storable reports whether Postgres text could hold item: valid UTF-8
// without NUL bytes.
func storable(item string) bool {
	return utf8.ValidString(item) && !strings.ContainsRune(item, 0)
}

// dayOf is the UTC calendar day of t, the key of a usage period.
func dayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// pgTime copies t at Postgres timestamptz precision.
func pgTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := t.UTC().Truncate(time.Microsecond)
	return &c
}

// clone is a copy of *p in a new variable (nil for nil).
func clone[T any](p *T) *T {
	if p == nil {
		return nil
	}
	return new(*p)
}

func cloneToken(t *domain.Token) domain.Token {
	c := *t
	c.ExpiresAt = clone(t.ExpiresAt)
	c.RevokedAt = clone(t.RevokedAt)
	return c
}
