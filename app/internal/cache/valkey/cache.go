// Package valkey is warmpath's hot-path cache on Valkey (or Redis 7), built on
// valkey-go: the quota counter with its write-behind pending deltas, the token
// → principal cache with server-assisted client-side caching, and each user's
// item set with a versioned read-your-writes protocol. Every multi-step
// operation is one Lua script, so it is atomic and costs one round trip.
//
// # Key scheme
//
// All per-user keys carry the hash tag {u:<id>}, so every key of one user
// lands in the same Valkey Cluster slot and the scripts work unchanged on a
// cluster. <prefix> defaults to "wp".
//
//	<prefix>:{u:<id>}:use:<YYYYMMDD>       usage counter of the period that starts that day (string int, TTL)
//	<prefix>:{u:<id>}:pending              hash: period (YYYYMMDD) → delta not yet synced to Postgres (no TTL)
//	<prefix>:{u:<id>}:inflight             hash: "<batch>|<period>" → delta claimed by a sync batch (owned by valkeysync; read by SeedUsage)
//	<prefix>:{u:<id>}:items                set of the user's items (absent when the set is empty)
//	<prefix>:{u:<id>}:items:v              version of the cached set; its presence means "the set is warm"
//	<prefix>:{u:<id>}:items:floor          lowest snapshot version a load may still install
//	<prefix>:{u:<id>}:items:load:<random>  temporary set while a snapshot is loaded in chunks
//	<prefix>:tok:<hex sha256>              principal JSON (domain.Principal) of a token hash
//
// Use Cache.Key to build per-user keys and PeriodField to format a period.
package valkey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
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
	// AfterCount, when set, builds a command that CheckAndCount pipelines
	// right after its count script, in the same round trip: the write-behind
	// sync's dirty mark (valkeysync.MarkDirtyCmd). It runs for every
	// CheckAndCount, whatever the outcome, and must be idempotent.
	AfterCount func(client valkey.Client, userID int64) valkey.Completed
	// BreakerFailures consecutive outage errors open the circuit breaker
	// (default DefaultBreakerFailures; negative disables it); it stays open
	// for BreakerCooldown (default DefaultBreakerCooldown), then one call
	// probes. Applied by New only.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Wrap, when set, wraps the dialled client (e.g. with valkeyotel for
	// spans). It is applied by New only.
	Wrap func(valkey.Client) valkey.Client
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
	return cfg
}

// Cache is warmpath's Valkey cache. It is safe for concurrent use.
type Cache struct {
	client      valkey.Client
	prefix      string
	opTimeout   time.Duration
	localTTL    time.Duration
	clientCache bool
	afterCount  func(valkey.Client, int64) valkey.Completed
	scripts     scripts
	// lookup serves client-side-cached reads: the same connection and
	// breaker as client, without Wrap's instrumentation, because a local hit
	// (nearly every call) is not a network call and a span per hit would be
	// noise and cost.
	lookup valkey.Client
	// principals memoizes decoded principals by their cached bytes (always
	// correct: the same bytes decode to the same principal).
	principals principalMemo
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
	raw, err := valkey.NewClient(opt)
	if err != nil {
		return nil, wrapErr("connect", err)
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
// valkeyotel. cfg.URL is ignored; a LocalTTL above MaxLocalTTL is clamped.
// The Cache takes ownership: Close closes the client.
func NewFromClient(client valkey.Client, cfg Config) *Cache {
	cfg = cfg.withDefaults()
	return &Cache{
		client:      client,
		prefix:      cfg.Prefix,
		opTimeout:   cfg.OpTimeout,
		localTTL:    min(cfg.LocalTTL, MaxLocalTTL),
		clientCache: !cfg.DisableClientCache,
		afterCount:  cfg.AfterCount,
		scripts:     newScripts(),
		lookup:      client,
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

// LoadScripts loads every Lua script into the script cache of every node, so
// the first request after start does not pay for a NOSCRIPT fallback.
func (c *Cache) LoadScripts(ctx context.Context) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	for _, node := range c.client.Nodes() {
		for _, src := range c.scripts.sources() {
			if err := node.Do(ctx, node.B().ScriptLoad().Script(src).Build()).Error(); err != nil {
				return wrapErr("script load", err)
			}
		}
	}
	return nil
}

// Key returns the key of one of a user's values: Key(7, "items", "v") is
// "<prefix>:{u:7}:items:v". The cache sync loop uses Key(id, "pending") for
// the pending-delta hash, whose fields are PeriodField values.
func (c *Cache) Key(userID int64, parts ...string) string {
	n := len(c.prefix) + 24
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, c.prefix...)
	b = append(b, ":{u:"...)
	b = strconv.AppendInt(b, userID, 10)
	b = append(b, '}')
	for _, p := range parts {
		b = append(b, ':')
		b = append(b, p...)
	}
	return string(b)
}

// PeriodField formats the UTC start of a usage period as YYYYMMDD: the suffix
// of the usage counter key and the field of the pending hash.
func PeriodField(periodStart time.Time) string {
	return periodStart.UTC().Format("20060102")
}

// opCtx puts the OpTimeout deadline on ctx unless ctx already ends sooner
// (skipping the timer keeps the warm paths cheaper).
func (c *Cache) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.opTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.opTimeout)
}

// wrapErr names the operation and marks outages with domain.ErrUnavailable.
func wrapErr(op string, err error) error { return WrapErr("valkey "+op, err) }

// WrapErr names the operation and marks connectivity failures (network
// errors, timeouts, a closed client or open breaker, a server that is loading
// or failing over) with domain.ErrUnavailable. Other server replies (a script
// or type error) are bugs, not outages, and are wrapped as they are. Every
// package that talks to Valkey classifies errors through it.
func WrapErr(op string, err error) error {
	if ve, ok := valkey.IsValkeyErr(err); ok && !transient(ve) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, domain.ErrUnavailable, err)
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
