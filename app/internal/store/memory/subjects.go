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

// CreateSubjectUser creates a user on plan bound to (issuer, subject), in
// one step: domain.ErrConflict (and no user) when the subject is bound
// already, domain.ErrUnknownPlan when the plan does not exist.
func (s *Store) CreateSubjectUser(ctx context.Context, name, plan string, quotaOverride *int64, issuer, subject string) (domain.User, error) {
	if err := ctx.Err(); err != nil {
		return domain.User{}, fmt.Errorf("create subject user: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subjects[subjectKey{issuer, subject}]; ok {
		return domain.User{}, fmt.Errorf("create subject user: %w", domain.ErrConflict)
	}
	if _, ok := s.plans[plan]; !ok {
		return domain.User{}, fmt.Errorf("create subject user: plan %q: %w", plan, domain.ErrUnknownPlan)
	}
	s.lastUserID++
	u := &user{
		User: domain.User{
			ID: s.lastUserID, Name: name, Plan: plan,
			QuotaOverride: clone(quotaOverride), CreatedAt: s.stamp(),
		},
		items: map[string]struct{}{},
	}
	s.users[u.ID] = u
	s.subjects[subjectKey{issuer, subject}] = u.ID
	return u.public(), nil
}
