// Package valkey is warmpath's one adapter to Valkey (or Redis 7), built on
// valkey-go. It owns the client, the key scheme, the deadline of every call,
// the classification of errors and every Lua script, and offers three types
// on one connection:
//
//   - Cache, the hot path: the quota counter with its write-behind pending
//     deltas, the token → principal cache with server-assisted client-side
//     caching, and each user's item set with a versioned read-your-writes
//     protocol.
//   - SyncQueue (Cache.SyncQueue), the Valkey side of the usage sync: the
//     dirty index the count marks and the claim → apply → acknowledge queue
//     package usagesync drains into Postgres.
//   - WarmState (Cache.WarmState), warmup's shared state: each user's warmup
//     status and the per-user warmup lock.
//
// Every multi-step operation on one slot is one Lua script, so it is atomic
// and costs one round trip.
//
// # Key scheme
//
// Every key of the tree is built by Keys (keys.go) and nowhere else. Per-user
// keys carry the hash tag {u:<id>} and the sync's own keys the tag {sync}, so
// every script touches one Valkey Cluster slot and the scheme works
// unchanged on a cluster. <prefix> is VALKEY_PREFIX (default "wp").
//
//	<prefix>:{u:<id>}:use:<YYYYMMDD>       usage counter of the period that starts that day (string int, TTL)
//	<prefix>:{u:<id>}:pending              hash: period (YYYYMMDD) → delta not yet claimed by a sync batch (no TTL)
//	<prefix>:{u:<id>}:inflight             hash: "<batch>|<period>" → delta claimed by that batch, not yet acknowledged
//	<prefix>:{u:<id>}:items                set of the user's items (absent when the set is empty)
//	<prefix>:{u:<id>}:items:v              version of the cached set; its presence means "the set is warm"
//	<prefix>:{u:<id>}:items:floor          lowest snapshot version a load may still install
//	<prefix>:{u:<id>}:items:load:<random>  temporary set while a snapshot is loaded in chunks
//	<prefix>:{u:<id>}:warmup               warmup status JSON (warmup.Status), with a TTL
//	<prefix>:{u:<id>}:warmup:lock          warmup lock token, SET NX PX; released by compare-and-delete
//	<prefix>:tok:<hex sha256>              principal JSON (domain.Principal) of a token hash, or a revocation tombstone
//	<prefix>:{sync}:dirty                  sorted set: user id, score = unix ms when it first became dirty
//	<prefix>:{sync}:batch:<batch>          hash: owner, state (claiming|sealed), claimedAt, users, deltas
//	<prefix>:{sync}:batches                sorted set: batch id, score = lease deadline (unix ms)
//	<prefix>:{sync}:batchinfo              hash: batch id → "<users>,<oldest dirty ms>" (for stats)
//	<prefix>:{sync}:alive:<owner>          liveness of a sync instance: its state (usagesync.Liveness), short TTL
//	<prefix>:{sync}:instances              set of owners with a liveness key (lapsed ones pruned on read)
//
// # Deadlines
//
// Config.OpTimeout (VALKEY_TIMEOUT) bounds every call, that is every round
// trip (a command, a script or a pipeline), unless the caller's context ends
// sooner; calls that nothing else can cancel share one deadline per 1/64 of
// it (never sooner than their own would be, at most two such ticks later:
// ≤ 20 ms), so that a call costs no timer of its own. An operation of several round trips (a sync claim of a large batch,
// a sweep of the keyspace) puts the deadline on each of them, not on the
// whole: its length grows with its work, never the wait on one answer.
//
// # Errors
//
// Connectivity failures (network errors, timeouts, a closed client or an
// open circuit breaker, a server that is loading or failing over) wrap
// domain.ErrUnavailable; other server replies (a script or type error) are
// bugs, not outages, and are wrapped as they are.
package valkey

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	valkey "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/domain"
)

// Defaults applied by New and NewFromClient to zero Config fields.
const (
	DefaultPrefix    = "wp"
	DefaultOpTimeout = 500 * time.Millisecond
	DefaultLocalTTL  = time.Second
	// MaxLocalTTL bounds how long a principal may be served from the local
	// cache: a revoked token must stop working within 1 s on every instance,
	// even when an invalidation push is lost.
	MaxLocalTTL = time.Second
)

