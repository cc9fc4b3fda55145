// Package engine is the has-not engine: given a list of items, it answers
// which of them the user's set does NOT contain. A warm user is answered from
// the cache in one round trip; a cold one straight from the system of record,
// while a warmup is requested so the next query is warm.
package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// Limits on input, part of the public contract.
const (
	MaxItemsPerCall = 1000
	MaxItemBytes    = 256
)

// Store is what the engine needs from the system of record.
type Store interface {
	ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error)
	UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error)
}

// Cache is what the engine needs from the cache; see the valkey package for
// the versioned protocol that keeps it exact under concurrent writes.
type Cache interface {
	HasNot(ctx context.Context, userID int64, items []string) (missing []string, warm bool, err error)
	ApplyItems(ctx context.Context, userID int64, version int64, add, remove []string) error
	InvalidateItems(ctx context.Context, userID int64, atLeastVersion int64) error
}

// Observer is told about item-set cache lookups.
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
}

// Source says where an answer came from.
type Source string

// The sources of an answer.
const (
	SourceCache Source = "cache"
	SourceStore Source = "store"
)

// Result is the answer to a has-not query.
type Result struct {
	Missing []string
	Source  Source
	// DB is the time spent in the system of record (zero when warm).
	DB time.Duration
}

// Config configures an Engine.
type Config struct {
	Store    Store
	Cache    Cache // optional
	Observer Observer
	Now      func() time.Time
	// Retry is called after an ApplyItems failure so the invalidation is
	// retried in the background (the change is already committed).
	OnCacheFailure func(userID int64, version int64)
}

// Engine answers has-not queries and changes item sets.
type Engine struct{ cfg Config }

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Engine{cfg: cfg}
}

// ValidateItems checks a list of items against the public limits. min is 0
// for lists that may be empty.
func ValidateItems(field string, items []string, min int) error {
	if len(items) < min {
		return apperr.New(apperr.InvalidItems, "%s must hold at least %d item(s)", field, min)
	}
	if len(items) > MaxItemsPerCall {
		return apperr.New(apperr.InvalidItems, "%s holds %d items; at most %d per call", field, len(items), MaxItemsPerCall)
	}
	for i, it := range items {
		switch {
		case len(it) == 0:
			return apperr.New(apperr.InvalidItems, "%s[%d] is empty; items are 1-%d bytes", field, i, MaxItemBytes)
		case len(it) > MaxItemBytes:
			return apperr.New(apperr.InvalidItems, "%s[%d] is %d bytes; items are 1-%d bytes", field, i, len(it), MaxItemBytes)
		case !utf8.ValidString(it):
			return apperr.New(apperr.InvalidItems, "%s[%d] is not valid UTF-8", field, i)
		case strings.IndexByte(it, 0) >= 0:
			// Postgres text cannot hold NUL; refuse it rather than store a
			// different string.
			return apperr.New(apperr.InvalidItems, "%s[%d] contains a NUL character", field, i)
		}
	}
	return nil
}

// HasNot returns the items of the list that the user's set does not have, in
// input order, each once. The cache answers when it is warm; otherwise the
// store does, and the query never fails because the cache is cold.
func (e *Engine) HasNot(ctx context.Context, userID int64, items []string) (Result, error) {
	if e.cfg.Cache != nil {
		missing, warm, err := e.cfg.Cache.HasNot(ctx, userID, items)
		switch {
		case err != nil:
			e.observe(ctx, "error")
		case warm:
			e.observe(ctx, "hit")
			return Result{Missing: missing, Source: SourceCache}, nil
		default:
			e.observe(ctx, "miss")
		}
	}
	start := e.cfg.Now()
	have, err := e.cfg.Store.ItemsHaving(ctx, userID, items)
	db := e.cfg.Now().Sub(start)
	if err != nil {
		return Result{DB: db}, unavailable("the item store", err)
	}
	return Result{Missing: subtract(items, have), Source: SourceStore, DB: db}, nil
}

// subtract returns items not in have, in input order, each once.
func subtract(items, have []string) []string {
	in := make(map[string]struct{}, len(have))
	for _, h := range have {
		in[h] = struct{}{}
	}
	missing := make([]string, 0, len(items)-len(have))
	for _, it := range items {
		if _, ok := in[it]; ok {
			continue
		}
		in[it] = struct{}{} // report duplicates once
		missing = append(missing, it)
	}
	return missing
}

// Update adds and removes items of the user's set. The store commits first;
// then the change is mirrored into the cache under the set's version, so the
// next query sees it whether the set is warm or not.
func (e *Engine) Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, time.Duration, error) {
	start := e.cfg.Now()
	ch, err := e.cfg.Store.UpdateItems(ctx, userID, add, remove, maxItems)
	db := e.cfg.Now().Sub(start)
	switch {
	case errors.Is(err, domain.ErrTooManyItems):
		return ch, db, apperr.New(apperr.TooManyItems, "the change would exceed the plan's limit of %d items", maxItems)
	case errors.Is(err, domain.ErrNotFound):
		return ch, db, apperr.New(apperr.NotFound, "the user does not exist")
	case err != nil:
		return ch, db, unavailable("the item store", err)
	}
	if e.cfg.Cache != nil {
		if err := e.cfg.Cache.ApplyItems(ctx, userID, ch.Version, add, remove); err != nil {
			// The change is committed; a cache that missed it must not answer
			// for this user. Invalidate (also versioned), and if even that
			// fails, hand it to the background retrier.
			if ierr := e.cfg.Cache.InvalidateItems(context.WithoutCancel(ctx), userID, ch.Version); ierr != nil && e.cfg.OnCacheFailure != nil {
				e.cfg.OnCacheFailure(userID, ch.Version)
			}
		}
	}
	return ch, db, nil
}

func (e *Engine) observe(ctx context.Context, result string) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.CacheRequest(ctx, "items", result)
	}
}

func unavailable(what string, err error) error {
	return &apperr.Error{Code: apperr.Unavailable, Message: fmt.Sprintf("%s is temporarily unavailable", what), RetryAfter: time.Second, Err: err}
}
