// Package warmup keeps users' hot data in the cache before they need it.
//
// A Manager runs two kinds of work in the background, neither of which ever
// blocks a request:
//
//   - System warmup: SystemDelay after Start, the wiring's named steps (pool
//     connections, prepared statements, Lua scripts, plans) run in order, each
//     timed and retried with exponential backoff, never fatal; then the most
//     recently active users are enqueued as low-priority system jobs.
//   - User warmup: a bounded queue and a worker pool. A job loads a user's
//     session (token → principal), usage counter of the current period and
//     whole item set into the cache, and records per-part state and timings
//     in a StatusStore shared by every instance.
//
// # Queue semantics
//
// Login jobs always run before system jobs: workers take from the login queue
// first, and system jobs may occupy at most SystemQueueSize of the QueueSize
// slots, so a large hot-user warmup never fills the queue against logins. A
// login job for a user whose system job is still queued promotes that job.
//
// One job per user at a time: in process by a map of jobs in flight, across
// instances by a Locker (a Valkey lock with expiry). A user whose last warmup
// finished ready within TTL (and whose item set is still cached) is not warmed
// again. A full queue answers ErrQueueFull at once.
//
// # Status lifecycle
//
// idle → queued → running → ready | failed. Queued and running statuses are
// stored with the lock's TTL and refreshed while the job runs, so a crashed
// instance's stale "running" soon reads idle; final statuses are kept for
// max(TTL, CacheTTL).
//
// # Shutdown
//
// Stop drops queued jobs: their stored status goes back to what it was before
// they were enqueued (idle when there was none) and their locks are released.
// Running jobs are cancelled through their context and end failed with the
// error "cancelled: shutting down"; their locks are released too.
//
// The package knows nothing of HTTP, Postgres or Valkey: it defines the small
// interfaces it needs, and the wiring passes the real implementations.
package warmup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/internal/ctxtime"
)

// Kind says why a job runs. It is the kind label of warmup metrics.
type Kind string

// The kinds of warmup job.
const (
	KindLogin  Kind = "login"  // requested by the user (POST /api/user/warmup); high priority
	KindSystem Kind = "system" // a hot user at start; low priority
	KindInline Kind = "inline" // run in the caller's goroutine (WARMUP_STRATEGY=inline)
)

// State is the state of a warmup, of one of its parts, or of a system step.
type State string

// The states. Skipped applies to parts and system steps only.
const (
	StateIdle    State = "idle"
	StateQueued  State = "queued"
	StateRunning State = "running"
	StateReady   State = "ready"
	StateFailed  State = "failed"
	StateSkipped State = "skipped"
)

// The parts of a warmup job, keys of Status.Parts.
const (
	PartSession = "session"
	PartUsage   = "usage"
	PartItems   = "items"
)

// Job results reported to Observer.WarmupJob.
const (
	ResultReady  = "ready"
	ResultFailed = "failed"
)

