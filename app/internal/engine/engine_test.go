package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/store/memory"
	"github.com/warmpath/warmpath/app/internal/store/storetest"
)

func TestValidateItems(t *testing.T) {
	many := make([]string, MaxItemsPerCall+1)
	for i := range many {
		many[i] = "x"
	}
	cases := []struct {
		name  string
		items []string
		min   int
		ok    bool
	}{
		{"one", []string{"a"}, 1, true},
		{"max", many[:MaxItemsPerCall], 1, true},
		{"256 bytes", []string{strings.Repeat("a", 256)}, 1, true},
		{"multibyte 256 bytes", []string{strings.Repeat("é", 128)}, 1, true},
		{"empty list ok when min 0", nil, 0, true},
		{"empty list", nil, 1, false},
		{"too many", many, 1, false},
		{"empty item", []string{"a", ""}, 1, false},
		{"257 bytes", []string{strings.Repeat("a", 257)}, 1, false},
		{"invalid utf-8", []string{"\xff"}, 1, false},
		{"NUL", []string{"a\x00b"}, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateItems("items", tc.items, tc.min)
			if (err == nil) != tc.ok {
				t.Fatalf("ok=%v, err=%v", tc.ok, err)
			}
			if err != nil && apperr.CodeOf(err) != apperr.InvalidItems {
				t.Fatalf("code %q", apperr.CodeOf(err))
			}
		})
	}
}

func TestSubtractKeepsOrderAndDedups(t *testing.T) {
	got := subtract([]string{"b", "a", "c", "b", "d", "a"}, []string{"a"})
	if d := cmp.Diff([]string{"b", "c", "d"}, got); d != "" {
		t.Fatal(d)
	}
}

// failingCache is a cache that is down.
type failingCache struct{ applyErr, invErr error }

func (f failingCache) HasNot(context.Context, int64, []string) ([]string, bool, error) {
	return nil, false, errors.New("down")
}
func (f failingCache) ApplyItems(context.Context, int64, int64, []string, []string) error {
	return f.applyErr
}
func (f failingCache) InvalidateItems(context.Context, int64, int64) error { return f.invErr }

func TestCacheDownDegradesToStore(t *testing.T) {
	st, users := storetest.Memory(t, 1)
	u := users[0]
	ctx := context.Background()
	retried := &recordRetries{}
	e := New(Config{Items: NewCachedItems(FromStore(st), failingCache{applyErr: errors.New("down"), invErr: errors.New("down")}, nil, retried)})
	ch, err := e.Update(ctx, u.ID, []string{"a", "b"}, nil, 10)
	if err != nil || ch.Added != 2 {
		t.Fatalf("update: %+v %v", ch, err)
	}
	if d := cmp.Diff([]int64{ch.Version}, retried.versions); d != "" {
		t.Fatalf("a change the cache missed must be handed to the retrier: %s", d)
	}
	res, err := e.HasNot(ctx, u.ID, []string{"a", "z"})
	if err != nil || res.Source != SourceStore {
		t.Fatalf("hasnot: %+v %v", res, err)
	}
	if d := cmp.Diff([]string{"z"}, res.Missing); d != "" {
		t.Fatal(d)
	}
	_, err = e.Update(ctx, u.ID, []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}, nil, 10)
	if apperr.CodeOf(err) != apperr.TooManyItems {
		t.Fatalf("want too_many_items, got %v", err)
	}
}

type recordRetries struct{ versions []int64 }

func (r *recordRetries) Retry(_, version int64) { r.versions = append(r.versions, version) }

type recordObs struct{ results []string }

func (r *recordObs) CacheRequest(_ context.Context, cache, result string) {
	r.results = append(r.results, cache+":"+result)
}

// An answer the cache gave ahead of HasNot (in the usage count) is a cache
// answer, observed as an item-cache hit, exactly as HasNot's own.
func TestAnsweredIsACacheHit(t *testing.T) {
	obs := &recordObs{}
	e := New(Config{Items: NewCachedItems(FromStore(memory.New()), failingCache{}, obs, nil)})
	res := e.Answered(context.Background(), []string{"z"})
	if res.Source != SourceCache || len(res.Missing) != 1 || res.Missing[0] != "z" {
		t.Fatalf("answered: %+v", res)
	}
	if d := cmp.Diff([]string{"items:hit"}, obs.results); d != "" {
		t.Fatal(d)
	}
}
