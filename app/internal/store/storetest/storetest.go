// Package storetest is the contract suite of store.Store: every backend runs
// it (memory_test.go, postgres_test.go), so they agree on semantics, errors
// included.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store"
)

// Plans every subtest starts with (Setup installs them).
var (
	Free = domain.Plan{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10}
	Pro  = domain.Plan{Name: "pro", Quota: 1_000_000, Period: domain.PeriodMonth, MaxItems: 1000}
)

// Run runs the contract suite; newStore must return a fresh, empty store for
// every call (closing it is up to newStore's t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"Plans", testPlans},
		{"PlansInvalid", testPlansInvalid},
		{"Users", testUsers},
		{"Tokens", testTokens},
		{"RevokeToken", testRevokeToken},
		{"Principal", testPrincipal},
		{"ItemsHaving", testItemsHaving},
		{"UpdateItemsCounting", testUpdateItemsCounting},
		{"UpdateItemsMaxItems", testUpdateItemsMaxItems},
		{"UpdateItemsUnstorable", testUpdateItemsUnstorable},
		{"UpdateItemsConcurrent", testUpdateItemsConcurrent},
		{"LoadItems", testLoadItems},
		{"LoadItemsSnapshot", testLoadItemsSnapshot},
		{"ItemsVersion", testItemsVersion},
		{"Usage", testUsage},
		{"ApplyUsageBatchIdempotent", testApplyUsageBatchIdempotent},
		{"ApplyUsageBatchUnknownUser", testApplyUsageBatchUnknownUser},
		{"ApplyUsageBatchConcurrent", testApplyUsageBatchConcurrent},
		{"RecentlyActiveUsers", testRecentlyActiveUsers},
		{"SubjectPrincipal", testSubjectPrincipal},
		{"SubjectPrincipalRace", testSubjectPrincipalRace},
		{"CreateSubjectUser", testCreateSubjectUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func setupPlans(t *testing.T, s store.Store) {
	t.Helper()
	if err := s.UpsertPlans(ctx(t), []domain.Plan{Free, Pro}); err != nil {
		t.Fatalf("UpsertPlans: %v", err)
	}
}

func newUser(t *testing.T, s store.Store, plan string) domain.User {
	t.Helper()
	u, err := s.CreateUser(ctx(t), "user-"+plan, plan, nil)
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", plan, err)
	}
	return u
}

