package postgres

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// DefaultChunkSize is the LoadItems chunk size used when the caller passes
// chunkSize < 1.
const DefaultChunkSize = 1024

// storable reports whether Postgres text can hold item: valid UTF-8 without
// NUL bytes. Anything else can never be in a set.
func storable(item string) bool {
	return utf8.ValidString(item) && !strings.ContainsRune(item, 0)
}

// storableOnly returns items without the ones no set can contain (reusing
// items' backing array only when nothing is dropped).
func storableOnly(items []string) []string {
	for i, it := range items {
		if !storable(it) {
			out := append(make([]string, 0, len(items)-1), items[:i]...)
			for _, it := range items[i+1:] {
				if storable(it) {
					out = append(out, it)
				}
			}
			return out
		}
	}
	return items
}

const sqlItemsHaving = `SELECT item FROM items WHERE user_id = $1 AND item = ANY($2::text[])`

// ItemsHaving returns which of items the user's set contains, in one round
// trip. Items that cannot be stored (NUL bytes, invalid UTF-8) are simply
// not contained rather than an error, so a has-not query never fails on them.
func (s *Store) ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error) {
	items = storableOnly(items)
	if len(items) == 0 {
		return []string{}, nil
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, sqlItemsHaving, userID, items)
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap("items having", err)
	}
	if have == nil {
		have = []string{}
	}
	return have, nil
}

// UpdateItems adds then removes items in one transaction that holds the user
// row lock, so a user's writers are serialised and versions follow commit
// order. Over maxItems it rolls back and returns domain.ErrTooManyItems.
// Adding an item that cannot be stored (NUL bytes, invalid UTF-8) is an error;
// removing one counts for nothing.
func (s *Store) UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error) {
	const op = "update items"
	for _, it := range add {
		if !storable(it) {
			return domain.ItemChange{}, fmt.Errorf("%s: item %q is not UTF-8 text without NUL bytes", op, it)
		}
	}
	remove = storableOnly(remove)
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return domain.ItemChange{}, wrap(op, err)
	}
	defer rollback(tx)

	var version, count int64
	// NO KEY UPDATE: serialises this user's writers without blocking the
	// foreign-key checks of concurrent inserts referencing the user.
	err = tx.QueryRow(ctx,
		`SELECT items_version, items_count FROM users WHERE id = $1 FOR NO KEY UPDATE`, userID).
		Scan(&version, &count)
	if err != nil {
		return domain.ItemChange{}, wrap(fmt.Sprintf("%s: user %d", op, userID), err)
	}
	var ch domain.ItemChange
	if len(add) > 0 {
		tag, err := tx.Exec(ctx, `
			INSERT INTO items (user_id, item) SELECT $1, unnest($2::text[])
			ON CONFLICT DO NOTHING`, userID, add)
		if err != nil {
			return domain.ItemChange{}, wrap(op+": add", err)
		}
		ch.Added = tag.RowsAffected()
	}
	if len(remove) > 0 {
		tag, err := tx.Exec(ctx,
			`DELETE FROM items WHERE user_id = $1 AND item = ANY($2::text[])`, userID, remove)
		if err != nil {
			return domain.ItemChange{}, wrap(op+": remove", err)
		}
		ch.Removed = tag.RowsAffected()
	}
	ch.Total = count + ch.Added - ch.Removed
	if ch.Total > maxItems {
		return domain.ItemChange{}, fmt.Errorf("%s: %d items, plan allows %d: %w", op, ch.Total, maxItems, domain.ErrTooManyItems)
	}
	ch.Version = version + 1
	if _, err := tx.Exec(ctx,
		`UPDATE users SET items_version = $2, items_count = $3 WHERE id = $1`,
		userID, ch.Version, ch.Total); err != nil {
		return domain.ItemChange{}, wrap(op+": bump version", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return domain.ItemChange{}, wrap(op+": commit", err)
	}
	return ch, nil
}

// LoadItems streams the user's set in chunks of at most chunkSize (default
// DefaultChunkSize), sorted byte-wise, from one REPEATABLE READ snapshot, and
// returns the set's version at that snapshot. Rows are read from the wire as
// fn consumes chunks, so the whole set is never held at once; every chunk is a
// fresh slice that fn may keep. fn's error aborts the load and is returned
// as is. The call is bounded by Config.BulkTimeout, not OpTimeout.
func (s *Store) LoadItems(ctx context.Context, userID int64, chunkSize int, fn func(chunk []string) error) (int64, error) {
	const op = "load items"
	if chunkSize < 1 {
		chunkSize = DefaultChunkSize
	}
	ctx, cancel := s.bulkCtx(ctx)
	defer cancel()
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, wrap(op, err)
	}
	defer rollback(tx)

	var version int64
	if err := tx.QueryRow(ctx, `SELECT items_version FROM users WHERE id = $1`, userID).Scan(&version); err != nil {
		return 0, wrap(fmt.Sprintf("%s: user %d", op, userID), err)
	}
	rows, err := tx.Query(ctx, `SELECT item FROM items WHERE user_id = $1 ORDER BY item`, userID)
	if err != nil {
		return 0, wrap(op, err)
	}
	defer rows.Close()
	chunk := make([]string, 0, min(chunkSize, DefaultChunkSize))
	for rows.Next() {
		var it string
		if err := rows.Scan(&it); err != nil {
			return 0, wrap(op, err)
		}
		chunk = append(chunk, it)
		if len(chunk) == chunkSize {
			if err := fn(chunk); err != nil {
				return 0, err
			}
			chunk = make([]string, 0, min(chunkSize, DefaultChunkSize))
		}
	}
	if err := rows.Err(); err != nil {
		return 0, wrap(op, err)
	}
	if len(chunk) > 0 {
		if err := fn(chunk); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, wrap(op+": commit", err)
	}
	return version, nil
}

const sqlItemsVersion = `SELECT items_version FROM users WHERE id = $1`

// ItemsVersion returns the current version of the user's set (0 when never
// changed; domain.ErrNotFound for an unknown user).
func (s *Store) ItemsVersion(ctx context.Context, userID int64) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var v int64
	if err := s.pool.QueryRow(ctx, sqlItemsVersion, userID).Scan(&v); err != nil {
		return 0, wrap(fmt.Sprintf("items version: user %d", userID), err)
	}
	return v, nil
}
