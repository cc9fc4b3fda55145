// Package config reads warmpath's configuration from the environment into one
// struct, applies defaults, validates every value, and renders itself for
// logs with secrets masked.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/internal/loopback"
)

// Config is every setting of the service. Durations use Go's syntax. Each
// field's env tag names its variable; log:"secret" masks its value in the
// start-up log, log:"url" masks the password of the URL it holds.
type Config struct {
	HTTPAddr   string `env:"HTTP_ADDR" envDefault:":8080"`
	AdminAddr  string `env:"ADMIN_ADDR" envDefault:"127.0.0.1:9090"`
	AdminToken string `env:"ADMIN_TOKEN" log:"secret"`

	DatabaseURL string        `env:"DATABASE_URL" log:"url"` // may hold a password
	AutoMigrate bool          `env:"AUTO_MIGRATE" envDefault:"true"`
	DBMaxConns  int32         `env:"DB_MAX_CONNS" envDefault:"16"`
	DBMinConns  int32         `env:"DB_MIN_CONNS" envDefault:"4"`
	DBTimeout   time.Duration `env:"DB_TIMEOUT" envDefault:"2s"`

	ValkeyURL     string        `env:"VALKEY_URL" log:"url"` // may hold a password
	ValkeyTimeout time.Duration `env:"VALKEY_TIMEOUT" envDefault:"500ms"`
	// ValkeyPrefix starts every key, so several deployments (or tests) can
	// share one Valkey.
	ValkeyPrefix string `env:"VALKEY_PREFIX" envDefault:"wp"`

	SystemWarmupDelay    time.Duration `env:"SYSTEM_WARMUP_DELAY" envDefault:"100ms"`
	SystemWarmupHotUsers int           `env:"SYSTEM_WARMUP_HOT_USERS" envDefault:"1000"`
	WarmupQueueSize      int           `env:"WARMUP_QUEUE_SIZE" envDefault:"10000"`
	WarmupWorkers        int           `env:"WARMUP_WORKERS" envDefault:"4"`
	WarmupTTL            time.Duration `env:"WARMUP_TTL" envDefault:"10m"`
	WarmupStrategy       string        `env:"WARMUP_STRATEGY" envDefault:"async"`
	CacheTTL             time.Duration `env:"CACHE_TTL" envDefault:"24h"`

	SyncInterval time.Duration `env:"SYNC_INTERVAL" envDefault:"1s"`
	// SyncPace: after each batch of a backlog the sync rests this many times
	// as long as the batch took (0: flush a backlog at full speed).
	SyncPace         float64 `env:"SYNC_PACE" envDefault:"1"`
	UsageFailureMode string  `env:"USAGE_FAILURE_MODE" envDefault:"open"`
	// IdempotencyTTL is how long an Idempotency-Key and its first answer
	// are kept.
	IdempotencyTTL time.Duration `env:"IDEMPOTENCY_TTL" envDefault:"24h"`

	ThresholdTotal      time.Duration `env:"THRESHOLD_TOTAL" envDefault:"3s"`
	ThresholdAuth       time.Duration `env:"THRESHOLD_AUTH" envDefault:"500ms"`
	ThresholdDB         time.Duration `env:"THRESHOLD_DB" envDefault:"1s"`
	ThresholdUsageCheck time.Duration `env:"THRESHOLD_USAGE_CHECK" envDefault:"200ms"`

	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info"`

	PyroscopeServerAddress string `env:"PYROSCOPE_SERVER_ADDRESS" log:"url"`

	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	CORSOrigins     []string      `env:"CORS_ORIGINS" envSeparator:","`
	DemoUsersFile   string        `env:"DEMO_USERS_FILE"` // empty: the demo users embedded in the binary

	// Failed authentication is limited per client address: a token bucket
	// of AUTH_FAILURE_BURST that refills at AUTH_FAILURE_RATE per second (0:
	// no limit). TRUSTED_PROXIES (comma-separated CIDRs or addresses) are
	// the peers whose X-Forwarded-For names the client; by default none.
	AuthFailureRate  float64  `env:"AUTH_FAILURE_RATE" envDefault:"1"`
	AuthFailureBurst int      `env:"AUTH_FAILURE_BURST" envDefault:"20"`
	TrustedProxies   []string `env:"TRUSTED_PROXIES" envSeparator:","`
	// JWT bearer tokens (the application's own login), on when AUTH_JWKS_URL
	// is set; AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE are then required.
	AuthJWKSURL        string        `env:"AUTH_JWKS_URL" log:"url"`
	AuthJWTIssuer      string        `env:"AUTH_JWT_ISSUER"`
	AuthJWTAudience    string        `env:"AUTH_JWT_AUDIENCE"`
	AuthJWTPlan        string        `env:"AUTH_JWT_PLAN" envDefault:"free"`
	AuthJWTLeeway      time.Duration `env:"AUTH_JWT_LEEWAY" envDefault:"30s"`
	AuthJWKSMinRefresh time.Duration `env:"AUTH_JWKS_MIN_REFRESH" envDefault:"10s"`

	// Plans is "name:quota/period:maxItems,…".
	Plans []domain.Plan `env:"PLANS" envDefault:"free:1000/day:10000,pro:1000000/month:1000000"`
}