// newToken creates a token of the user, hashed from plain, expiring at exp
// (nil: never).
func newToken(t *testing.T, s store.Store, userID int64, plain string, exp *time.Time) domain.Token {
	t.Helper()
	tok, err := s.CreateToken(ctx(t), userID, hashOf(plain), exp)
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

func hashOf(s string) domain.TokenHash { return sha256.Sum256([]byte(s)) }

func ptr[T any](v T) *T { return &v }

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// wantPlans checks that s has exactly want (in order) at step.
func wantPlans(t *testing.T, s store.Store, step string, want []domain.Plan) {
	t.Helper()
	got, err := s.Plans(ctx(t))
	if err != nil {
		t.Fatalf("Plans %s: %v", step, err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("Plans %s (-want +got):\n%s", step, diff)
	}
}

func testPlans(t *testing.T, s store.Store) {
	wantPlans(t, s, "on an empty store", nil)
	// Out of order, with a name given twice: the last entry wins.
	team := domain.Plan{Name: "Team", Quota: 5, Period: domain.PeriodMonth, MaxItems: 7}
	if err := s.UpsertPlans(ctx(t), []domain.Plan{Pro, team, {Name: "free", Quota: 1, Period: domain.PeriodMonth, MaxItems: 1}, Free}); err != nil {
		t.Fatalf("UpsertPlans: %v", err)
	}
	// Sorted byte-wise: upper case first.
	wantPlans(t, s, "after insert", []domain.Plan{team, Free, Pro})
	// Update one by name.
	pro2 := Pro
	pro2.Quota, pro2.Period, pro2.MaxItems = 42, domain.PeriodDay, 43
	if err := s.UpsertPlans(ctx(t), []domain.Plan{pro2}); err != nil {
		t.Fatalf("UpsertPlans(update): %v", err)
	}
	wantPlans(t, s, "after update", []domain.Plan{team, Free, pro2})
	if err := s.UpsertPlans(ctx(t), nil); err != nil {
		t.Fatalf("UpsertPlans(nil): %v", err)
	}
}

func testPlansInvalid(t *testing.T, s store.Store) {
	for _, p := range []domain.Plan{
		{Name: "weekly", Quota: 1, Period: "week", MaxItems: 1},
		{Name: "", Quota: 1, Period: domain.PeriodDay, MaxItems: 1},
	} {
		if err := s.UpsertPlans(ctx(t), []domain.Plan{Free, p}); err == nil {
			t.Errorf("UpsertPlans(%+v) succeeded, want an error", p)
		}
	}
	got, err := s.Plans(ctx(t))
	if err != nil {
		t.Fatalf("Plans: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("a refused UpsertPlans stored %v, want nothing", got)
	}
}

func testUsers(t *testing.T, s store.Store) {
	setupPlans(t, s)
	_, err := s.CreateUser(ctx(t), "ann", "gold", nil)
	wantErr(t, "CreateUser(unknown plan)", err, domain.ErrUnknownPlan)

	before := time.Now().Add(-time.Minute)
	a, err := s.CreateUser(ctx(t), "ann", "free", nil)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	b, err := s.CreateUser(ctx(t), "bob", "pro", ptr(int64(5)))
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if a.ID == 0 || a.ID == b.ID {
		t.Fatalf("user ids %d, %d: want distinct non-zero", a.ID, b.ID)
	}
	if a.CreatedAt.Before(before) || a.CreatedAt.After(time.Now().Add(time.Minute)) {
		t.Fatalf("CreatedAt = %v, want about now", a.CreatedAt)
	}
	want := []domain.User{
		{ID: a.ID, Name: "ann", Plan: "free", CreatedAt: a.CreatedAt},
		{ID: b.ID, Name: "bob", Plan: "pro", QuotaOverride: ptr(int64(5)), CreatedAt: b.CreatedAt},
	}
	if diff := cmp.Diff(want, []domain.User{a, b}); diff != "" {
		t.Fatalf("CreateUser results (-want +got):\n%s", diff)
	}
	for _, w := range want {
		got, err := s.User(ctx(t), w.ID)
		if err != nil {
			t.Fatalf("User(%d): %v", w.ID, err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Fatalf("User(%d) (-want +got):\n%s", w.ID, diff)
		}
	}
	_, err = s.User(ctx(t), b.ID+1000)
	wantErr(t, "User(unknown)", err, domain.ErrNotFound)
}

func testTokens(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	_, err := s.CreateToken(ctx(t), u.ID+1000, hashOf("x"), nil)
	wantErr(t, "CreateToken(unknown user)", err, domain.ErrNotFound)

	exp := time.Date(2031, 2, 3, 4, 5, 6, 789_123_456, time.UTC)
	t1 := newToken(t, s, u.ID, "a", &exp)
	t2 := newToken(t, s, u.ID, "b", nil)
	if t1.ID == 0 || t1.ID == t2.ID {
		t.Fatalf("token ids %d, %d: want distinct non-zero", t1.ID, t2.ID)
	}
	if t1.CreatedAt.IsZero() {
		t.Fatalf("CreatedAt is zero")
	}
	want := domain.Token{ID: t1.ID, UserID: u.ID, Hash: hashOf("a"), CreatedAt: t1.CreatedAt,
		ExpiresAt: ptr(exp.Truncate(time.Microsecond))} // stored at microsecond precision
	if diff := cmp.Diff(want, t1); diff != "" {
		t.Fatalf("CreateToken (-want +got):\n%s", diff)
	}
	_, err = s.CreateToken(ctx(t), u.ID, hashOf("a"), nil)
	wantErr(t, "CreateToken(duplicate hash)", err, domain.ErrConflict)
}

func testRevokeToken(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	tok := newToken(t, s, u.ID, "a", nil)
	_, err := s.RevokeToken(ctx(t), tok.ID+1000, time.Now())
	wantErr(t, "RevokeToken(unknown)", err, domain.ErrNotFound)

	first := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := s.RevokeToken(ctx(t), tok.ID, first)
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	want := tok
	want.RevokedAt = &first
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("RevokeToken (-want +got):\n%s", diff)
	}
	got, err = s.RevokeToken(ctx(t), tok.ID, first.Add(time.Hour))
	if err != nil {
		t.Fatalf("RevokeToken again: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("RevokeToken again must keep the first time (-want +got):\n%s", diff)
	}
}

func testPrincipal(t *testing.T, s store.Store) {
	setupPlans(t, s)
	_, err := s.Principal(ctx(t), hashOf("nobody"))
	wantErr(t, "Principal(unknown)", err, domain.ErrNotFound)

	plain := newUser(t, s, "free")
	trial, err := s.CreateUser(ctx(t), "trial", "pro", ptr(int64(7)))
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	revokedAt := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	tPlain := newToken(t, s, plain.ID, "plain", nil)
	tTrial := newToken(t, s, trial.ID, "trial", nil)
	tExpired := newToken(t, s, plain.ID, "expired", &past)
	tRevoked := newToken(t, s, plain.ID, "revoked", nil)
	if _, err := s.RevokeToken(ctx(t), tRevoked.ID, revokedAt); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	trialPlan := Pro
	trialPlan.Quota = 7
	tests := []struct {
		token string
		want  domain.Principal
	}{
		{"plain", domain.Principal{UserID: plain.ID, TokenID: tPlain.ID, Plan: Free}},
		{"trial", domain.Principal{UserID: trial.ID, TokenID: tTrial.ID, Plan: trialPlan}},
		{"expired", domain.Principal{UserID: plain.ID, TokenID: tExpired.ID, Plan: Free, ExpiresAt: &past}},
		{"revoked", domain.Principal{UserID: plain.ID, TokenID: tRevoked.ID, Plan: Free, RevokedAt: &revokedAt}},
	}
	for _, tt := range tests {
		got, err := s.Principal(ctx(t), hashOf(tt.token))
		if err != nil {
			t.Fatalf("Principal(%s): %v", tt.token, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Principal(%s) (-want +got):\n%s", tt.token, diff)
		}
	}
	// The plan is read at resolution time: a plan change shows at once.
	free2 := Free
	free2.Quota = 99
	if err := s.UpsertPlans(ctx(t), []domain.Plan{free2}); err != nil {
		t.Fatalf("UpsertPlans: %v", err)
	}
	got, err := s.Principal(ctx(t), hashOf("plain"))
	if err != nil {
		t.Fatalf("Principal: %v", err)
	}
	if diff := cmp.Diff(free2, got.Plan); diff != "" {
		t.Errorf("Principal after plan change (-want +got):\n%s", diff)
	}
}

func testItemsHaving(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	other := newUser(t, s, "pro")
	if _, err := s.UpdateItems(ctx(t), u.ID, []string{"a", "b", "c", "ü", "A"}, nil, Pro.MaxItems); err != nil {
		t.Fatalf("UpdateItems: %v", err)
	}
	if _, err := s.UpdateItems(ctx(t), other.ID, []string{"x"}, nil, Pro.MaxItems); err != nil {
		t.Fatalf("UpdateItems: %v", err)
	}
	tests := []struct {
		name  string
		user  int64
		items []string
		want  []string
	}{
		{"subset", u.ID, []string{"a", "x", "c", "zz"}, []string{"a", "c"}},
		{"duplicates in input", u.ID, []string{"b", "b", "b", "nope", "nope"}, []string{"b"}},
		{"case and unicode are exact", u.ID, []string{"B", "ü", "u", "A"}, []string{"A", "ü"}},
		{"none", u.ID, []string{"q"}, nil},
		{"empty input", u.ID, nil, nil},
		{"other user's set", other.ID, []string{"a", "x"}, []string{"x"}},
		{"unknown user", other.ID + 1000, []string{"a"}, nil},
		{"unstorable items are absent", u.ID, []string{"a\x00", "\xff", "a"}, []string{"a"}},
	}
	for _, tt := range tests {
		got, err := s.ItemsHaving(ctx(t), tt.user, tt.items)
		if err != nil {
			t.Fatalf("%s: ItemsHaving: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, sorted(got), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: ItemsHaving (-want +got):\n%s", tt.name, diff)
		}
	}
}

// loadAll returns the user's whole set and its version.
func loadAll(t *testing.T, s store.Store, userID int64) ([]string, int64) {
	t.Helper()
	var all []string
	v, err := s.LoadItems(ctx(t), userID, 1000, func(chunk []string) error {
		all = append(all, chunk...)
		return nil
	})
	if err != nil {
		t.Fatalf("LoadItems: %v", err)
	}
	return all, v
}

func testUpdateItemsCounting(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	_, err := s.UpdateItems(ctx(t), u.ID+1000, []string{"a"}, nil, 10)
	wantErr(t, "UpdateItems(unknown user)", err, domain.ErrNotFound)

	// Steps run in order on one user; each checks the change and the set.
	steps := []struct {
		name        string
		add, remove []string
		want        domain.ItemChange
		set         []string
	}{
		{"add", []string{"a", "b"}, nil, domain.ItemChange{Added: 2, Total: 2, Version: 1}, []string{"a", "b"}},
		{"duplicates in input count once", []string{"c", "c", "d", "c"}, nil, domain.ItemChange{Added: 2, Total: 4, Version: 2}, []string{"a", "b", "c", "d"}},
		{"adding present counts nothing", []string{"a", "e"}, nil, domain.ItemChange{Added: 1, Total: 5, Version: 3}, []string{"a", "b", "c", "d", "e"}},
		{"remove, absent counts nothing", nil, []string{"a", "zz", "b", "b"}, domain.ItemChange{Removed: 2, Total: 3, Version: 4}, []string{"c", "d", "e"}},
		{"no-op still bumps the version", []string{"c"}, []string{"zz"}, domain.ItemChange{Total: 3, Version: 5}, []string{"c", "d", "e"}},
		{"add then remove the same item", []string{"f"}, []string{"f", "c"}, domain.ItemChange{Added: 1, Removed: 2, Total: 2, Version: 6}, []string{"d", "e"}},
		{"empty change", nil, nil, domain.ItemChange{Total: 2, Version: 7}, []string{"d", "e"}},
	}
	for _, st := range steps {
		got, err := s.UpdateItems(ctx(t), u.ID, st.add, st.remove, Pro.MaxItems)
		if err != nil {
			t.Fatalf("%s: UpdateItems: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Fatalf("%s: UpdateItems (-want +got):\n%s", st.name, diff)
		}
		set, v := loadAll(t, s, u.ID)
		if diff := cmp.Diff(st.set, set, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: set after (-want +got):\n%s", st.name, diff)
		}
		if v != st.want.Version {
			t.Fatalf("%s: LoadItems version = %d, want %d", st.name, v, st.want.Version)
		}
	}
}

func testUpdateItemsMaxItems(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	if _, err := s.UpdateItems(ctx(t), u.ID, []string{"a", "b", "c"}, nil, 4); err != nil {
		t.Fatalf("UpdateItems: %v", err)
	}
	// 3 + 2 = 5 > 4: refused, nothing changes.
	_, err := s.UpdateItems(ctx(t), u.ID, []string{"d", "e"}, []string{"zz"}, 4)
	wantErr(t, "UpdateItems(over max)", err, domain.ErrTooManyItems)
	// A removal in the same call does not help if it removes what is not there;
	// a refused change also removes nothing.
	_, err = s.UpdateItems(ctx(t), u.ID, []string{"d", "e", "f"}, []string{"a"}, 4)
	wantErr(t, "UpdateItems(over max with removal)", err, domain.ErrTooManyItems)
	set, v := loadAll(t, s, u.ID)
	if diff := cmp.Diff([]string{"a", "b", "c"}, set); diff != "" {
		t.Fatalf("set after refused changes (-want +got):\n%s", diff)
	}
	if v != 1 {
		t.Fatalf("version after refused changes = %d, want 1", v)
	}
	// The limit applies to the resulting set: exactly at max is fine, and
	// removals in the same call count.
	got, err := s.UpdateItems(ctx(t), u.ID, []string{"d", "e"}, []string{"a"}, 4)
	if err != nil {
		t.Fatalf("UpdateItems(at max): %v", err)
	}
	if diff := cmp.Diff(domain.ItemChange{Added: 2, Removed: 1, Total: 4, Version: 2}, got); diff != "" {
		t.Fatalf("UpdateItems(at max) (-want +got):\n%s", diff)
	}
	// Adding present items to a full set is fine.
	if _, err := s.UpdateItems(ctx(t), u.ID, []string{"b"}, nil, 4); err != nil {
		t.Fatalf("UpdateItems(present, full set): %v", err)
	}
}

func testUpdateItemsUnstorable(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	for _, bad := range []string{"a\x00b", "\xff\xfe"} {
		if _, err := s.UpdateItems(ctx(t), u.ID, []string{"ok", bad}, nil, Pro.MaxItems); err == nil {
			t.Errorf("UpdateItems(add %q) succeeded, want an error", bad)
		}
	}
	set, v := loadAll(t, s, u.ID)
	if len(set) != 0 || v != 0 {
		t.Fatalf("after refused adds: set %q version %d, want empty, 0", set, v)
	}
	// Removing one is harmless: it cannot be in the set.
	got, err := s.UpdateItems(ctx(t), u.ID, []string{"ok"}, []string{"a\x00b"}, Pro.MaxItems)
	if err != nil {
		t.Fatalf("UpdateItems(remove unstorable): %v", err)
	}
	if diff := cmp.Diff(domain.ItemChange{Added: 1, Total: 1, Version: 1}, got); diff != "" {
		t.Fatalf("UpdateItems(remove unstorable) (-want +got):\n%s", diff)
	}
}

func testUpdateItemsConcurrent(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	const n = 24
	results := make([]domain.ItemChange, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = s.UpdateItems(ctx(t), u.ID, []string{"item-" + strconv.Itoa(i)}, nil, Pro.MaxItems)
		})
	}
	wg.Wait()
	var versions []int64
	for i, ch := range results {
		if errs[i] != nil {
			t.Fatalf("UpdateItems #%d: %v", i, errs[i])
		}
		// Serialised writers: the k-th to commit sees k items at version k.
		if ch.Added != 1 || ch.Total != ch.Version {
			t.Fatalf("UpdateItems #%d = %+v: want Added 1 and Total == Version", i, ch)
		}
		versions = append(versions, ch.Version)
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("versions = %v, want 1..%d each once", versions, n)
		}
	}
	set, v := loadAll(t, s, u.ID)
	if len(set) != n || v != n {
		t.Fatalf("final set has %d items at version %d, want %d at %d", len(set), v, n, n)
	}
}

func testLoadItems(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	_, err := s.LoadItems(ctx(t), u.ID+1000, 10, func([]string) error { return nil })
	wantErr(t, "LoadItems(unknown user)", err, domain.ErrNotFound)

	calls := 0
	v, err := s.LoadItems(ctx(t), u.ID, 10, func([]string) error { calls++; return nil })
	if err != nil || v != 0 || calls != 0 {
		t.Fatalf("LoadItems(empty set) = %d, %v with %d calls; want 0, nil, no calls", v, err, calls)
	}

	var items []string
	for i := range 10 {
		items = append(items, fmt.Sprintf("i%02d", i))
	}
	if _, err := s.UpdateItems(ctx(t), u.ID, items[5:], nil, Pro.MaxItems); err != nil {
		t.Fatalf("UpdateItems: %v", err)
	}
	if _, err := s.UpdateItems(ctx(t), u.ID, items[:5], nil, Pro.MaxItems); err != nil {
		t.Fatalf("UpdateItems: %v", err)
	}
	tests := []struct {
		chunkSize int
		want      [][]string
	}{
		{3, [][]string{items[0:3], items[3:6], items[6:9], items[9:]}},
		{5, [][]string{items[0:5], items[5:]}},
		{10, [][]string{items}},
		{1000, [][]string{items}},
	}
	for _, tt := range tests {
		var got [][]string
		v, err := s.LoadItems(ctx(t), u.ID, tt.chunkSize, func(chunk []string) error {
			got = append(got, chunk) // kept without copying: chunks must be fresh
			return nil
		})
		if err != nil {
			t.Fatalf("LoadItems(%d): %v", tt.chunkSize, err)
		}
		if v != 2 {
			t.Fatalf("LoadItems(%d) version = %d, want 2", tt.chunkSize, v)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Fatalf("LoadItems(%d) chunks, sorted byte-wise (-want +got):\n%s", tt.chunkSize, diff)
		}
	}
	stop := errors.New("stop")
	calls = 0
	_, err = s.LoadItems(ctx(t), u.ID, 2, func([]string) error { calls++; return stop })
	wantErr(t, "LoadItems(fn fails)", err, stop)
	if calls != 1 {
		t.Fatalf("fn called %d times after failing, want 1", calls)
	}
}

// testLoadItemsSnapshot loads while a writer adds one item per version: a
// consistent snapshot always has exactly `version` items.
func testLoadItemsSnapshot(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	const writes = 60
	done := make(chan error, 1)
	go func() {
		for i := range writes {
			if _, err := s.UpdateItems(ctx(t), u.ID, []string{fmt.Sprintf("w%03d", i)}, nil, Pro.MaxItems); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	loads := 0
	for {
		n := 0
		v, err := s.LoadItems(ctx(t), u.ID, 7, func(chunk []string) error { n += len(chunk); return nil })
		if err != nil {
			t.Fatalf("LoadItems: %v", err)
		}
		if int64(n) != v {
			t.Fatalf("LoadItems saw %d items at version %d: not one snapshot", n, v)
		}
		loads++
		if v == writes {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("%d loads during %d writes", loads, writes)
}

func testItemsVersion(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "pro")
	_, err := s.ItemsVersion(ctx(t), u.ID+1000)
	wantErr(t, "ItemsVersion(unknown user)", err, domain.ErrNotFound)
	var last int64
	for i := range 3 {
		v, err := s.ItemsVersion(ctx(t), u.ID)
		if err != nil {
			t.Fatalf("ItemsVersion: %v", err)
		}
		if i == 0 && v != 0 {
			t.Fatalf("ItemsVersion of a new user = %d, want 0", v)
		}
		if i > 0 && v <= last {
			t.Fatalf("ItemsVersion went from %d to %d: want strictly increasing", last, v)
		}
		last = v
		ch, err := s.UpdateItems(ctx(t), u.ID, []string{"x"}, nil, Pro.MaxItems)
		if err != nil {
			t.Fatalf("UpdateItems: %v", err)
		}
		if ch.Version <= v {
			t.Fatalf("UpdateItems version %d not above %d", ch.Version, v)
		}
	}
	// A refused change does not bump it.
	_, err = s.UpdateItems(ctx(t), u.ID, []string{"y", "z"}, nil, 2)
	wantErr(t, "UpdateItems(over max)", err, domain.ErrTooManyItems)
	v, err := s.ItemsVersion(ctx(t), u.ID)
	if err != nil {
		t.Fatalf("ItemsVersion: %v", err)
	}
	if v != 3 {
		t.Fatalf("ItemsVersion after refused change = %d, want 3", v)
	}
}

var (
	day1 = time.Date(2030, 5, 1, 0, 0, 0, 0, time.UTC)
	day2 = time.Date(2030, 5, 2, 0, 0, 0, 0, time.UTC)
	day3 = time.Date(2030, 5, 3, 0, 0, 0, 0, time.UTC)
)

func usageOf(t *testing.T, s store.Store, user int64, start time.Time) int64 {
	t.Helper()
	n, err := s.Usage(ctx(t), user, start)
	if err != nil {
		t.Fatalf("Usage(%d, %s): %v", user, start, err)
	}
	return n
}

func testUsage(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	if n := usageOf(t, s, u.ID, day1); n != 0 {
		t.Fatalf("Usage of an unknown period = %d, want 0", n)
	}
	if n := usageOf(t, s, u.ID+1000, day1); n != 0 {
		t.Fatalf("Usage of an unknown user = %d, want 0", n)
	}
	applied, err := s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Key: "k1", Deltas: []domain.UsageDelta{
		{UserID: u.ID, PeriodStart: day1, Delta: 3},
		{UserID: u.ID, PeriodStart: day2, Delta: 4},
		{UserID: u.ID, PeriodStart: day1, Delta: 5}, // same period twice in one batch
	}})
	if err != nil || !applied {
		t.Fatalf("ApplyUsageBatch = %v, %v; want true, nil", applied, err)
	}
	// The period is a UTC day: any zone's representation of its start works.
	ny := time.FixedZone("UTC-5", -5*3600)
	got := map[string]int64{
		"day1":       usageOf(t, s, u.ID, day1),
		"day2":       usageOf(t, s, u.ID, day2),
		"day1 in NY": usageOf(t, s, u.ID, day1.In(ny)),
		"day3":       usageOf(t, s, u.ID, day2.AddDate(0, 0, 1)),
	}
	want := map[string]int64{"day1": 8, "day2": 4, "day1 in NY": 8, "day3": 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Usage (-want +got):\n%s", diff)
	}
}

func testApplyUsageBatchIdempotent(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	batch := domain.UsageBatch{Key: "batch-1", Deltas: []domain.UsageDelta{{UserID: u.ID, PeriodStart: day1, Delta: 10}}}
	for i, want := range []bool{true, false, false} {
		applied, err := s.ApplyUsageBatch(ctx(t), batch)
		if err != nil {
			t.Fatalf("ApplyUsageBatch #%d: %v", i, err)
		}
		if applied != want {
			t.Fatalf("ApplyUsageBatch #%d applied = %v, want %v", i, applied, want)
		}
	}
	// Same key, different content: still a replay.
	batch.Deltas[0].Delta = 1000
	if applied, err := s.ApplyUsageBatch(ctx(t), batch); err != nil || applied {
		t.Fatalf("replay with other content = %v, %v; want false, nil", applied, err)
	}
	if n := usageOf(t, s, u.ID, day1); n != 10 {
		t.Fatalf("Usage = %d, want 10 (counted once)", n)
	}
	// An empty batch is applied (its key recorded) and changes nothing.
	for i, want := range []bool{true, false} {
		applied, err := s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Key: "empty"})
		if err != nil || applied != want {
			t.Fatalf("empty batch #%d = %v, %v; want %v, nil", i, applied, err, want)
		}
	}
	if _, err := s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Deltas: batch.Deltas}); err == nil {
		t.Fatalf("ApplyUsageBatch without a key succeeded, want an error")
	}
}

