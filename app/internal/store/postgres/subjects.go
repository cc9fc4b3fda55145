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

// BindSubject binds an existing user to (issuer, subject) before its first
// sign-in. domain.ErrConflict when the subject is bound already,
// domain.ErrNotFound when there is no such user.
func (s *Store) BindSubject(ctx context.Context, userID int64, issuer, subject string) error {
	const op = "bind subject"
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `INSERT INTO subjects (issuer, subject, user_id)
		SELECT $1, $2, id FROM users WHERE id = $3
		ON CONFLICT DO NOTHING`, issuer, subject, userID)
	if err != nil {
		return wrap(op, err)
	}
	if tag.RowsAffected() == 0 {
		if _, err := s.User(ctx, userID); err != nil {
			return err
		}
		return wrap(op, domain.ErrConflict)
	}
	return nil
}
