package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// UpsertPlans creates or updates plans by name, in one statement. A name
// given twice keeps its last entry.
func (s *Store) UpsertPlans(ctx context.Context, plans []domain.Plan) error {
	const op = "upsert plans"
	if len(plans) == 0 {
		return nil
	}
	// ON CONFLICT DO UPDATE refuses to touch a row twice in one statement.
	last := make(map[string]int, len(plans))
	for i, p := range plans {
		if p.Name == "" {
			return fmt.Errorf("%s: empty plan name", op)
		}
		if !p.Period.Valid() {
			return fmt.Errorf("%s: plan %q: invalid period %q", op, p.Name, p.Period)
		}
		last[p.Name] = i
	}
	var names, periods []string
	var quotas, maxItems []int64
	for i, p := range plans {
		if last[p.Name] != i {
			continue
		}
		names = append(names, p.Name)
		quotas = append(quotas, p.Quota)
		periods = append(periods, string(p.Period))
		maxItems = append(maxItems, p.MaxItems)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO plans (name, quota, period, max_items)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
		ON CONFLICT (name) DO UPDATE
		SET quota = excluded.quota, period = excluded.period, max_items = excluded.max_items`,
		names, quotas, periods, maxItems)
	return wrap(op, err)
}

// Plans lists all plans sorted by name (byte-wise, like Go's sort).
func (s *Store) Plans(ctx context.Context) ([]domain.Plan, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT name, quota, period, max_items FROM plans ORDER BY name COLLATE "C"`)
	plans, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (domain.Plan, error) {
		var p domain.Plan
		err := r.Scan(&p.Name, &p.Quota, &p.Period, &p.MaxItems)
		return p, err
	})
	if err != nil {
		return nil, wrap("list plans", err)
	}
	return plans, nil
}

// CreateUser creates a user on an existing plan (domain.ErrUnknownPlan
// otherwise).
func (s *Store) CreateUser(ctx context.Context, name, plan string, quotaOverride *int64) (domain.User, error) {
	const op = "create user"
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	u := domain.User{Name: name, Plan: plan}
	if quotaOverride != nil {
		u.QuotaOverride = new(*quotaOverride) // the caller keeps its variable
	}
	err := s.pool.QueryRow(ctx,
		`INSERT INTO users (name, plan, quota_override) VALUES ($1, $2, $3) RETURNING id, created_at`,
		name, plan, quotaOverride).Scan(&u.ID, &u.CreatedAt)
	if pgCode(err) == codeForeignKeyViolation {
		return domain.User{}, fmt.Errorf("%s: plan %q: %w", op, plan, domain.ErrUnknownPlan)
	}
	if err != nil {
		return domain.User{}, wrap(op, err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// User returns one user or domain.ErrNotFound.
func (s *Store) User(ctx context.Context, id int64) (domain.User, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var u domain.User
	err := s.pool.QueryRow(ctx,
		`SELECT id, name, plan, quota_override, created_at FROM users WHERE id = $1`, id).
		Scan(&u.ID, &u.Name, &u.Plan, &u.QuotaOverride, &u.CreatedAt)
	if err != nil {
		return domain.User{}, wrap(fmt.Sprintf("get user %d", id), err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// CreateToken stores a token hash for an existing user (domain.ErrNotFound
// otherwise; domain.ErrConflict when the hash already exists).
func (s *Store) CreateToken(ctx context.Context, userID int64, hash domain.TokenHash, expiresAt *time.Time) (domain.Token, error) {
	const op = "create token"
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tok := domain.Token{UserID: userID, Hash: hash}
	err := s.pool.QueryRow(ctx,
		`INSERT INTO tokens (user_id, hash, expires_at) VALUES ($1, $2, $3) RETURNING id, created_at, expires_at`,
		userID, hash[:], expiresAt).Scan(&tok.ID, &tok.CreatedAt, &tok.ExpiresAt)
	switch pgCode(err) {
	case codeForeignKeyViolation:
		return domain.Token{}, fmt.Errorf("%s: user %d: %w", op, userID, domain.ErrNotFound)
	case codeUniqueViolation:
		return domain.Token{}, fmt.Errorf("%s: hash exists: %w", op, domain.ErrConflict)
	}
	if err != nil {
		return domain.Token{}, wrap(op, err)
	}
	tok.CreatedAt = tok.CreatedAt.UTC()
	tok.ExpiresAt = utcPtr(tok.ExpiresAt)
	return tok, nil
}

// RevokeToken marks a token revoked at `at` (keeping an earlier revocation)
// and returns it, hash included.
func (s *Store) RevokeToken(ctx context.Context, tokenID int64, at time.Time) (domain.Token, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var tok domain.Token
	var hash []byte
	err := s.pool.QueryRow(ctx, `
		UPDATE tokens SET revoked_at = coalesce(revoked_at, $2)
		WHERE id = $1
		RETURNING id, user_id, hash, created_at, expires_at, revoked_at`, tokenID, at).
		Scan(&tok.ID, &tok.UserID, &hash, &tok.CreatedAt, &tok.ExpiresAt, &tok.RevokedAt)
	if err != nil {
		return domain.Token{}, wrap(fmt.Sprintf("revoke token %d", tokenID), err)
	}
	copy(tok.Hash[:], hash)
	tok.CreatedAt = tok.CreatedAt.UTC()
	tok.ExpiresAt = utcPtr(tok.ExpiresAt)
	tok.RevokedAt = utcPtr(tok.RevokedAt)
	return tok, nil
}

// sqlPrincipal is the auth hot path: one round trip, effective quota applied.
const sqlPrincipal = `
	SELECT t.id, t.user_id, t.expires_at, t.revoked_at,
	       p.name, coalesce(u.quota_override, p.quota), p.period, p.max_items
	FROM tokens t
	JOIN users u ON u.id = t.user_id
	JOIN plans p ON p.name = u.plan
	WHERE t.hash = $1`

// Principal resolves a token hash to its principal; expired and revoked
// tokens are returned with their times set. domain.ErrNotFound when unknown.
func (s *Store) Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var p domain.Principal
	err := s.pool.QueryRow(ctx, sqlPrincipal, hash[:]).Scan(
		&p.TokenID, &p.UserID, &p.ExpiresAt, &p.RevokedAt,
		&p.Plan.Name, &p.Plan.Quota, &p.Plan.Period, &p.Plan.MaxItems)
	if err != nil {
		// Never the hash in errors: it identifies a credential.
		return domain.Principal{}, wrap("resolve principal", err)
	}
	p.ExpiresAt = utcPtr(p.ExpiresAt)
	p.RevokedAt = utcPtr(p.RevokedAt)
	return p, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
