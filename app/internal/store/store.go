// Package store defines the system-of-record contract that every backend
// (Postgres, in-memory) implements, and that the contract suite in storetest
// checks. Feature packages define the narrower interfaces they need; this one
// is their union, used where concrete stores are wired and tested.
package store

import (
	"context"
	"time"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Store is the system of record. Implementations MUST be safe for concurrent
// use, MUST translate driver errors into domain errors (domain.ErrNotFound,
// domain.ErrTooManyItems, domain.ErrUnknownPlan, domain.ErrUnavailable when the
// database cannot be reached), and MUST honour context deadlines.
type Store interface {
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error

	// UpsertPlans creates or updates plans by name (plans come from config).
	UpsertPlans(ctx context.Context, plans []domain.Plan) error
	// Plans lists all plans, sorted by name.
	Plans(ctx context.Context) ([]domain.Plan, error)

	// CreateUser creates a user on an existing plan (domain.ErrUnknownPlan
	// otherwise).
	CreateUser(ctx context.Context, name, plan string, quotaOverride *int64) (domain.User, error)
	// User returns one user or domain.ErrNotFound.
	User(ctx context.Context, id int64) (domain.User, error)

	// CreateToken stores a token hash for an existing user
	// (domain.ErrNotFound otherwise).
	CreateToken(ctx context.Context, userID int64, hash domain.TokenHash, expiresAt *time.Time) (domain.Token, error)
	// RevokeToken marks a token revoked at `at` and returns it (with its hash,
	// so caches can be invalidated). Revoking twice keeps the first time.
	// domain.ErrNotFound when there is no such token.
	RevokeToken(ctx context.Context, tokenID int64, at time.Time) (domain.Token, error)
	// Principal resolves a token hash to its principal, with the effective
	// plan (quota override applied). Expired and revoked tokens ARE returned
	// (with ExpiresAt/RevokedAt set) so callers can say why they refuse them;
	// domain.ErrNotFound when the hash is unknown.
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error)

	// SubjectPrincipal returns the principal (TokenID 0, no expiry) of the
	// user bound to the JWT subject (issuer, subject), creating that user on
	// plan when there is none: exactly one user per subject, even when first
	// sign-ins race on several instances. domain.ErrUnknownPlan when a user
	// must be created on a plan that does not exist.
	SubjectPrincipal(ctx context.Context, issuer, subject, plan string) (domain.Principal, error)
	// CreateSubjectUser creates a user (as CreateUser) bound to the JWT
	// subject (issuer, subject) before its first sign-in, atomically:
	// domain.ErrConflict, and no user, when the subject is bound already.
	CreateSubjectUser(ctx context.Context, name, plan string, quotaOverride *int64, issuer, subject string) (domain.User, error)

	// ItemsHaving returns which of items the user's set contains (any order,
	// no duplicates).
	ItemsHaving(ctx context.Context, userID int64, items []string) ([]string, error)
	// UpdateItems adds then removes items of the user's set in one
	// transaction and bumps the set's version. Adding an item already present
	// and removing one absent count for nothing. If the resulting set would
	// exceed maxItems it changes nothing and returns domain.ErrTooManyItems.
	UpdateItems(ctx context.Context, userID int64, add, remove []string, maxItems int64) (domain.ItemChange, error)
	// LoadItems streams the user's whole set in chunks of at most chunkSize,
	// all from one consistent snapshot, and returns the set's version at that
	// snapshot. fn's error aborts the load and is returned.
	LoadItems(ctx context.Context, userID int64, chunkSize int, fn func(chunk []string) error) (version int64, err error)
	// ItemsVersion returns the current version of the user's set (0 for a
	// user that never changed it).
	ItemsVersion(ctx context.Context, userID int64) (int64, error)

	// Usage returns the persisted count of the user in the period starting at
	// periodStart (0 when none).
	Usage(ctx context.Context, userID int64, periodStart time.Time) (int64, error)
	// ApplyUsageBatch adds every delta of the batch and records its key, in
	// one transaction. A batch whose key was already applied changes nothing
	// and returns applied=false. Touched users become recently active.
	ApplyUsageBatch(ctx context.Context, batch domain.UsageBatch) (applied bool, err error)
	// RecentlyActiveUsers returns up to limit user ids, most recently active
	// first (activity = usage applied; users never active come last, newest
	// first).
	RecentlyActiveUsers(ctx context.Context, limit int) ([]int64, error)

	// Close releases resources.
	Close()
}