func testApplyUsageBatchUnknownUser(t *testing.T, s store.Store) {
	setupPlans(t, s)
	u := newUser(t, s, "free")
	batch := domain.UsageBatch{Key: "k", Deltas: []domain.UsageDelta{
		{UserID: u.ID, PeriodStart: day1, Delta: 1},
		{UserID: u.ID + 1000, PeriodStart: day1, Delta: 1},
	}}
	_, err := s.ApplyUsageBatch(ctx(t), batch)
	wantErr(t, "ApplyUsageBatch(unknown user)", err, domain.ErrNotFound)
	if n := usageOf(t, s, u.ID, day1); n != 0 {
		t.Fatalf("a failed batch counted %d, want 0", n)
	}
	// The key was not recorded: the corrected batch applies.
	batch.Deltas = batch.Deltas[:1]
	if applied, err := s.ApplyUsageBatch(ctx(t), batch); err != nil || !applied {
		t.Fatalf("corrected batch = %v, %v; want true, nil", applied, err)
	}
	if n := usageOf(t, s, u.ID, day1); n != 1 {
		t.Fatalf("Usage = %d, want 1", n)
	}
}

func testApplyUsageBatchConcurrent(t *testing.T, s store.Store) {
	setupPlans(t, s)
	users := []domain.User{newUser(t, s, "free"), newUser(t, s, "free"), newUser(t, s, "pro")}
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	applied := make([]bool, 2*n)
	for i := range n {
		// Distinct keys, overlapping users in different orders.
		wg.Go(func() {
			var ds []domain.UsageDelta
			for j := range users {
				u := users[(i+j)%len(users)]
				// Half the batches count in another period, so they share
				// no usage row with the others, only the users.
				ds = append(ds, domain.UsageDelta{UserID: u.ID, PeriodStart: []time.Time{day1, day3}[i%2], Delta: int64(j + 1)})
			}
			applied[i], errs[i] = s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Key: "distinct-" + strconv.Itoa(i), Deltas: ds})
		})
		// One key, n times at once: exactly one applies.
		wg.Go(func() {
			applied[n+i], errs[n+i] = s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Key: "shared",
				Deltas: []domain.UsageDelta{{UserID: users[0].ID, PeriodStart: day2, Delta: 1}}})
		})
	}
	wg.Wait()
	shared := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ApplyUsageBatch #%d: %v", i, err)
		}
		if i < n && !applied[i] {
			t.Fatalf("distinct batch #%d not applied", i)
		}
		if i >= n && applied[i] {
			shared++
		}
	}
	if shared != 1 {
		t.Fatalf("batch with a shared key applied %d times, want 1", shared)
	}
	// The expected sums, recomputed the same way.
	type cell struct {
		user int64
		day  time.Time
	}
	want := map[cell]int64{}
	for i := range n {
		for j := range users {
			want[cell{users[(i+j)%len(users)].ID, []time.Time{day1, day3}[i%2]}] += int64(j + 1)
		}
	}
	got := map[cell]int64{}
	for _, u := range users {
		for _, d := range []time.Time{day1, day3} {
			got[cell{u.ID, d}] = usageOf(t, s, u.ID, d)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Usage after concurrent batches (-want +got):\n%s", diff)
	}
	if n := usageOf(t, s, users[0].ID, day2); n != 1 {
		t.Fatalf("Usage of the shared-key batch = %d, want 1", n)
	}
}

