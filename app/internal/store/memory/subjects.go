package memory

import (
	"context"
	"fmt"

	"github.com/warmpath/warmpath/app/internal/domain"
)

type subjectKey struct{ issuer, subject string }

// SubjectPrincipal returns the principal of the user bound to (issuer,
// subject), creating that user on plan when there is none (once: the store's
// mutex makes the check and the creation one step).
func (s *Store) SubjectPrincipal(ctx context.Context, issuer, subject, plan string) (domain.Principal, error) {
	if err := ctx.Err(); err != nil {
		return domain.Principal{}, fmt.Errorf("resolve subject: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := subjectKey{issuer, subject}
	id, ok := s.subjects[key]
	if !ok {
		if _, ok := s.plans[plan]; !ok {
			return domain.Principal{}, fmt.Errorf("resolve subject: plan %q: %w", plan, domain.ErrUnknownPlan)
		}
		s.lastUserID++
		id = s.lastUserID
		s.users[id] = &user{
			User:  domain.User{ID: id, Plan: plan, CreatedAt: s.stamp()},
			items: map[string]struct{}{},
		}
		s.subjects[key] = id
	}
	u := s.users[id]
	pl := s.plans[u.Plan]
	if u.QuotaOverride != nil {
		pl.Quota = *u.QuotaOverride
	}
	return domain.Principal{UserID: id, Plan: pl}, nil
}

// BindSubject binds an existing user to (issuer, subject) before its first
// sign-in. domain.ErrConflict when the subject (or the user) is bound
// already, domain.ErrNotFound when there is no such user.
func (s *Store) BindSubject(ctx context.Context, userID int64, issuer, subject string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bind subject: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[userID]; !ok {
		return fmt.Errorf("bind subject: user %d: %w", userID, domain.ErrNotFound)
	}
	if _, ok := s.subjects[subjectKey{issuer, subject}]; ok {
		return fmt.Errorf("bind subject: %w", domain.ErrConflict)
	}
	for _, id := range s.subjects {
		if id == userID {
			return fmt.Errorf("bind subject: user %d: %w", userID, domain.ErrConflict)
		}
	}
	s.subjects[subjectKey{issuer, subject}] = userID
	return nil
}