// PartStatus is the state of one part of a warmup job.
type PartStatus struct {
	State      State    `json:"state"`
	DurationMs *float64 `json:"durationMs,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// Status is a user's warmup status: the warmupStatus of the public API.
// Timestamps are RFC 3339 and null when unset; DurationMs is the time from
// start to finish.
type Status struct {
	State       State                 `json:"state"`
	RequestedAt *time.Time            `json:"requestedAt"`
	StartedAt   *time.Time            `json:"startedAt"`
	FinishedAt  *time.Time            `json:"finishedAt"`
	DurationMs  *float64              `json:"durationMs"`
	Error       string                `json:"error,omitempty"`
	Parts       map[string]PartStatus `json:"parts"`
}

// IdleStatus is the status of a user never warmed (or whose status expired).
func IdleStatus() Status {
	return Status{State: StateIdle, Parts: parts(StateIdle, StateIdle)}
}

// clone returns a deep copy, safe to hand out while the original changes.
func (s Status) clone() Status {
	c := s
	c.Parts = make(map[string]PartStatus, len(s.Parts))
	for k, v := range s.Parts {
		c.Parts[k] = v
	}
	return c
}

func parts(session, rest State) map[string]PartStatus {
	return map[string]PartStatus{
		PartSession: {State: session},
		PartUsage:   {State: rest},
		PartItems:   {State: rest},
	}
}

// Job asks for one user's warmup.
type Job struct {
	UserID int64
	// TokenHash is the caller's token on login warmups: the session part
	// caches its principal. Without it the session part is skipped.
	TokenHash *domain.TokenHash
	// Kind defaults to KindLogin for Enqueue; Run always uses KindInline.
	Kind Kind
	// Cause is the context of the request that asked for the job, only read
	// for its span context: the job's span links to it. May be nil.
	Cause context.Context
}

// Errors of Enqueue and Run.
var (
	// ErrQueueFull means the queue has no room for the job's kind; the HTTP
	// layer answers 503 with Retry-After.
	ErrQueueFull = errors.New("warmup queue is full")
	// ErrStopped means the Manager has been stopped.
	ErrStopped = errors.New("warmup manager stopped")
)

// Store is what warmup reads from the system of record. Implementations MUST
// be safe for concurrent use; store.Store satisfies it.
type Store interface {
	// Principal resolves a token hash (domain.ErrNotFound when unknown).
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error)
	// User returns one user (domain.ErrNotFound when unknown).
	User(ctx context.Context, id int64) (domain.User, error)
	// Plans lists all plans.
	Plans(ctx context.Context) ([]domain.Plan, error)
	// LoadItems streams the user's whole set in chunks from one consistent
	// snapshot and returns the snapshot's version.
	LoadItems(ctx context.Context, userID int64, chunkSize int, fn func(chunk []string) error) (version int64, err error)
	// RecentlyActiveUsers returns up to limit user ids, most recently
	// active first.
	RecentlyActiveUsers(ctx context.Context, limit int) ([]int64, error)
}

// SessionCache caches token → principal: the principal cache, the warmup
// part "session". PutPrincipal keeps a principal at most maxTTL, less for a
// token that expires sooner (the cache owns that lifetime rule, the same for
// requests and warmup). Safe for concurrent use.
type SessionCache interface {
	PutPrincipal(ctx context.Context, hash domain.TokenHash, p domain.Principal, maxTTL time.Duration) error
}

// UsageSeeder seeds the hot usage counter of the user's current period from
// the system of record unless a counter already exists: the same Seed the
// request path uses on a cold counter (usage.Service satisfies it). Safe for
// concurrent use.
type UsageSeeder interface {
	Seed(ctx context.Context, userID int64, period domain.Period) error
}

// ItemLoad installs one snapshot of a user's item set: Add chunks, then
// Finish with the snapshot's version, or Abort. Finish returns an error
// wrapping domain.ErrStaleSnapshot when the set changed after the snapshot.
type ItemLoad interface {
	Add(ctx context.Context, chunk []string) error
	Finish(ctx context.Context, version int64, ttl time.Duration) error
	Abort(ctx context.Context) error
}

// ItemCache holds users' item sets. Safe for concurrent use. Build one from a
// cache whose BeginItemsLoad returns a concrete type with ItemsOf.
type ItemCache interface {
	BeginItemsLoad(userID int64) ItemLoad
	// ItemsWarm reports whether the user's set is cached (and its version).
	ItemsWarm(ctx context.Context, userID int64) (version int64, warm bool, err error)
}

// ItemsOf adapts a cache's methods to ItemCache, so a BeginItemsLoad that
// returns a concrete type (*valkey.ItemsLoad) fits:
//
//	warmup.ItemsOf(cache.BeginItemsLoad, cache.ItemsWarm)
func ItemsOf[L ItemLoad](begin func(userID int64) L, warm func(ctx context.Context, userID int64) (int64, bool, error)) ItemCache {
	return itemsFuncs[L]{begin: begin, warm: warm}
}

type itemsFuncs[L ItemLoad] struct {
	begin func(int64) L
	warm  func(context.Context, int64) (int64, bool, error)
}

func (f itemsFuncs[L]) BeginItemsLoad(userID int64) ItemLoad { return f.begin(userID) }
func (f itemsFuncs[L]) ItemsWarm(ctx context.Context, userID int64) (int64, bool, error) {
	return f.warm(ctx, userID)
}

// StatusStore keeps warmup statuses where every instance reads them.
// Implementations MUST be safe for concurrent use.
type StatusStore interface {
	// Get returns the user's status; found is false when there is none.
	Get(ctx context.Context, userID int64) (st Status, found bool, err error)
	// Put stores the user's status for ttl.
	Put(ctx context.Context, userID int64, st Status, ttl time.Duration) error
	// Delete removes the user's status (it then reads idle).
	Delete(ctx context.Context, userID int64) error
}

// Locker is the per-user warmup lock shared by every instance. token
// identifies the holder. Implementations MUST be safe for concurrent use.
type Locker interface {
	// Acquire takes the lock for ttl unless someone holds it.
	Acquire(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error)
	// Extend resets the lock's ttl if token still holds it.
	Extend(ctx context.Context, userID int64, token string, ttl time.Duration) (bool, error)
	// Release drops the lock if token holds it.
	Release(ctx context.Context, userID int64, token string) (bool, error)
	// Swap hands the lock from token from to token to (resetting its ttl)
	// only if from holds it.
	Swap(ctx context.Context, userID int64, from, to string, ttl time.Duration) (bool, error)
	// Holder returns the token that holds the lock, if any.
	Holder(ctx context.Context, userID int64) (string, bool, error)
}

// Admitter is a Locker (and StatusStore) that admits a user's first warmup
// in one step, so a first login's enqueue costs one round trip. The Manager
// uses it when Config.Locks implements it and is Config.Status too.
// Implementations MUST be safe for concurrent use.
type Admitter interface {
	// Admit stores st as the user's status and takes the user's lock with
	// token, both for ttl and both only if the user has no status and nobody
	// holds the lock. Otherwise it changes nothing and returns the current
	// status (found is false when there is none: the lock is held).
	Admit(ctx context.Context, userID int64, token string, st Status, ttl time.Duration) (admitted bool, cur Status, found bool, err error)
}

// Observer is told about finished jobs and reads the queue depth
// (telemetry.Metrics satisfies it).
type Observer interface {
	WarmupJob(ctx context.Context, kind, result string, d time.Duration)
	ObserveQueueDepth(f func() int64)
}

// Step is a named system warmup step supplied by the wiring.
type Step struct {
	Name string
	Run  func(ctx context.Context) error
}

// Defaults applied by New to zero Config fields.
const (
	DefaultQueueSize      = 10000
	DefaultWorkers        = 4
	DefaultTTL            = 10 * time.Minute
	DefaultCacheTTL       = 24 * time.Hour
	DefaultChunkSize      = 1000
	DefaultLockTTL        = 30 * time.Second
	DefaultJobTimeout     = 2 * time.Minute
	DefaultItemsAttempts  = 3
	DefaultStepAttempts   = 5
	DefaultStepBackoff    = 100 * time.Millisecond
	DefaultStepMaxBackoff = 5 * time.Second
	DefaultPollInterval   = 10 * time.Millisecond
)

// HotUsersStep is the name of the built-in last system step, which enqueues
// the most recently active users.
const HotUsersStep = "hot_users"

// Config configures a Manager. Store, Items, Usage, Sessions, Status and
// Locks are required; zero numbers take the defaults above.
type Config struct {
	QueueSize int // login + system jobs waiting
	// SystemQueueSize caps the queued system jobs (default QueueSize/2), so
	// logins always find room.
	SystemQueueSize int
	Workers         int
	TTL             time.Duration // a user warmed ready within TTL is not warmed again
	CacheTTL        time.Duration // TTL of warmed data in the cache

	SystemDelay time.Duration // wait after Start before the system warmup
	HotUsers    int           // most recently active users warmed at start (0: none)
	SystemSteps []Step        // run in order before the hot users

	Store    Store
	Items    ItemCache
	Usage    UsageSeeder
	Sessions SessionCache
	Status   StatusStore
	Locks    Locker

	Observer Observer     // optional
	Tracer   trace.Tracer // optional: a span per job, linked to Job.Cause
	Logger   *slog.Logger // optional
	Now      func() time.Time
	// Wait waits d or until ctx ends (ctx.Err() then); it is the system
	// delay and the retry backoff, injectable so tests never sleep.
	Wait func(ctx context.Context, d time.Duration) error

	ChunkSize      int           // items per load chunk
	LockTTL        time.Duration // per-user lock (and queued/running status) TTL; refreshed while running
	JobTimeout     time.Duration // deadline of one job
	ItemsAttempts  int           // loads of the item set before a stale snapshot fails the part
	StepAttempts   int           // attempts of a system step
	StepBackoff    time.Duration // first retry delay of a system step, doubled each time
	StepMaxBackoff time.Duration // cap of the retry delay
	PollInterval   time.Duration // Run polls this often while another instance warms the user
}

func (c Config) withDefaults() (Config, error) {
	for _, req := range []struct {
		name    string
		missing bool
	}{
		{"Store", c.Store == nil}, {"Items", c.Items == nil}, {"Usage", c.Usage == nil},
		{"Sessions", c.Sessions == nil}, {"Status", c.Status == nil}, {"Locks", c.Locks == nil},
	} {
		if req.missing {
			return c, errors.New("warmup: Config." + req.name + " is required")
		}
	}
	for _, s := range c.SystemSteps {
		if s.Name == "" || s.Run == nil {
			return c, fmt.Errorf("warmup: system step %q needs a name and a Run func", s.Name)
		}
	}
	def(&c.QueueSize, DefaultQueueSize)
	def(&c.SystemQueueSize, max(c.QueueSize/2, 1))
	c.SystemQueueSize = min(c.SystemQueueSize, c.QueueSize)
	def(&c.Workers, DefaultWorkers)
	def(&c.ChunkSize, DefaultChunkSize)
	def(&c.ItemsAttempts, DefaultItemsAttempts)
	def(&c.StepAttempts, DefaultStepAttempts)
	def(&c.TTL, DefaultTTL)
	def(&c.CacheTTL, DefaultCacheTTL)
	def(&c.LockTTL, DefaultLockTTL)
	def(&c.JobTimeout, DefaultJobTimeout)
	def(&c.StepBackoff, DefaultStepBackoff)
	def(&c.StepMaxBackoff, DefaultStepMaxBackoff)
	def(&c.PollInterval, DefaultPollInterval)
	if c.HotUsers < 0 {
		c.HotUsers = 0
	}
	if c.SystemDelay < 0 {
		c.SystemDelay = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Wait == nil {
		c.Wait = ctxtime.Sleep
	}
	return c, nil
}

// def sets *v to d when it is not positive (a zero Config field).
func def[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

func ms(d time.Duration) *float64 {
	v := float64(d.Microseconds()) / 1000
	return &v
}