func testRecentlyActiveUsers(t *testing.T, s store.Store) {
	setupPlans(t, s)
	a, b, c, d := newUser(t, s, "free"), newUser(t, s, "free"), newUser(t, s, "free"), newUser(t, s, "free")
	recent := func(limit int) []int64 {
		t.Helper()
		ids, err := s.RecentlyActiveUsers(ctx(t), limit)
		if err != nil {
			t.Fatalf("RecentlyActiveUsers(%d): %v", limit, err)
		}
		return ids
	}
	apply := func(key string, users ...domain.User) {
		t.Helper()
		var ds []domain.UsageDelta
		for _, u := range users {
			ds = append(ds, domain.UsageDelta{UserID: u.ID, PeriodStart: day1, Delta: 1})
		}
		if _, err := s.ApplyUsageBatch(ctx(t), domain.UsageBatch{Key: key, Deltas: ds}); err != nil {
			t.Fatalf("ApplyUsageBatch(%s): %v", key, err)
		}
	}
	check := func(what string, limit int, want ...domain.User) {
		t.Helper()
		ids := []int64{}
		for _, u := range want {
			ids = append(ids, u.ID)
		}
		if diff := cmp.Diff(ids, recent(limit), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("%s: RecentlyActiveUsers(%d) (-want +got):\n%s", what, limit, diff)
		}
	}
	check("never active: newest first", 10, d, c, b, a)
	apply("1", b)
	apply("2", c)
	check("active first, latest first", 10, c, b, d, a)
	check("limit", 2, c, b)
	check("limit 0", 0)
	apply("3", a, d)
	check("one batch: newest first among equals", 10, d, a, c, b)
	apply("3", b) // replayed key: no activity
	check("replay changes nothing", 10, d, a, c, b)
	apply("4", b)
	check("later activity moves up", 3, b, d, a)
}
