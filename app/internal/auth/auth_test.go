package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

type fakeStore struct {
	m     map[domain.TokenHash]domain.Principal
	err   error
	calls int
}

func (f *fakeStore) Principal(_ context.Context, h domain.TokenHash) (domain.Principal, error) {
	f.calls++
	if f.err != nil {
		return domain.Principal{}, f.err
	}
	p, ok := f.m[h]
	if !ok {
		return domain.Principal{}, domain.ErrNotFound
	}
	return p, nil
}

type fakeCache struct {
	mu  sync.Mutex
	m   map[domain.TokenHash]domain.Principal
	err error
}

func (f *fakeCache) Principal(_ context.Context, h domain.TokenHash) (domain.Principal, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return domain.Principal{}, false, f.err
	}
	p, ok := f.m[h]
	return p, ok, nil
}
func (f *fakeCache) PutPrincipal(_ context.Context, h domain.TokenHash, p domain.Principal, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[h] = p
	return nil
}
func (f *fakeCache) DropPrincipal(_ context.Context, h domain.TokenHash) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, h)
	return nil
}

func TestNewTokenShape(t *testing.T) {
	a, ha, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, hb, _ := NewToken()
	if a == b || Equal(ha, hb) {
		t.Fatal("tokens must differ")
	}
	if !strings.HasPrefix(a, "wp_") || len(a) < 3+43 || !WellFormed(a) {
		t.Fatalf("bad token %q", a)
	}
	if !Equal(ha, Hash(a)) {
		t.Fatal("hash mismatch")
	}
}

func TestAuthenticateCodes(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	good, _, _ := NewToken()
	expired, _, _ := NewToken()
	revoked, _, _ := NewToken()
	later, _, _ := NewToken()
	unknown, _, _ := NewToken()
	st := &fakeStore{m: map[domain.TokenHash]domain.Principal{
		Hash(good):    {UserID: 1, TokenID: 1},
		Hash(expired): {UserID: 1, TokenID: 2, ExpiresAt: &past},
		Hash(revoked): {UserID: 1, TokenID: 3, RevokedAt: &past},
		Hash(later):   {UserID: 1, TokenID: 4, ExpiresAt: &future},
	}}
	a := New(Config{Store: NewCachedStore(st, &fakeCache{m: map[domain.TokenHash]domain.Principal{}}, nil, 0), Now: func() time.Time { return now }})
	cases := []struct {
		header string
		code   apperr.Code
	}{
		{"", apperr.MissingToken},
		{"Basic abc", apperr.MalformedToken},
		{"Bearer", apperr.MalformedToken},
		{"Bearer nope", apperr.MalformedToken},
		{"Bearer wp_short", apperr.MalformedToken},
		{"Bearer " + good + "!", apperr.MalformedToken},
		{"Bearer " + unknown, apperr.UnknownToken},
		{"Bearer " + expired, apperr.ExpiredToken},
		{"Bearer " + revoked, apperr.RevokedToken},
		{"Bearer " + good, ""},
		{"bearer " + later, ""},
	}
	for _, tc := range cases {
		t.Run(tc.header, func(t *testing.T) {
			for range 2 { // second round is served by the cache
				_, _, err := a.Authenticate(context.Background(), tc.header)
				if got := codeOf(err); got != tc.code {
					t.Fatalf("code %q, want %q (%v)", got, tc.code, err)
				}
				if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(tc.header, "Bearer ")) && len(tc.header) > 10 {
					t.Fatalf("error leaks the token: %v", err)
				}
			}
		})
	}
}

func codeOf(err error) apperr.Code {
	if err == nil {
		return ""
	}
	return apperr.CodeOf(err)
}

// TestPrimeFillsCacheForFirstRequest: a primed token's first
// authentication is a cache hit (no store call); a revoked or expired
// principal is not primed, and a store error is returned with nothing
// cached.
func TestPrimeFillsCacheForFirstRequest(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	past := now.Add(-time.Minute)
	tok, good, _ := NewToken()
	_, revoked, _ := NewToken()
	_, expired, _ := NewToken()
	_, unknown, _ := NewToken()
	st := &fakeStore{m: map[domain.TokenHash]domain.Principal{
		good: {UserID: 7}, revoked: {UserID: 8, RevokedAt: &past}, expired: {UserID: 9, ExpiresAt: &past},
	}}
	c := &fakeCache{m: map[domain.TokenHash]domain.Principal{}}
	cs := NewCachedStore(st, c, nil, 0)
	cs.now = func() time.Time { return now }
	for _, h := range []domain.TokenHash{good, revoked, expired} {
		if err := cs.Prime(context.Background(), h); err != nil {
			t.Fatalf("Prime: %v", err)
		}
	}
	if err := cs.Prime(context.Background(), unknown); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("Prime(unknown) = %v, want ErrNotFound", err)
	}
	if len(c.m) != 1 || c.m[good].UserID != 7 {
		t.Fatalf("cache after priming = %+v, want only the usable principal", c.m)
	}
	st.calls = 0
	a := New(Config{Store: cs, Now: func() time.Time { return now }})
	if p, _, err := a.Authenticate(context.Background(), "Bearer "+tok); err != nil || p.UserID != 7 {
		t.Fatalf("first authentication after Prime: %+v %v", p, err)
	}
	if st.calls != 0 {
		t.Fatalf("store calls on the first authentication = %d, want 0 (primed)", st.calls)
	}
}

func TestCacheServesWarmAndDegradesToStore(t *testing.T) {
	tok, _, _ := NewToken()
	st := &fakeStore{m: map[domain.TokenHash]domain.Principal{Hash(tok): {UserID: 7}}}
	c := &fakeCache{m: map[domain.TokenHash]domain.Principal{}}
	a := New(Config{Store: NewCachedStore(st, c, nil, 0)})
	for range 3 {
		if p, h, err := a.Authenticate(context.Background(), "Bearer "+tok); err != nil || p.UserID != 7 || h != Hash(tok) {
			t.Fatalf("got %+v %v", p, err)
		}
	}
	if st.calls != 1 {
		t.Fatalf("store calls = %d, want 1 (then cache hits)", st.calls)
	}
	c.err = errors.New("cache down")
	if _, _, err := a.Authenticate(context.Background(), "Bearer "+tok); err != nil {
		t.Fatalf("a cache error must degrade to the store: %v", err)
	}
	st.err = domain.ErrUnavailable
	_, _, err := a.Authenticate(context.Background(), "Bearer "+tok)
	if apperr.CodeOf(err) != apperr.Unavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
}
