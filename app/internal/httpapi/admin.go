package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/auth"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/usagesync"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// AdminStore is what the admin API needs from the system of record.
type AdminStore interface {
	CreateUser(ctx context.Context, name, plan string, quotaOverride *int64) (domain.User, error)
	CreateSubjectUser(ctx context.Context, name, plan string, quotaOverride *int64, issuer, subject string) (domain.User, error)
	CreateToken(ctx context.Context, userID int64, hash domain.TokenHash, expiresAt *time.Time) (domain.Token, error)
	RevokeToken(ctx context.Context, tokenID int64, at time.Time) (domain.Token, error)
}

// PrincipalCache is the cache entry revocation must remove.
type PrincipalCache interface {
	DropPrincipal(ctx context.Context, hash domain.TokenHash) error
}

// PrincipalPrimer fills the principal cache with a token just created
// (auth.CachedStore implements it).
type PrincipalPrimer interface {
	Prime(ctx context.Context, hash domain.TokenHash) error
}

// Syncer is the write-behind loop as the admin API sees it.
type Syncer interface {
	TriggerFrom(ctx context.Context)
	Status(ctx context.Context) (usagesync.Status, error)
}

// AdminConfig is everything the admin API needs.
type AdminConfig struct {
	Logger         *slog.Logger
	Store          AdminStore
	Cache          PrincipalCache  // optional
	Principals     PrincipalPrimer // optional: every token created here is primed, so its first request finds it cached
	Sync           Syncer
	Warmup         interface{ System() warmup.SystemStatus }
	MetricsHandler http.Handler
	// Tracer records the admin actions that cause background work (a forced
	// sync), so that work can link back to them.
	Tracer trace.Tracer
	// Token, when set, is required as "Authorization: Bearer <token>".
	Token string
	// JWTIssuer is AUTH_JWT_ISSUER: a user created with a "subject" signs in
	// as (JWTIssuer, subject). Empty: JWT sign-in is off and "subject" refused.
	JWTIssuer string
	Now       func() time.Time
}

type admin struct {
	cfg       AdminConfig
	tokenHash [32]byte
}

// NewAdmin returns the admin API handler: metrics, pprof, user and token
// provisioning, sync and warmup control.
func NewAdmin(cfg AdminConfig) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	a := &admin{cfg: cfg, tokenHash: sha256.Sum256([]byte(cfg.Token))}
	mux := http.NewServeMux()
	a.routes(mux)
	return a.authenticate(mux)
}

func (a *admin) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", newIDs.next())
		if a.cfg.Token != "" {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if !ok || subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="warmpath-admin"`)
				a.error(w, apperr.New(apperr.InvalidToken, "a valid admin token is required"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *admin) json(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *admin) error(w http.ResponseWriter, err error) {
	e := apperr.As(err)
	if e == nil {
		e = apperr.Wrap(err, apperr.Internal, "an internal error occurred")
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfter(e.RetryAfter))
	}
	if status(e.Code) >= 500 && a.cfg.Logger != nil {
		a.cfg.Logger.Error("admin request failed", "code", string(e.Code), "err", err.Error())
	}
	a.json(w, status(e.Code), errorBody{Error: errorDetail{Code: e.Code, Message: e.Message}, RequestID: w.Header().Get("X-Request-Id")})
}

// decode reads a small JSON body; an empty body decodes to the zero value.
func (a *admin) decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return apperr.New(apperr.UnsupportedMedia, "the body must be application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apperr.New(apperr.BodyTooLarge, "the body is too large")
		}
		return apperr.New(apperr.InvalidRequest, "the body is not valid JSON for this route: %v", err)
	}
	return nil
}

type createUserRequest struct {
	Name  string `json:"name"`
	Plan  string `json:"plan"`
	Quota *int64 `json:"quota"`
	// Subject, when set, is the JWT subject ("sub") this user signs in as.
	Subject *string `json:"subject"`
}

type tokenResponse struct {
	ID        int64      `json:"id"`
	UserID    int64      `json:"userId"`
	Token     string     `json:"token"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

func (a *admin) createUser(w http.ResponseWriter, r *http.Request) {
	var req createUserRequest
	if err := a.decode(r, &req); err != nil {
		a.error(w, err)
		return
	}
	switch {
	case req.Name == "" || len(req.Name) > 200 || !utf8.ValidString(req.Name):
		a.error(w, apperr.New(apperr.InvalidRequest, "name must be 1-200 bytes of UTF-8"))
		return
	case req.Plan == "":
		a.error(w, apperr.New(apperr.InvalidRequest, "plan is required"))
		return
	case req.Quota != nil && *req.Quota < 0:
		a.error(w, apperr.New(apperr.InvalidRequest, "quota must not be negative"))
		return
	case req.Subject != nil && a.cfg.JWTIssuer == "":
		a.error(w, apperr.New(apperr.InvalidRequest, "subject needs JWT sign-in (AUTH_JWKS_URL) configured"))
		return
	case req.Subject != nil && (*req.Subject == "" || len(*req.Subject) > 255 || !utf8.ValidString(*req.Subject)):
		a.error(w, apperr.New(apperr.InvalidRequest, "subject must be 1-255 bytes of UTF-8"))
		return
	}
	var u domain.User
	var err error
	if req.Subject != nil {
		u, err = a.cfg.Store.CreateSubjectUser(r.Context(), req.Name, req.Plan, req.Quota, a.cfg.JWTIssuer, *req.Subject)
	} else {
		u, err = a.cfg.Store.CreateUser(r.Context(), req.Name, req.Plan, req.Quota)
	}
	switch {
	case errors.Is(err, domain.ErrConflict):
		a.error(w, apperr.New(apperr.ConflictingOperation, "the subject is bound to another user already"))
		return
	case errors.Is(err, domain.ErrUnknownPlan):
		a.error(w, apperr.New(apperr.UnknownPlan, "no plan named %q", req.Plan))
		return
	case err != nil:
		a.error(w, storeErr(err))
		return
	}
	tok, err := a.newToken(r.Context(), u.ID, nil)
	if err != nil {
		a.error(w, err)
		return
	}
	a.json(w, http.StatusCreated, map[string]any{"id": u.ID, "name": u.Name, "plan": u.Plan, "quota": u.QuotaOverride, "token": tok.Token, "tokenId": tok.ID})
}

func (a *admin) newToken(ctx context.Context, userID int64, expiresAt *time.Time) (tokenResponse, error) {
	text, hash, err := auth.NewToken()
	if err != nil {
		return tokenResponse{}, err
	}
	t, err := a.cfg.Store.CreateToken(ctx, userID, hash, expiresAt)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return tokenResponse{}, apperr.New(apperr.NotFound, "no user %d", userID)
	case err != nil:
		return tokenResponse{}, storeErr(err)
	}
	if a.cfg.Principals != nil {
		if err := a.cfg.Principals.Prime(ctx, hash); err != nil && a.cfg.Logger != nil {
			a.cfg.Logger.WarnContext(ctx, "principal cache not primed with a new token (its first request reads the store)", "token_id", t.ID, "err", err.Error())
		}
	}
	return tokenResponse{ID: t.ID, UserID: userID, Token: text, ExpiresAt: t.ExpiresAt}, nil
}