// Strategy values of WARMUP_STRATEGY.
const (
	StrategyAsync  = "async"
	StrategyInline = "inline"
	StrategyOff    = "off"
)

// Failure modes of USAGE_FAILURE_MODE.
const (
	FailOpen   = "open"
	FailClosed = "closed"
)

// Error is a configuration error naming the variable at fault.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Var, e.Msg) }

// Load reads the configuration through getenv and validates it. A bad value
// gives an *Error naming the variable.
func Load(getenv func(string) string) (Config, error) {
	var c Config
	err := env.ParseWithOptions(&c, env.Options{
		Environment: environ(getenv),
		FuncMap: map[reflectType]env.ParserFunc{
			planType: func(v string) (any, error) { return parsePlan(v) },
		},
	})
	if err != nil {
		return Config{}, translate(err)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// environ turns getenv into the map env wants; only our own variables are
// looked up, so the process environment is never copied wholesale.
func environ(getenv func(string) string) map[string]string {
	m := map[string]string{}
	for _, name := range Names() {
		if v := getenv(name); v != "" {
			m[name] = v
		}
	}
	return m
}

// translate turns env's aggregate error into one *Error naming the first
// variable at fault.
func translate(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		first := agg.Errors[0]
		var pe env.ParseError
		if errors.As(first, &pe) {
			return &Error{Var: envName(pe.Name), Msg: fmt.Sprintf("cannot parse as %s: %v", pe.Type, unwrapAll(pe.Err))}
		}
		return &Error{Var: "?", Msg: first.Error()}
	}
	return &Error{Var: "?", Msg: err.Error()}
}

func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func (c *Config) validate() error {
	for _, a := range []struct{ name, v string }{{"HTTP_ADDR", c.HTTPAddr}, {"ADMIN_ADDR", c.AdminAddr}} {
		if err := validAddr(a.v); err != nil {
			return &Error{Var: a.name, Msg: err.Error()}
		}
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"DB_TIMEOUT", c.DBTimeout}, {"VALKEY_TIMEOUT", c.ValkeyTimeout},
		{"WARMUP_TTL", c.WarmupTTL}, {"CACHE_TTL", c.CacheTTL}, {"SYNC_INTERVAL", c.SyncInterval},
		{"THRESHOLD_TOTAL", c.ThresholdTotal}, {"THRESHOLD_AUTH", c.ThresholdAuth},
		{"THRESHOLD_DB", c.ThresholdDB}, {"THRESHOLD_USAGE_CHECK", c.ThresholdUsageCheck},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout}, {"IDEMPOTENCY_TTL", c.IdempotencyTTL},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return &Error{Var: p.name, Msg: fmt.Sprintf("must be a positive duration, got %s", p.d)}
		}
	}
	if c.SyncPace < 0 || c.SyncPace > 100 {
		return &Error{Var: "SYNC_PACE", Msg: fmt.Sprintf("must be between 0 and 100, got %g", c.SyncPace)}
	}
	if c.SystemWarmupDelay < 0 {
		return &Error{Var: "SYSTEM_WARMUP_DELAY", Msg: "must not be negative"}
	}
	ints := []struct {
		name string
		v    int64
		min  int64
	}{
		{"DB_MAX_CONNS", int64(c.DBMaxConns), 1}, {"DB_MIN_CONNS", int64(c.DBMinConns), 0},
		{"SYSTEM_WARMUP_HOT_USERS", int64(c.SystemWarmupHotUsers), 0},
		{"WARMUP_QUEUE_SIZE", int64(c.WarmupQueueSize), 1}, {"WARMUP_WORKERS", int64(c.WarmupWorkers), 1},
	}
	for _, i := range ints {
		if i.v < i.min {
			return &Error{Var: i.name, Msg: fmt.Sprintf("must be at least %d, got %d", i.min, i.v)}
		}
	}
	if c.DBMinConns > c.DBMaxConns {
		return &Error{Var: "DB_MIN_CONNS", Msg: "must not exceed DB_MAX_CONNS"}
	}
	if err := oneOf(c.WarmupStrategy, StrategyAsync, StrategyInline, StrategyOff); err != nil {
		return &Error{Var: "WARMUP_STRATEGY", Msg: err.Error()}
	}
	if err := oneOf(c.UsageFailureMode, FailOpen, FailClosed); err != nil {
		return &Error{Var: "USAGE_FAILURE_MODE", Msg: err.Error()}
	}
	if err := oneOf(c.LogFormat, "json", "text"); err != nil {
		return &Error{Var: "LOG_FORMAT", Msg: err.Error()}
	}
	if err := oneOf(c.LogLevel, "debug", "info", "warn", "error"); err != nil {
		return &Error{Var: "LOG_LEVEL", Msg: err.Error()}
	}
	for _, raw := range []struct{ name, v string }{{"DATABASE_URL", c.DatabaseURL}, {"VALKEY_URL", c.ValkeyURL}} {
		if raw.v == "" {
			continue
		}
		u, err := url.Parse(raw.v)
		if err != nil || u.Scheme == "" {
			return &Error{Var: raw.name, Msg: "must be a URL"}
		}
	}
	if c.ValkeyURL != "" {
		u, _ := url.Parse(c.ValkeyURL)
		if err := oneOf(u.Scheme, "valkey", "valkeys", "redis", "rediss", "unix"); err != nil {
			return &Error{Var: "VALKEY_URL", Msg: "scheme " + err.Error()}
		}
	}
	if c.ValkeyPrefix == "" || strings.ContainsAny(c.ValkeyPrefix, "{} \t\n") {
		return &Error{Var: "VALKEY_PREFIX", Msg: "must be non-empty, without braces or spaces"}
	}
	if len(c.Plans) == 0 {
		return &Error{Var: "PLANS", Msg: "at least one plan is required"}
	}
	seen := map[string]bool{}
	for _, p := range c.Plans {
		if seen[p.Name] {
			return &Error{Var: "PLANS", Msg: fmt.Sprintf("plan %q appears twice", p.Name)}
		}
		seen[p.Name] = true
	}
	if err := c.validateAuthLimit(); err != nil {
		return err
	}
	if err := c.validateJWT(); err != nil {
		return err
	}
	// Provisioning and pprof must not be open to the network.
	if c.AdminToken == "" && c.AdminNeedsToken() {
		return &Error{Var: "ADMIN_TOKEN", Msg: "required when ADMIN_ADDR is not a loopback address"}
	}
	return nil
}

