// Package domain holds warmpath's core types: users, plans, tokens, principals,
// items and usage. It has no dependencies beyond the standard library; every
// other package speaks in these types.
package domain

import (
	"errors"
	"time"
)

// Period is the length of a plan's quota window, always aligned to UTC.
type Period string

// The periods a plan can have.
const (
	PeriodDay   Period = "day"
	PeriodMonth Period = "month"
)

// Valid reports whether p is a known period.
func (p Period) Valid() bool { return p == PeriodDay || p == PeriodMonth }

// Window returns the UTC window of period p that contains t: its start and the
// start of the next window (the reset time).
func (p Period) Window(t time.Time) (start, reset time.Time) {
	t = t.UTC()
	switch p {
	case PeriodMonth:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	default:
		start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	}
}

// Plan is a named quota: Quota queries per Period, and at most MaxItems items
// in a user's set.
type Plan struct {
	Name     string `json:"name"`
	Quota    int64  `json:"quota"`
	Period   Period `json:"period"`
	MaxItems int64  `json:"maxItems"`
}

// User is an account. QuotaOverride, when set, replaces the plan's quota for
// this user only (trials, tests).
type User struct {
	ID            int64     `json:"id"`
	Name          string    `json:"name"`
	Plan          string    `json:"plan"`
	QuotaOverride *int64    `json:"quotaOverride,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
}

// TokenHash is the SHA-256 of a bearer token. Only hashes are ever stored.
type TokenHash [32]byte

// Token is a stored bearer token (its hash and lifecycle, never its text).
type Token struct {
	ID        int64      `json:"id"`
	UserID    int64      `json:"userId"`
	Hash      TokenHash  `json:"-"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// Principal is what a token resolves to: the caller, with the effective plan
// (quota override already applied) and the token's lifecycle.
type Principal struct {
	UserID    int64      `json:"u"`
	TokenID   int64      `json:"t"`
	Plan      Plan       `json:"p"`
	ExpiresAt *time.Time `json:"e,omitempty"`
	RevokedAt *time.Time `json:"r,omitempty"`
}

// ItemChange is the result of adding and removing items of one user's set.
// Version is the set's version after the change (monotonic per user).
type ItemChange struct {
	Added   int64
	Removed int64
	Total   int64
	Version int64
}

// UsageDelta is a count of metered requests of one user in one period that has
// not yet reached the system of record.
type UsageDelta struct {
	UserID      int64
	PeriodStart time.Time // UTC start of the period window
	Delta       int64
}

// UsageBatch is a set of deltas applied to the system of record atomically and
// at most once: Key is its idempotency key.
type UsageBatch struct {
	Key    string
	Deltas []UsageDelta
}

// Domain errors returned by stores and caches. Callers compare with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("conflict")
	ErrTooManyItems  = errors.New("too many items for the plan")
	ErrUnknownPlan   = errors.New("unknown plan")
	ErrUnavailable   = errors.New("dependency unavailable")
	ErrStaleSnapshot = errors.New("stale snapshot")
)

// UsageOutcome is what an atomic check-and-count decided.
type UsageOutcome int

// The outcomes of a check-and-count.
const (
	UsageAllowed UsageOutcome = iota + 1 // counted
	UsageDenied                          // over quota, not counted
	UsageCold                            // no counter in the cache yet: seed it first

	// Outcomes of a count carrying an idempotency key (IdemKey).

	UsageReplay     // the key's first answer is stored: replay it, nothing counted
	UsageInUse      // the key's first request is still being answered
	UsageReused     // the key was used with another request
	UsageNotCounted // the key's first request was counted but its answer lost: answer afresh, do not count
)

// String returns the outcome's name.
func (o UsageOutcome) String() string {
	switch o {
	case UsageAllowed:
		return "allowed"
	case UsageDenied:
		return "denied"
	case UsageCold:
		return "cold"
	case UsageReplay:
		return "replay"
	case UsageInUse:
		return "in_use"
	case UsageReused:
		return "reused"
	case UsageNotCounted:
		return "not_counted"
	}
	return "UsageOutcome(?)"
}

// UsageResult is the outcome of a check-and-count and the count it saw: the
// count after this request when allowed, the current count when denied.
type UsageResult struct {
	Outcome UsageOutcome
	Used    int64
	// Answer is the stored first answer (UsageReplay).
	Answer StoredAnswer
	// RetryAfter is how long the key's first request may still hold it
	// (UsageInUse).
	RetryAfter time.Duration
}

// IdemKey is a request's Idempotency-Key as the stores see it: Key is a
// digest of the client's key (per user: the stores key it under the user),
// Fingerprint a digest of the request it was first used with.
type IdemKey struct {
	Key         string
	Fingerprint string
}

// CountRequest is one metered request's check-and-count.
type CountRequest struct {
	UserID       int64
	Start, Reset time.Time // the period [Start, Reset)
	Limit        int64
	// Idem, when its Key is set, is the request's idempotency key: the
	// count and the key's record are one atomic step.
	Idem IdemKey
	// IdemTTL is how long the key is kept; IdemLease how long its first
	// request holds it (after that, a retry is answered afresh).
	IdemTTL, IdemLease time.Duration
}

// CachedHasNot is a has-not lookup that the item-set cache answered in the
// same step as a metered request's count (one round trip instead of two).
type CachedHasNot struct {
	// Warm: the user's cached set answered, and Missing is the answer (the
	// items it does not have, in input order, each once). Otherwise the
	// lookup was not made (the count was not allowed) or the set is not
	// cached, and the query asks the item set the usual way.
	Warm    bool
	Missing []string
	// QueryTime is the server's own time (its clock, in microseconds) for
	// the lookup: what lets the request's phases be told apart though they
	// share a round trip.
	QueryTime time.Duration
}

// Settlement is what settling counts of unknown outcome found.
type Settlement struct {
	// Corrections are the deltas the system of record needs so that it
	// holds one unit per served request: served − applied per user and
	// period (zero deltas are left out).
	Corrections []UsageDelta
	// Applied and NotApplied count the unknown outcomes settled.
	Applied, NotApplied int64
}

// StoredAnswer is the first answer of a request with an idempotency key.
type StoredAnswer struct {
	Status int
	Body   string
}
