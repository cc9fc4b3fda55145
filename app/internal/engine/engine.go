// Package engine is the has-not engine: given a list of items, it answers
// which of them the user's set does NOT contain. A warm user is answered from
// the cache in one round trip (for a metered query, the usage count's own:
// Answered); a cold one straight from the system of record, while a warmup is
// requested so the next query is warm.
package engine

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// Limits on input, part of the public contract.
const (
	MaxItemsPerCall = 1000
	MaxItemBytes    = 256
)

// Items is a user's item set, as the engine needs it. The system of record
// implements it (FromStore), and so does CachedItems, which wraps another
// Items. Implementations MUST be safe for concurrent use.
type Items interface {
	// HasNot returns the items of the list the set does not have, in input
	// order, each once, and where the answer came from.
	HasNot(ctx context.Context, userID int64, items []string) (Result, error)
	// Update adds then removes items in one step and returns the set's new
	// version; domain.ErrTooManyItems past maxItems, domain.ErrNotFound for
	// an unknown user.
	Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error)
}

// Store is what FromStore needs from the system of record.
type Store interface {
	ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error)
	UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error)
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
}

// Config configures an Engine.
type Config struct {
	// Items is the item set: FromStore(store), usually wrapped in CachedItems.
	Items Items
}

// Engine answers has-not queries and changes item sets, turning the item
// set's errors into the API's.
type Engine struct{ cfg Config }

// New returns an Engine.
func New(cfg Config) *Engine { return &Engine{cfg: cfg} }

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
// input order, each once. A warm cache answers; otherwise the store does, and
// the query never fails because the cache is cold.
func (e *Engine) HasNot(ctx context.Context, userID int64, items []string) (Result, error) {
	res, err := e.cfg.Items.HasNot(ctx, userID, items)
	if err != nil {
		return res, apperr.Temporary(err, "the item store is temporarily unavailable")
	}
	return res, nil
}

// Answered is the Result of a has-not lookup that the item-set cache
// answered ahead of HasNot, in the usage count's round trip
// (usage.Service.CheckQuery): the cache's answer (missing: input order,
// each once), observed as a cache hit as HasNot's own would be.
func (e *Engine) Answered(ctx context.Context, missing []string) Result {
	if a, ok := e.cfg.Items.(answerer); ok {
		return a.Answered(ctx, missing)
	}
	return Result{Missing: missing, Source: SourceCache}
}

// answerer is an Items that observes answers its cache gave ahead
// (CachedItems).
type answerer interface {
	Answered(ctx context.Context, missing []string) Result
}

// FromStore returns the Items of the system of record.
func FromStore(st Store) Items { return storeItems{st} }

type storeItems struct{ st Store }

func (s storeItems) HasNot(ctx context.Context, userID int64, items []string) (Result, error) {
	have, err := s.st.ItemsHaving(ctx, userID, items)
	if err != nil {
		return Result{}, err
	}
	return Result{Missing: subtract(items, have), Source: SourceStore}, nil
}

func (s storeItems) Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	return s.st.UpdateItems(ctx, userID, add, remove, maxItems)
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

// Update adds and removes items of the user's set; the next query sees the
// change, whether the set is warm or not.
func (e *Engine) Update(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	ch, err := e.cfg.Items.Update(ctx, userID, add, remove, maxItems)
	switch {
	case errors.Is(err, domain.ErrTooManyItems):
		return ch, apperr.New(apperr.TooManyItems, "the change would exceed the plan's limit of %d items", maxItems)
	case errors.Is(err, domain.ErrNotFound):
		return ch, apperr.New(apperr.NotFound, "the user does not exist")
	case err != nil:
		return ch, apperr.Temporary(err, "the item store is temporarily unavailable")
	}
	return ch, nil
}