func (c *Config) validateAuthLimit() error {
	if c.AuthFailureRate < 0 {
		return &Error{Var: "AUTH_FAILURE_RATE", Msg: fmt.Sprintf("must not be negative (0 turns the limit off), got %g", c.AuthFailureRate)}
	}
	if c.AuthFailureBurst < 1 {
		return &Error{Var: "AUTH_FAILURE_BURST", Msg: fmt.Sprintf("must be at least 1, got %d", c.AuthFailureBurst)}
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return &Error{Var: "TRUSTED_PROXIES", Msg: err.Error()}
	}
	return nil
}

// TrustedProxyPrefixes returns TRUSTED_PROXIES as prefixes (an address alone
// is a prefix of its full length). Load has validated them.
func (c Config) TrustedProxyPrefixes() []netip.Prefix {
	p, _ := parsePrefixes(c.TrustedProxies)
	return p
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, raw := range list {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if p, err := netip.ParsePrefix(raw); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(raw)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", raw)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func validAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", a)
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be 0-65535, got %q", port)
	}
	return nil
}

func oneOf(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, "|"), v)
}

// AdminNeedsToken returns whether the admin listener needs a token: always
// when it listens beyond loopback.
func (c Config) AdminNeedsToken() bool {
	host, _, _ := net.SplitHostPort(c.AdminAddr)
	return !loopback.Host(host)
}

