package storetest

import (
	"context"
	"strconv"
	"testing"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store/memory"
)

// Memory returns an in-memory store with the plans Free and Pro and n users
// on Free (named u0, u1, …), for tests of what sits on a store.
func Memory(t testing.TB, n int) (*memory.Store, []domain.User) {
	t.Helper()
	ctx := context.Background()
	s := memory.New()
	if err := s.UpsertPlans(ctx, []domain.Plan{Free, Pro}); err != nil {
		t.Fatal(err)
	}
	users := make([]domain.User, n)
	for i := range users {
		u, err := s.CreateUser(ctx, "u"+strconv.Itoa(i), Free.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		users[i] = u
	}
	return s, users
}
