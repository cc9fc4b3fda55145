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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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

// Store resolves token hashes to principals. Expired and revoked tokens ARE
// returned (with ExpiresAt/RevokedAt set) so the Authenticator can say why it
// refuses them; an unknown hash is domain.ErrNotFound. The system of record
// implements it, and so does CachedStore, which wraps another Store.
// Implementations MUST be safe for concurrent use.
type Store interface {
	Principal(ctx context.Context, hash domain.TokenHash) (domain.Principal, error)
}

// Config configures an Authenticator.
type Config struct {
	// Store resolves hashes: the system of record, usually wrapped in a
	// CachedStore.
	Store Store
	// JWT, when set, accepts JWT bearer tokens (compact JWS) beside
	// warmpath tokens.
	JWT *JWTVerifier
	// Observer, when set, counts every authentication by method and result.
	Observer AuthObserver
	Now      func() time.Time
}

// AuthObserver counts authentications (telemetry.Metrics implements it):
// method "opaque" or "jwt", result "ok", the 401 code, or "unavailable".
type AuthObserver interface {
	AuthRequest(ctx context.Context, method, result string)
}

// Authentication methods, as metrics and spans name them.
const (
	MethodOpaque = "opaque"
	MethodJWT    = "jwt"
)

// Authenticator resolves bearer tokens.
type Authenticator struct {
	cfg Config
}

// New returns an Authenticator.
func New(cfg Config) *Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
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

// Authenticate resolves the Authorization header to a principal, and returns
// the token's hash too (a login warmup caches the caller's principal under
// it). Errors are *apperr.Error with a distinct code per cause; a store that
// cannot be reached gives apperr.Unavailable.
//
// With JWTs enabled, a bearer that is a compact JWS is verified locally
// instead: its hash is the hash of its text, like a warmpath token's.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (domain.Principal, domain.TokenHash, error) {
	method := MethodOpaque
	tok, err := a.bearer(header)
	if err == nil && a.cfg.JWT != nil && LooksLikeJWT(tok) {
		method = MethodJWT
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("warmpath.auth.method", method))
	if err != nil {
		a.observe(ctx, method, err)
		return domain.Principal{}, domain.TokenHash{}, err
	}
	h := Hash(tok)
	var p domain.Principal
	if method == MethodJWT {
		p, err = a.cfg.JWT.Principal(ctx, tok, h)
	} else {
		p, err = a.Resolve(ctx, h)
	}
	a.observe(ctx, method, err)
	return p, h, err
}

// bearer is ParseBearer that also lets a JWT through when JWTs are enabled.
func (a *Authenticator) bearer(header string) (string, error) {
	if a.cfg.JWT != nil {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
		if tok = strings.TrimSpace(tok); ok && strings.EqualFold(scheme, "Bearer") && LooksLikeJWT(tok) {
			return tok, nil
		}
	}
	tok, err := ParseBearer(header)
	if err != nil && a.cfg.JWT != nil && apperr.CodeOf(err) == apperr.MalformedToken && strings.TrimSpace(header) != "" {
		return "", apperr.New(apperr.MalformedToken, "the bearer token is neither a warmpath token nor a JWT")
	}
	return tok, err
}

func (a *Authenticator) observe(ctx context.Context, method string, err error) {
	if a.cfg.Observer == nil {
		return
	}
	result := "ok"
	switch {
	case err == nil:
	case apperr.IsFault(err):
		result = "unavailable"
	default:
		result = string(apperr.CodeOf(err))
	}
	a.cfg.Observer.AuthRequest(ctx, method, result)
}

// Resolve resolves a token hash to a principal that may be used now.
func (a *Authenticator) Resolve(ctx context.Context, hash domain.TokenHash) (domain.Principal, error) {
	p, err := a.cfg.Store.Principal(ctx, hash)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return domain.Principal{}, apperr.New(apperr.UnknownToken, "the token is not known")
	case err != nil:
		return domain.Principal{}, apperr.Temporary(err, "authentication is temporarily unavailable")
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