// Embedded reports whether the service runs on the embedded default for the
// store (no DATABASE_URL).
func (c Config) EmbeddedStore() bool { return c.DatabaseURL == "" }

// EmbeddedCache reports whether the service runs an in-process Valkey.
func (c Config) EmbeddedCache() bool { return c.ValkeyURL == "" }

// LogValue renders the configuration for the start-up log, every variable
// by its name, secrets masked (the log tags of Config).
func (c Config) LogValue() slog.Value {
	v := reflect.ValueOf(c)
	attrs := make([]slog.Attr, 0, v.NumField())
	for _, f := range reflect.VisibleFields(v.Type()) {
		if name := f.Tag.Get("env"); name != "" {
			attrs = append(attrs, slog.Attr{Key: name, Value: logValue(v.FieldByIndex(f.Index).Interface(), f.Tag.Get("log"))})
		}
	}
	return slog.GroupValue(attrs...)
}

// logValue is one setting's value in the start-up log.
func logValue(v any, mask string) slog.Value {
	switch x := v.(type) {
	case string:
		switch mask {
		case "secret":
			return slog.StringValue(maskSecret(x))
		case "url":
			return slog.StringValue(maskURL(x))
		}
	case []string:
		return slog.StringValue(strings.Join(x, ","))
	case []domain.Plan:
		plans := make([]string, len(x))
		for i, p := range x {
			plans[i] = formatPlan(p)
		}
		return slog.StringValue(strings.Join(plans, ","))
	}
	return slog.AnyValue(v)
}

// JWTEnabled reports whether JWT bearer tokens are accepted.
func (c Config) JWTEnabled() bool { return c.AuthJWKSURL != "" }

// validateJWT checks the JWT options: the three of URL, issuer and audience
// together, an https JWKS (http only on loopback), a plan that exists.
func (c *Config) validateJWT() error {
	set := map[string]bool{"AUTH_JWKS_URL": c.AuthJWKSURL != "", "AUTH_JWT_ISSUER": c.AuthJWTIssuer != "", "AUTH_JWT_AUDIENCE": c.AuthJWTAudience != ""}
	if !c.JWTEnabled() {
		for _, name := range []string{"AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"} {
			if set[name] {
				return &Error{Var: "AUTH_JWKS_URL", Msg: "required when " + name + " is set"}
			}
		}
		return nil
	}
	for _, name := range []string{"AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"} {
		if !set[name] {
			return &Error{Var: name, Msg: "required when AUTH_JWKS_URL is set"}
		}
	}
	u, err := url.Parse(c.AuthJWKSURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return &Error{Var: "AUTH_JWKS_URL", Msg: "must be an https URL"}
	}
	if u.Scheme == "http" {
		if !loopback.Host(u.Hostname()) {
			return &Error{Var: "AUTH_JWKS_URL", Msg: "must be https (http only on a loopback address)"}
		}
	}
	found := false
	for _, p := range c.Plans {
		found = found || p.Name == c.AuthJWTPlan
	}
	if !found {
		return &Error{Var: "AUTH_JWT_PLAN", Msg: fmt.Sprintf("no plan %q in PLANS", c.AuthJWTPlan)}
	}
	if c.AuthJWTLeeway < time.Second || c.AuthJWTLeeway > 5*time.Minute {
		return &Error{Var: "AUTH_JWT_LEEWAY", Msg: fmt.Sprintf("must be between 1s and 5m, got %s", c.AuthJWTLeeway)}
	}
	if c.AuthJWKSMinRefresh < time.Second {
		return &Error{Var: "AUTH_JWKS_MIN_REFRESH", Msg: fmt.Sprintf("must be at least 1s, got %s", c.AuthJWKSMinRefresh)}
	}
	return nil
}

func maskSecret(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// maskURL hides the password of a URL, keeping everything an operator needs
// to recognise the target.
func maskURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "***"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
