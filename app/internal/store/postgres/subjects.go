package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/warmpath/warmpath/app/internal/domain"
)

const sqlSubjectPrincipal = `
	SELECT u.id, p.name, coalesce(u.quota_override, p.quota), p.period, p.max_items
	FROM subjects s
	JOIN users u ON u.id = s.user_id
	JOIN plans p ON p.name = u.plan
	WHERE s.issuer = $1 AND s.subject = $2`

// SubjectPrincipal returns the principal of the user bound to (issuer,
// subject), creating that user on plan when there is none. Racing first
// sign-ins create one user: the loser's insert conflicts on the subjects key,
// its transaction (and its user) rolls back, and it reads the winner's.
func (s *Store) SubjectPrincipal(ctx context.Context, issuer, subject, plan string) (domain.Principal, error) {
	const op = "resolve subject"
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	p, err := s.subjectPrincipal(ctx, issuer, subject)
	if !errors.Is(err, domain.ErrNotFound) {
		return p, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO users (name, plan) VALUES ($1, $2) RETURNING id`,
			"", plan).Scan(&id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO subjects (issuer, subject, user_id) VALUES ($1, $2, $3)
			ON CONFLICT (issuer, subject) DO NOTHING`, issuer, subject, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errSubjectTaken
		}
		return nil
	})
	if pgCode(err) == codeForeignKeyViolation {
		return domain.Principal{}, fmt.Errorf("%s: plan %q: %w", op, plan, domain.ErrUnknownPlan)
	}
	if err != nil && !errors.Is(err, errSubjectTaken) {
		return domain.Principal{}, wrap(op, err)
	}
	return s.subjectPrincipal(ctx, issuer, subject)
}

var errSubjectTaken = errors.New("subject taken")

func (s *Store) subjectPrincipal(ctx context.Context, issuer, subject string) (domain.Principal, error) {
	var p domain.Principal
	err := s.pool.QueryRow(ctx, sqlSubjectPrincipal, issuer, subject).Scan(
		&p.UserID, &p.Plan.Name, &p.Plan.Quota, &p.Plan.Period, &p.Plan.MaxItems)
	if err != nil {
		// Never the subject in errors: it identifies a person.
		return domain.Principal{}, wrap("resolve subject", err)
	}
	return p, nil
}

// CreateSubjectUser creates a user on plan bound to (issuer, subject), in
// one transaction: domain.ErrConflict (and no user) when the subject is
// bound already, domain.ErrUnknownPlan when the plan does not exist.
func (s *Store) CreateSubjectUser(ctx context.Context, name, plan string, quotaOverride *int64, issuer, subject string) (domain.User, error) {
	const op = "create subject user"
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var u domain.User
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO users (name, plan, quota_override) VALUES ($1, $2, $3)
			RETURNING id, name, plan, quota_override, created_at`, name, plan, quotaOverride).Scan(
			&u.ID, &u.Name, &u.Plan, &u.QuotaOverride, &u.CreatedAt); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO subjects (issuer, subject, user_id) VALUES ($1, $2, $3)
			ON CONFLICT (issuer, subject) DO NOTHING`, issuer, subject, u.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errSubjectTaken
		}
		return nil
	})
	switch {
	case errors.Is(err, errSubjectTaken):
		return domain.User{}, fmt.Errorf("%s: %w", op, domain.ErrConflict)
	case pgCode(err) == codeForeignKeyViolation:
		return domain.User{}, fmt.Errorf("%s: plan %q: %w", op, plan, domain.ErrUnknownPlan)
	case err != nil:
		return domain.User{}, wrap(op, err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}
