package auth

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// countingStore is the system of record with a count of lookups.
type countingStore struct {
	principals map[domain.TokenHash]domain.Principal
	calls      atomic.Int64
}

func (s *countingStore) Principal(_ context.Context, h domain.TokenHash) (domain.Principal, error) {
	s.calls.Add(1)
	p, ok := s.principals[h]
	if !ok {
		return p, domain.ErrNotFound
	}
	return p, nil
}

// countingCache behaves like the Valkey cache: it holds what was put, and a
// revoked token's tombstone (a principal with RevokedAt set).
type countingCache struct {
	m          map[domain.TokenHash]domain.Principal
	gets, puts atomic.Int64
}

func (c *countingCache) Principal(_ context.Context, h domain.TokenHash) (domain.Principal, bool, error) {
	c.gets.Add(1)
	p, ok := c.m[h]
	return p, ok, nil
}

func (c *countingCache) PutPrincipal(_ context.Context, h domain.TokenHash, p domain.Principal, _ time.Duration) error {
	c.puts.Add(1)
	if old, ok := c.m[h]; ok && old.RevokedAt != nil {
		return nil // the tombstone wins
	}
	c.m[h] = p
	return nil
}

type refusalFixture struct {
	store                           *countingStore
	cache                           *countingCache
	authn                           *Authenticator
	live, unknown, revoked, expired string
}

func newRefusalFixture(t testing.TB) *refusalFixture {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	past := now.Add(-time.Hour)
	tok := func() string {
		s, _, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f := &refusalFixture{live: tok(), unknown: tok(), revoked: tok(), expired: tok()}
	f.store = &countingStore{principals: map[domain.TokenHash]domain.Principal{
		Hash(f.live):    {UserID: 1},
		Hash(f.revoked): {UserID: 1, RevokedAt: &past},
		Hash(f.expired): {UserID: 1, ExpiresAt: &past},
	}}
	// The revoked token's tombstone is in the cache, as revocation leaves it.
	f.cache = &countingCache{m: map[domain.TokenHash]domain.Principal{Hash(f.revoked): {RevokedAt: &past}}}
	cs := NewCachedStore(f.store, f.cache, nil, time.Minute)
	cs.now = func() time.Time { return now }
	f.authn = New(Config{Store: cs, Now: func() time.Time { return now }})
	return f
}

// TestRefusalsTakeTheSamePath: an unknown, a revoked and an expired token
// cost exactly the same lookups (one cache lookup, one store lookup, no
// fill), every time, so the time of a refusal cannot tell them apart; only a
// live token is answered from the cache.
func TestRefusalsTakeTheSamePath(t *testing.T) {
	f := newRefusalFixture(t)
	type cost struct{ gets, puts, store int64 }
	measure := func(tok string) (cost, apperr.Code) {
		g, p, s := f.cache.gets.Load(), f.cache.puts.Load(), f.store.calls.Load()
		_, _, err := f.authn.Authenticate(context.Background(), "Bearer "+tok)
		return cost{f.cache.gets.Load() - g, f.cache.puts.Load() - p, f.store.calls.Load() - s}, apperr.CodeOf(err)
	}
	want := cost{gets: 1, puts: 0, store: 1}
	for round := range 3 { // the first lookup and the later ones alike
		for name, tc := range map[string]struct {
			tok  string
			code apperr.Code
		}{
			"unknown": {f.unknown, apperr.UnknownToken},
			"revoked": {f.revoked, apperr.RevokedToken},
			"expired": {f.expired, apperr.ExpiredToken},
		} {
			got, code := measure(tc.tok)
			if code != tc.code {
				t.Fatalf("round %d, %s: code %s, want %s", round, name, code, tc.code)
			}
			if got != want {
				t.Errorf("round %d, %s token: %+v lookups, want %+v (the same for every refusal)", round, name, got, want)
			}
		}
	}
	// A live token is filled once, then answered from the cache alone.
	measure(f.live)
	if got, _ := measure(f.live); got != (cost{gets: 1}) {
		t.Errorf("warm live token: %+v, want one cache lookup", got)
	}
}

// TestRevokedRefusedWhileStoreDown: the tombstone still refuses a revoked
// token when the store cannot answer.
func TestRevokedRefusedWhileStoreDown(t *testing.T) {
	f := newRefusalFixture(t)
	cs := NewCachedStore(downStore{}, f.cache, nil, time.Minute)
	a := New(Config{Store: cs})
	if _, _, err := a.Authenticate(context.Background(), "Bearer "+f.revoked); apperr.CodeOf(err) != apperr.RevokedToken {
		t.Fatalf("revoked token with the store down: %v", err)
	}
}

type downStore struct{}

func (downStore) Principal(context.Context, domain.TokenHash) (domain.Principal, error) {
	return domain.Principal{}, domain.ErrUnavailable
}

// BenchmarkRefusal compares an unknown with a revoked token: the same
// lookups, so the same cost.
func BenchmarkRefusal(b *testing.B) {
	f := newRefusalFixture(b)
	for _, tc := range []struct{ name, tok string }{{"unknown", f.unknown}, {"revoked", f.revoked}, {"expired", f.expired}} {
		b.Run(tc.name, func(b *testing.B) {
			h := "Bearer " + tc.tok
			for b.Loop() {
				_, _, _ = f.authn.Authenticate(context.Background(), h)
			}
		})
	}
}