type createTokenRequest struct {
	ExpiresIn string     `json:"expiresIn"` // Go duration
	ExpiresAt *time.Time `json:"expiresAt"`
}

func (a *admin) createToken(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		a.error(w, apperr.New(apperr.InvalidRequest, "user id must be a positive integer"))
		return
	}
	var req createTokenRequest
	if err := a.decode(r, &req); err != nil {
		a.error(w, err)
		return
	}
	exp := req.ExpiresAt
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			a.error(w, apperr.New(apperr.InvalidRequest, "expiresIn must be a positive Go duration like \"1h\""))
			return
		}
		t := a.cfg.Now().Add(d).UTC()
		exp = &t
	}
	tok, err := a.newToken(r.Context(), id, exp)
	if err != nil {
		a.error(w, err)
		return
	}
	a.json(w, http.StatusCreated, tok)
}

func (a *admin) revokeToken(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		a.error(w, apperr.New(apperr.InvalidRequest, "token id must be a positive integer"))
		return
	}
	t, err := a.cfg.Store.RevokeToken(r.Context(), id, a.cfg.Now().UTC())
	switch {
	case errors.Is(err, domain.ErrNotFound):
		a.error(w, apperr.New(apperr.NotFound, "no token %d", id))
		return
	case err != nil:
		a.error(w, storeErr(err))
		return
	}
	if a.cfg.Cache != nil {
		// The store says revoked; the shared cache must agree before we say
		// so, or another instance could keep accepting the token. Revoking
		// is idempotent, so the caller can simply retry.
		if err := a.cfg.Cache.DropPrincipal(r.Context(), t.Hash); err != nil {
			a.error(w, apperr.Temporary(err, "the token is revoked in the store but the cache could not be updated; retry the request"))
			return
		}
	}
	a.json(w, http.StatusOK, map[string]any{"id": t.ID, "userId": t.UserID, "revokedAt": t.RevokedAt})
}

func (a *admin) triggerSync(w http.ResponseWriter, r *http.Request) {
	ctx, span := a.cfg.Tracer.Start(r.Context(), "POST /admin/sync", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	// Only a signal: the flush it causes runs on the sync loop, linked to
	// this span, and this answers at once.
	a.cfg.Sync.TriggerFrom(ctx)
	a.json(w, http.StatusAccepted, map[string]any{"triggered": true})
}

func (a *admin) syncStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.cfg.Sync.Status(r.Context())
	if err != nil {
		a.error(w, storeErr(err))
		return
	}
	a.json(w, http.StatusOK, st)
}

func (a *admin) warmupStatus(w http.ResponseWriter, r *http.Request) {
	a.json(w, http.StatusOK, a.cfg.Warmup.System())
}

func storeErr(err error) error {
	if errors.Is(err, domain.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return apperr.Temporary(err, "the store is temporarily unavailable")
	}
	return apperr.Wrap(err, apperr.Internal, "an internal error occurred")
}
