// Package auth turns a bearer token into a principal. Tokens are opaque
// ("wp_" + 32 random bytes, URL-safe base64); only their SHA-256 is stored or
// cached, so neither a database dump nor a cache dump yields a usable token.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// Prefix starts every warmpath token.
const Prefix = "wp_"

// tokenBytes is the entropy of a token.
const tokenBytes = 32

// encodedLen is the length of the base64url (unpadded) part of a token.
var encodedLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// NewToken returns a fresh token and its hash. The text is shown once, to the
// caller that asked for it, and never stored.
func NewToken() (text string, hash domain.TokenHash, err error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", hash, fmt.Errorf("new token: %w", err)
	}
	text = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return text, Hash(text), nil
}

// Hash returns the SHA-256 of a token's text.
func Hash(token string) domain.TokenHash { return sha256.Sum256([]byte(token)) }

// Equal compares two hashes in constant time.
func Equal(a, b domain.TokenHash) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// Store is what auth needs from the system of record.
type Store interface {
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error)
}

// Cache is what auth needs from the cache. Implementations MUST be safe for
// concurrent use and SHOULD answer warm lookups without a network round trip.
type Cache interface {
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, bool, error)
	// PutPrincipal keeps p at most maxTTL, and only just past its expiry
	// for a token that expires sooner (valkey.PrincipalTTL).
	PutPrincipal(ctx context.Context, hash domain.TokenHash, p domain.Principal, maxTTL time.Duration) error
	DropPrincipal(ctx context.Context, hash domain.TokenHash) error
}

// Observer is told about every cache lookup (telemetry.Metrics implements it).
type Observer interface {
	CacheRequest(ctx context.Context, cache, result string)
}

// Config configures an Authenticator.
type Config struct {
	Store    Store
	Cache    Cache // optional
	Observer Observer
	Now      func() time.Time
	// CacheTTL bounds how long a principal stays in the shared cache; revocation
	// also deletes it, so this only bounds staleness of plan changes.
	CacheTTL time.Duration
}

// Authenticator resolves bearer tokens.
type Authenticator struct {
	cfg Config
}

// New returns an Authenticator.
func New(cfg Config) *Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 10 * time.Minute
	}
	return &Authenticator{cfg: cfg}
}

// ParseBearer extracts the token from an Authorization header value, telling
// a missing token from a malformed one.
func ParseBearer(header string) (string, error) {
	if strings.TrimSpace(header) == "" {
		return "", apperr.New(apperr.MissingToken, "an Authorization: Bearer token is required")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", apperr.New(apperr.MalformedToken, "the Authorization header must be \"Bearer <token>\"")
	}
	tok = strings.TrimSpace(tok)
	if !WellFormed(tok) {
		return "", apperr.New(apperr.MalformedToken, "the bearer token is not a warmpath token")
	}
	return tok, nil
}

// WellFormed reports whether s has the shape of a warmpath token.
func WellFormed(s string) bool {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok || len(rest) < encodedLen || len(rest) > 256 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Authenticate resolves the Authorization header to a principal. Errors are
// *apperr.Error with a distinct code per cause; a store that cannot be reached
// gives apperr.Unavailable.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (domain.Principal, error) {
	tok, err := ParseBearer(header)
	if err != nil {
		return domain.Principal{}, err
	}
	return a.Resolve(ctx, Hash(tok))
}

// Resolve resolves a token hash to a principal that may be used now.
func (a *Authenticator) Resolve(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	p, err := a.lookup(ctx, hash)
	if err != nil {
		return domain.Principal{}, err
	}
	now := a.cfg.Now()
	if p.RevokedAt != nil && !p.RevokedAt.After(now) {
		return domain.Principal{}, apperr.New(apperr.RevokedToken, "the token has been revoked")
	}
	if p.ExpiresAt != nil && !p.ExpiresAt.After(now) {
		return domain.Principal{}, apperr.New(apperr.ExpiredToken, "the token has expired")
	}
	return p, nil
}

func (a *Authenticator) lookup(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	if a.cfg.Cache != nil {
		p, ok, err := a.cfg.Cache.Principal(ctx, hash)
		switch {
		case err != nil:
			// A cache that cannot answer degrades to the store; it never fails auth.
			a.observe(ctx, "error")
		case ok:
			a.observe(ctx, "hit")
			return p, nil
		default:
			a.observe(ctx, "miss")
		}
	}
	p, err := a.cfg.Store.Principal(ctx, hash)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return domain.Principal{}, apperr.New(apperr.UnknownToken, "the token is not known")
	case err != nil:
		return domain.Principal{}, unavailable(err)
	}
	if a.cfg.Cache != nil {
		// Best effort: a failed fill only costs the next request a store
		// lookup. The cache shortens the lifetime of an expiring token.
		_ = a.cfg.Cache.PutPrincipal(ctx, hash, p, a.cfg.CacheTTL)
	}
	return p, nil
}

func (a *Authenticator) observe(ctx context.Context, result string) {
	if a.cfg.Observer != nil {
		a.cfg.Observer.CacheRequest(ctx, "principal", result)
	}
}

func unavailable(err error) error {
	return &apperr.Error{Code: apperr.Unavailable, Message: "authentication is temporarily unavailable", RetryAfter: time.Second, Err: err}
}