// Config configures a Cache. Zero fields take the defaults above.
type Config struct {
	// URL is a valkey://, valkeys://, redis:// or rediss:// URL (New only).
	URL string
	// Prefix starts every key; tests use a random one for isolation.
	Prefix string
	// OpTimeout is the deadline put on every call whose context has none
	// earlier.
	OpTimeout time.Duration
	// LocalTTL is how long a principal is served from the client-side cache;
	// at most MaxLocalTTL.
	LocalTTL time.Duration
	// DisableClientCache turns client-side caching off, for servers without
	// CLIENT TRACKING (miniredis).
	DisableClientCache bool
	// Now is the clock of dirty marks, counter TTLs, principal lifetimes and
	// sync leases; default time.Now.
	Now func() time.Time
	// BreakerFailures consecutive outage errors open the circuit breaker
	// (default DefaultBreakerFailures; negative disables it); it stays open
	// for BreakerCooldown (default DefaultBreakerCooldown), then one call
	// probes. Applied by New only.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Wrap, when set, wraps the dialled client (e.g. with Instrument for
	// spans). It is applied by New only.
	Wrap func(valkey.Client) valkey.Client
	// Dial, when set, opens the client's connections instead of dialling
	// URL's address (the embedded server's in-process connections). New
	// only.
	Dial func(ctx context.Context) (net.Conn, error)
	// Intercept, when set, wraps the dialled client under everything else
	// (the breaker, Wrap, and the client-side-cached lookups, which Wrap
	// does not see): a test seam that sees every command sent. New only.
	Intercept func(valkey.Client) valkey.Client
}

