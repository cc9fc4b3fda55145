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

func testCreateSubjectUser(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u, err := s.CreateSubjectUser(ctx(t), "carol", "pro", ptr[int64](7), "https://idp.example", "carol")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if u.ID == 0 || u.Name != "carol" || u.Plan != "pro" || u.QuotaOverride == nil || *u.QuotaOverride != 7 {
		t.Fatalf("created %+v", u)
	}
	p, err := s.SubjectPrincipal(ctx(t), "https://idp.example", "carol", "free")
	if err != nil || p.UserID != u.ID || p.Plan.Name != "pro" || p.Plan.Quota != 7 {
		t.Fatalf("sign-in of a bound subject = %+v, %v; want user %d on pro with quota 7", p, err, u.ID)
	}
	_, err = s.CreateSubjectUser(ctx(t), "again", "free", nil, "https://idp.example", "carol")
	wantErr(t, "bind a bound subject", err, domain.ErrConflict)
	_, err = s.CreateSubjectUser(ctx(t), "x", "no-such-plan", nil, "https://idp.example", "dave")
	wantErr(t, "unknown plan", err, domain.ErrUnknownPlan)
	// Neither refusal created a user: the next one takes the next id.
	next := newUser(t, s, "free")
	if _, err := s.User(ctx(t), u.ID+1); err == nil && next.ID != u.ID+1 {
		t.Fatalf("a refused CreateSubjectUser left user %d behind", u.ID+1)
	}
}
