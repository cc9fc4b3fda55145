package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store"
)

func testSubjectPrincipal(t *testing.T, s store.Store) {
	setupPlans(t, s)
	a, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "alice", "free")
	if err != nil {
		t.Fatalf("first sign-in: %v", err)
	}
	if a.UserID == 0 || a.Plan.Name != "free" || a.TokenID != 0 || a.ExpiresAt != nil {
		t.Fatalf("first sign-in principal = %+v", a)
	}
	again, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "alice", "pro")
	if err != nil || again.UserID != a.UserID || again.Plan.Name != "free" {
		t.Fatalf("second sign-in = %+v, %v; want user %d on free (the plan applies only at creation)", again, err, a.UserID)
	}
	other, err := s.SubjectPrincipal(ctx(t), "https://other.example", "alice", "free")
	if err != nil || other.UserID == a.UserID {
		t.Fatalf("same sub, other issuer = %+v, %v; want another user", other, err)
	}
	if u, err := s.User(ctx(t), a.UserID); err != nil || u.Plan != "free" {
		t.Fatalf("User(%d) = %+v, %v", a.UserID, u, err)
	}
	if _, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "bob", "no-such-plan"); !errors.Is(err, domain.ErrUnknownPlan) {
		t.Fatalf("unknown plan: err = %v, want ErrUnknownPlan", err)
	}
}

func testSubjectPrincipalRace(t *testing.T, s store.Store) {
	setupPlans(t, s)
	const n = 16
	ids := make([]int64, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			p, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "racer", "free")
			ids[i], errs[i] = p.UserID, err
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("sign-in %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("racing first sign-ins gave users %v; want one", ids)
		}
	}
	// Exactly one user was created: the next user created takes the next id.
	u := newUser(t, s, "free")
	if u.ID <= ids[0] {
		t.Fatalf("next user id %d <= subject user %d", u.ID, ids[0])
	}
	if _, err := s.User(ctx(t), ids[0]); err != nil {
		t.Fatalf("subject user: %v", err)
	}
}

func testBindSubject(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	if err := s.BindSubject(ctx(t), u.ID, "https://idp.example", "carol"); err != nil {
		t.Fatalf("bind: %v", err)
	}
	p, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "carol", "free")
	if err != nil || p.UserID != u.ID || p.Plan.Name != "pro" {
		t.Fatalf("sign-in of a bound subject = %+v, %v; want user %d on pro", p, err, u.ID)
	}
	wantErr(t, "bind a bound subject", s.BindSubject(ctx(t), newUser(t, s, "free").ID, "https://idp.example", "carol"), domain.ErrConflict)
	wantErr(t, "bind a bound user", s.BindSubject(ctx(t), u.ID, "https://idp.example", "dave"), domain.ErrConflict)
	wantErr(t, "bind an unknown user", s.BindSubject(ctx(t), 1<<40, "https://idp.example", "erin"), domain.ErrNotFound)
}
