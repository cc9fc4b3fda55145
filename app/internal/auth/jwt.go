package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// SubjectStore resolves a JWT subject to its user's principal, creating the
// user on plan at its first sign-in (the system of record implements it).
type SubjectStore interface {
	SubjectPrincipal(ctx context.Context, issuer, subject, plan string) (domain.Principal, error)
}

// JWTConfig configures JWT bearer tokens.
type JWTConfig struct {
	JWKSURL  string
	Issuer   string
	Audience string
	// Plan is the plan of users created at their first sign-in.
	Plan string
	// Leeway is the clock skew allowed on exp, nbf and iat (30 s when zero).
	Leeway time.Duration
	// MinRefresh is the least time between two JWKS fetches caused by
	// unknown kids (10 s when zero).
	MinRefresh time.Duration
	// FetchTimeout bounds every JWKS fetch (5 s when zero).
	FetchTimeout time.Duration
	// HTTPClient fetches the JWKS (a plain client when nil).
	HTTPClient *http.Client

	// Subjects resolves verified subjects: the system of record.
	Subjects SubjectStore
	// Cache, when set, keeps subject principals (like token principals, up
	// to CacheTTL), keyed by SubjectKey.
	Cache    Cache
	CacheTTL time.Duration
	// TokenCacheSize bounds the in-process cache of verified tokens (10,000
	// when zero).
	TokenCacheSize int

	Now      func() time.Time
	Observer JWKSObserver // optional
}

// JWTVerifier verifies JWT bearer tokens against a JWKS and resolves their
// subjects to principals.
type JWTVerifier struct {
	cfg    JWTConfig
	keys   *jwks
	tokens *tokenCache
	after  func(time.Duration) <-chan time.Time // the refresher's timer (a test seam)
}

// NewJWTVerifier returns a verifier; it fetches no keys until Refresh (the
// system warmup's jwks step) or a token needs them.
func NewJWTVerifier(cfg JWTConfig) *JWTVerifier {
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 10 * time.Second
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 10 * time.Minute
	}
	if cfg.TokenCacheSize <= 0 {
		cfg.TokenCacheSize = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &JWTVerifier{
		cfg: cfg,
		keys: &jwks{
			url: cfg.JWKSURL, client: cfg.HTTPClient, timeout: cfg.FetchTimeout,
			minRefresh: cfg.MinRefresh, now: cfg.Now, obs: cfg.Observer,
		},
		tokens: newTokenCache(cfg.TokenCacheSize),
		after:  time.After,
	}
}

// Refresh fetches the JWKS now: the system warmup's jwks step.
func (v *JWTVerifier) Refresh(ctx context.Context) error { return v.keys.refresh(ctx) }

// Run refreshes the JWKS in the background until ctx ends: before the keys'
// max-age runs out after a success, every MinRefresh after a failure.
func (v *JWTVerifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.after(v.keys.nextRefresh()):
		}
		_ = v.keys.refresh(ctx) // recorded by the observer; the keys stay
	}
}

// LooksLikeJWT reports whether a bearer token has the shape of a compact JWS
// (three base64url parts), which no warmpath token has.
func LooksLikeJWT(s string) bool {
	if len(s) > 16<<10 || strings.Count(s, ".") != 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Principal verifies a JWT (whose hash is h) and returns its user's
// principal, with ExpiresAt the token's expiry. A token verified before and
// not yet expired is answered from the in-process cache.
func (v *JWTVerifier) Principal(ctx context.Context, token string, h domain.TokenHash) (domain.Principal, error) {
	now := v.cfg.Now()
	if p, ok := v.tokens.get(h, now); ok {
		return p, nil
	}
	iss, sub, exp, err := v.verify(ctx, token, now)
	if err != nil {
		return domain.Principal{}, err
	}
	p, err := v.subject(ctx, iss, sub)
	if err != nil {
		return domain.Principal{}, err
	}
	p.ExpiresAt = &exp
	// Kept until the token expires (with the leeway verification allows),
	// and no longer than a cached principal, so plan changes still show.
	until := exp.Add(v.cfg.Leeway)
	if cap := now.Add(v.cfg.CacheTTL); cap.Before(until) {
		until = cap
	}
	v.tokens.put(h, p, until, now)
	return p, nil
}

// CachedPrincipal returns the principal of a token this verifier verified
// (by its hash) while the token is still valid: how the login warmup, which
// runs in the instance that took the login and knows only the hash, finds a
// JWT's principal without a write on the request path.
func (v *JWTVerifier) CachedPrincipal(h domain.TokenHash) (domain.Principal, bool) {
	return v.tokens.get(h, v.cfg.Now())
}

// subject resolves (iss, sub) through the principal cache, keyed by a hash
// of the pair (never the subject itself).
func (v *JWTVerifier) subject(ctx context.Context, iss, sub string) (domain.Principal, error) {
	key := SubjectKey(iss, sub)
	if v.cfg.Cache != nil {
		if p, ok, err := v.cfg.Cache.Principal(ctx, key); err == nil && ok {
			return p, nil
		}
	}
	p, err := v.cfg.Subjects.SubjectPrincipal(ctx, iss, sub, v.cfg.Plan)
	if err != nil {
		return domain.Principal{}, apperr.Temporary(err, "authentication is temporarily unavailable")
	}
	if v.cfg.Cache != nil {
		_ = v.cfg.Cache.PutPrincipal(ctx, key, p, v.cfg.CacheTTL)
	}
	return p, nil
}

// SubjectKey is the principal-cache key of a JWT subject: a hash, so a cache
// dump shows no subject, in a space no token hash shares.
func SubjectKey(issuer, subject string) domain.TokenHash {
	return sha256.Sum256([]byte("warmpath-subject\x00" + issuer + "\x00" + subject))
}

type jwsHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Crit []string `json:"crit"`
}