func (cfg Config) withDefaults() Config {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.LocalTTL <= 0 {
		cfg.LocalTTL = DefaultLocalTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// conn is what a Cache shares with the SyncQueue and WarmState made from it:
// one client, one key scheme, one deadline, one clock, one set of scripts.
type conn struct {
	client    valkey.Client
	keys      Keys
	opTimeout time.Duration
	now       func() time.Time
	scripts   *scripts
	deadlines *deadlines
}

// Cache is warmpath's hot-path cache. It is safe for concurrent use.
type Cache struct {
	conn
	localTTL    time.Duration
	clientCache bool
	// lookup serves client-side-cached reads: the same connection and
	// breaker as client, without Wrap's instrumentation, because a local hit
	// (nearly every call) is not a network call and a span per hit would be
	// noise and cost.
	lookup valkey.Client
	// principals memoizes decoded principals by their cached bytes (always
	// correct: the same bytes decode to the same principal).
	principals principalMemo
	// outcomes tracks counts so unknown outcomes can be settled.
	outcomes *outcomes
}

// New dials the server at cfg.URL and pings it. Unreachable servers yield an
// error wrapping domain.ErrUnavailable. LocalTTL above MaxLocalTTL is an error.
func New(ctx context.Context, cfg Config) (*Cache, error) {
	if cfg.LocalTTL > MaxLocalTTL {
		return nil, fmt.Errorf("valkey: LocalTTL %v exceeds %v (revocation must be visible within 1s)", cfg.LocalTTL, MaxLocalTTL)
	}
	opt, err := valkey.ParseURL(normalizeURL(cfg.URL))
	if err != nil {
		return nil, fmt.Errorf("valkey: parse url: %w", err)
	}
	opt.DisableCache = cfg.DisableClientCache
	if cfg.Dial != nil {
		opt.DialCtxFn = func(ctx context.Context, _ string, _ *net.Dialer, _ *tls.Config) (net.Conn, error) {
			return cfg.Dial(ctx)
		}
	}
	raw, err := valkey.NewClient(opt)
	if err != nil {
		return nil, wrapErr("connect", err)
	}
	if cfg.Intercept != nil {
		raw = cfg.Intercept(raw)
	}
	client, lookup := raw, raw
	if cfg.Wrap != nil {
		client = cfg.Wrap(raw)
	}
	if cfg.BreakerFailures >= 0 {
		// Outermost, so a refused call costs no span and no round trip.
		br := newBreaker(cmp.Or(cfg.BreakerFailures, DefaultBreakerFailures), cmp.Or(cfg.BreakerCooldown, DefaultBreakerCooldown))
		client, lookup = breakerClient{Client: client, b: br}, breakerClient{Client: raw, b: br}
	}
	c := NewFromClient(client, cfg)
	c.lookup = lookup
	if err := c.Ping(ctx); err != nil {
		client.Close()
		return nil, err
	}
	// The clock offset that count fences use; measured again on every
	// Reconcile that has something to settle.
	_, _ = c.serverTime(ctx)
	return c, nil
}

// normalizeURL maps valkey:// and valkeys:// to redis:// and rediss://, the
// schemes every valkey-go version's ParseURL accepts.
func normalizeURL(u string) string {
	switch {
	case strings.HasPrefix(u, "valkey://"):
		return "redis://" + strings.TrimPrefix(u, "valkey://")
	case strings.HasPrefix(u, "valkeys://"):
		return "rediss://" + strings.TrimPrefix(u, "valkeys://")
	}
	return u
}

// NewFromClient wraps an existing client, e.g. one instrumented with
// Instrument. cfg.URL is ignored; a LocalTTL above MaxLocalTTL is clamped.
// The Cache takes ownership: Close closes the client.
func NewFromClient(client valkey.Client, cfg Config) *Cache {
	cfg = cfg.withDefaults()
	return &Cache{
		conn: conn{
			client:    client,
			keys:      NewKeys(cfg.Prefix),
			opTimeout: cfg.OpTimeout,
			now:       cfg.Now,
			scripts:   newScripts(),
			deadlines: newDeadlines(cfg.OpTimeout),
		},
		localTTL:    min(cfg.LocalTTL, MaxLocalTTL),
		clientCache: !cfg.DisableClientCache,
		lookup:      client,
		outcomes:    newOutcomes(),
	}
}

// Client returns the underlying valkey-go client.
func (c *Cache) Client() valkey.Client { return c.client }

// Close closes the underlying client.
func (c *Cache) Close() { c.client.Close() }

// Ping checks that the server answers.
func (c *Cache) Ping(ctx context.Context) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	if err := c.client.Do(ctx, c.client.B().Ping().Build()).Error(); err != nil {
		return wrapErr("ping", err)
	}
	return nil
}

// LoadScripts loads every Lua script of the package (the Cache's, the
// SyncQueue's and the WarmState's) into the script cache of every node, so
// the first call after start does not pay for a NOSCRIPT fallback.
func (c *Cache) LoadScripts(ctx context.Context) error {
	for _, node := range c.client.Nodes() {
		cmds := make(valkey.Commands, 0, len(allScripts))
		for _, src := range allScripts {
			cmds = append(cmds, node.B().ScriptLoad().Script(src).Build())
		}
		ctx, cancel := c.opCtx(ctx)
		res := node.DoMulti(ctx, cmds...)
		cancel()
		for _, r := range res {
			if err := r.Error(); err != nil {
				return wrapErr("script load", err)
			}
		}
	}
	return nil
}

// Keys returns the key builder of the Cache's prefix.
func (c *Cache) Keys() Keys { return c.keys }

// opCtx puts the OpTimeout deadline on ctx: a shared one (deadline.go)
// when nothing can cancel ctx, else a timer of its own unless ctx already
// ends sooner. It is the deadline of every call of the package (see
// Deadlines in the package comment).
func (c *conn) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Done() == nil {
		// Nothing can cancel ctx: a shared deadline serves (deadline.go).
		return &opContext{Context: ctx, b: c.deadlines.bucket(time.Now())}, noCancel
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.opTimeout {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, c.opTimeout)
}

// wrapErr names the operation ("valkey <op>") and classifies err (see
// Errors in the package comment): the one error classification of the
// package.
func wrapErr(op string, err error) error {
	if ve, ok := valkey.IsValkeyErr(err); ok && !transient(ve) {
		return fmt.Errorf("valkey %s: %w", op, err)
	}
	return fmt.Errorf("valkey %s: %w: %w", op, domain.ErrUnavailable, err)
}

func transient(ve *valkey.ValkeyError) bool {
	if ve.IsLoading() || ve.IsTryAgain() || ve.IsClusterDown() {
		return true
	}
	msg := ve.Error()
	return strings.HasPrefix(msg, "BUSY ") || strings.HasPrefix(msg, "MASTERDOWN") || strings.HasPrefix(msg, "READONLY")
}

// errNil reports a valkey nil reply ("not found").
func errNil(err error) bool { return err != nil && valkey.IsValkeyNil(err) }

// errUnexpected reports a reply of an unexpected shape.
var errUnexpected = errors.New("unexpected reply")