func invalid(format string, args ...any) error {
	return apperr.New(apperr.InvalidToken, format, args...)
}

// verify checks the token's signature with the key its kid names (whose
// algorithm the key fixes), then its claims.
func (v *JWTVerifier) verify(ctx context.Context, token string, now time.Time) (iss, sub string, exp time.Time, err error) {
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "", "", exp, invalid("the token is not a valid JWT")
	}
	var hdr jwsHeader
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return "", "", exp, invalid("the token is not a valid JWT")
	}
	if hdr.Crit != nil {
		return "", "", exp, invalid("the token has critical headers warmpath does not support")
	}
	switch hdr.Alg {
	case "RS256", "ES256", "EdDSA":
	default:
		return "", "", exp, invalid("the token's algorithm is not accepted (RS256, ES256, EdDSA)")
	}
	key, err := v.key(ctx, hdr.Kid)
	if err != nil {
		return "", "", exp, err
	}
	if key.alg.String() != hdr.Alg {
		return "", "", exp, invalid("the token's algorithm does not match its key")
	}
	tok, err := jwt.ParseString(token,
		jwt.WithKey(key.alg, key.raw),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithAudience(v.cfg.Audience),
		jwt.WithAcceptableSkew(v.cfg.Leeway),
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithRequiredClaim("sub"),
		jwt.WithRequiredClaim("exp"),
	)
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return "", "", exp, apperr.New(apperr.ExpiredToken, "the token has expired")
	case errors.Is(err, jwt.InvalidIssuerError()):
		return "", "", exp, invalid("the token's issuer is not accepted")
	case errors.Is(err, jwt.InvalidAudienceError()):
		return "", "", exp, invalid("the token's audience is not accepted")
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return "", "", exp, invalid("the token is not valid yet")
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return "", "", exp, invalid("the token was issued in the future")
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return "", "", exp, invalid("the token has no subject or no expiry")
	case err != nil:
		return "", "", exp, invalid("the token's signature or claims are invalid")
	}
	sub, _ = tok.Subject()
	exp, _ = tok.Expiration()
	if sub == "" {
		return "", "", exp, invalid("the token has no subject or no expiry")
	}
	return v.cfg.Issuer, sub, exp, nil
}

// key finds the verification key of kid, refetching the JWKS (rate-limited)
// when the kid is unknown. Without any keys yet, or when the refetch for an
// unknown kid fails, the answer is 503: the signer may be legitimate.
func (v *JWTVerifier) key(ctx context.Context, kid string) (verifyKey, error) {
	if k, ok := lookup(v.keys.current(), kid); ok {
		return k, nil
	}
	err := v.keys.refreshOnMiss(ctx)
	if k, ok := lookup(v.keys.current(), kid); ok {
		return k, nil
	}
	if err != nil || v.keys.current() == nil {
		return verifyKey{}, &apperr.Error{
			Code: apperr.Unavailable, Message: "the token's signing keys cannot be fetched right now",
			RetryAfter: v.cfg.MinRefresh, Err: errors.Join(ErrNoKeys, err),
		}
	}
	return verifyKey{}, invalid("the token's signer is not known")
}

func lookup(ks *keySet, kid string) (verifyKey, bool) {
	if ks == nil {
		return verifyKey{}, false
	}
	if kid == "" {
		if ks.only != nil {
			return *ks.only, true
		}
		return verifyKey{}, false
	}
	k, ok := ks.byKID[kid]
	return k, ok
}

// tokenCache keeps verified tokens' principals by hash until a deadline,
// bounded: when full, expired entries go first, then arbitrary ones.
type tokenCache struct {
	mu   sync.RWMutex
	max  int
	byID map[domain.TokenHash]tokenEntry
}

type tokenEntry struct {
	p     domain.Principal
	until time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, byID: make(map[domain.TokenHash]tokenEntry)}
}

func (c *tokenCache) get(h domain.TokenHash, now time.Time) (domain.Principal, bool) {
	c.mu.RLock()
	e, ok := c.byID[h]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return domain.Principal{}, false
	}
	return e.p, true
}

func (c *tokenCache) put(h domain.TokenHash, p domain.Principal, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byID) >= c.max {
		for k, e := range c.byID {
			if !now.Before(e.until) {
				delete(c.byID, k)
			}
		}
		for k := range c.byID {
			if len(c.byID) < c.max {
				break
			}
			delete(c.byID, k)
		}
	}
	c.byID[h] = tokenEntry{p: p, until: until}
}
