package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/auth/authtest"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/store/memory"
)

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "warmpath-test"
)

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type countingSubjects struct {
	next  SubjectStore
	calls atomic.Int64
}

func (c *countingSubjects) SubjectPrincipal(ctx context.Context, iss, sub, plan string) (domain.Principal, error) {
	c.calls.Add(1)
	return c.next.SubjectPrincipal(ctx, iss, sub, plan)
}

type refreshCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (r *refreshCounter) JWKSRefresh(_ context.Context, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]int{}
	}
	r.m[result]++
}

func (r *refreshCounter) get(result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[result]
}

type fixture struct {
	idp      *authtest.IDP
	clk      *clock
	store    *memory.Store
	subjects *countingSubjects
	cache    *fakeCache
	refresh  *refreshCounter
	v        *JWTVerifier
}

func newMemStore(t *testing.T) *memory.Store {
	t.Helper()
	s := memory.New()
	if err := s.UpsertPlans(context.Background(), []domain.Plan{
		{Name: "free", Quota: 100, Period: domain.PeriodDay, MaxItems: 10},
		{Name: "pro", Quota: 1000, Period: domain.PeriodDay, MaxItems: 100},
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t *testing.T, p *authtest.IDP, s *memory.Store) *fixture {
	t.Helper()
	f := &fixture{
		idp: p, clk: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, store: s,
		cache: &fakeCache{m: map[domain.TokenHash]domain.Principal{}}, refresh: &refreshCounter{},
	}
	f.subjects = &countingSubjects{next: s}
	f.v = NewJWTVerifier(JWTConfig{
		JWKSURL: p.URL, Issuer: testIssuer, Audience: testAudience, Plan: "free",
		MinRefresh: 10 * time.Second, FetchTimeout: 2 * time.Second,
		Subjects: f.subjects, Cache: f.cache, Now: f.clk.Now, Observer: f.refresh,
	})
	return f
}

func (f *fixture) claims(sub string) map[string]any {
	now := f.clk.Now()
	return map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func (f *fixture) auth(t *testing.T, token string) (domain.Principal, error) {
	t.Helper()
	return f.v.Principal(context.Background(), token, Hash(token))
}

func wantCode(t *testing.T, what string, err error, code apperr.Code) {
	t.Helper()
	if got := apperr.CodeOf(err); err == nil || got != code {
		t.Fatalf("%s: err = %v (code %q), want code %q", what, err, got, code)
	}
}

func TestJWTAcceptedAlgorithms(t *testing.T) {
	p := authtest.NewIDP(t)
	f := newFixture(t, p, newMemStore(t))
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			s := p.AddKey("k-"+alg, alg)
			if err := f.v.Refresh(context.Background()); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			tok := authtest.Sign(t, s, map[string]any{"kid": "k-" + alg}, f.claims("user-"+alg))
			pr, err := f.auth(t, tok)
			if err != nil {
				t.Fatalf("verify %s: %v", alg, err)
			}
			if pr.UserID == 0 || pr.Plan.Name != "free" || pr.ExpiresAt == nil || !pr.ExpiresAt.Equal(f.clk.Now().Add(time.Hour).Truncate(time.Second)) {
				t.Fatalf("principal = %+v", pr)
			}
		})
	}
}

func TestJWTSameSubjectIsOneUser(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "ES256")
	f := newFixture(t, p, newMemStore(t))
	a, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice")))
	if err != nil {
		t.Fatal(err)
	}
	c := f.claims("alice")
	c["aud"] = []string{"someone-else", testAudience} // aud as an array
	c["jti"] = "another token"
	b, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, c))
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("bob")))
	if err != nil {
		t.Fatal(err)
	}
	if a.UserID != b.UserID || a.UserID == other.UserID {
		t.Fatalf("users: alice %d and %d, bob %d; want alice twice the same, bob another", a.UserID, b.UserID, other.UserID)
	}
}

func TestJWTRejections(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "RS256")
	f := newFixture(t, p, newMemStore(t))
	stranger := authtest.NewSigner(t, "RS256")
	pub, err := x509.MarshalPKIXPublicKey(s.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	now := f.clk.Now()
	with := func(k string, v any) map[string]any {
		c := f.claims("alice")
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hs256 := func(key []byte) string {
		input := authtest.B64JSON(t, map[string]any{"alg": "HS256", "kid": "k1"}) + "." + authtest.B64JSON(t, f.claims("alice"))
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return input + "." + authtest.B64(m.Sum(nil))
	}
	good := authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice"))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + authtest.B64JSON(t, f.claims("mallory")) + "." + parts[2]
	jwkJSON, _ := json.Marshal(s.Key.Public())

	for _, tt := range []struct {
		name  string
		token string
		code  apperr.Code
	}{
		{"expired", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("exp", now.Add(-time.Minute).Unix())), apperr.ExpiredToken},
		{"wrong issuer", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("iss", "https://evil.example/")), apperr.InvalidToken},
		{"no issuer", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("iss", nil)), apperr.InvalidToken},
		{"wrong audience", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("aud", "other-app")), apperr.InvalidToken},
		{"wrong audience array", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("aud", []string{"a", "b"})), apperr.InvalidToken},
		{"no audience", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("aud", nil)), apperr.InvalidToken},
		{"not yet valid", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("nbf", now.Add(5*time.Minute).Unix())), apperr.InvalidToken},
		{"issued in the future", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("iat", now.Add(5*time.Minute).Unix())), apperr.InvalidToken},
		{"no subject", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("sub", nil)), apperr.InvalidToken},
		{"empty subject", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("sub", "")), apperr.InvalidToken},
		{"no expiry", authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("exp", nil)), apperr.InvalidToken},
		{"alg none", authtest.B64JSON(t, map[string]any{"alg": "none", "kid": "k1"}) + "." + authtest.B64JSON(t, f.claims("alice")) + ".", apperr.InvalidToken},
		{"HS256 with the PEM public key", hs256(pemPub), apperr.InvalidToken},
		{"HS256 with the JWK public key", hs256(jwkJSON), apperr.InvalidToken},
		{"alg differs from the key's", authtest.Sign(t, s, map[string]any{"kid": "k1", "alg": "ES256"}, f.claims("alice")), apperr.InvalidToken},
		{"unknown authtest.Signer", authtest.Sign(t, stranger, map[string]any{"kid": "stranger"}, f.claims("alice")), apperr.InvalidToken},
		{"other key under a known kid", authtest.Sign(t, stranger, map[string]any{"kid": "k1"}, f.claims("alice")), apperr.InvalidToken},
		{"tampered payload", tampered, apperr.InvalidToken},
		{"critical header", authtest.Sign(t, s, map[string]any{"kid": "k1", "crit": []string{"exp"}}, f.claims("alice")), apperr.InvalidToken},
		{"garbage header", "!!!." + parts[1] + "." + parts[2], apperr.InvalidToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.auth(t, tt.token)
			wantCode(t, tt.name, err, tt.code)
		})
	}
	if n := f.subjects.calls.Load(); n != 0 {
		t.Fatalf("refused tokens resolved %d subjects; want none", n)
	}
	// Within the leeway: a token expired 10 s ago, or valid in 10 s, passes.
	if _, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("exp", now.Add(-10*time.Second).Unix()))); err != nil {
		t.Fatalf("expired within the leeway: %v", err)
	}
	if _, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, with("nbf", now.Add(10*time.Second).Unix()))); err != nil {
		t.Fatalf("not before within the leeway: %v", err)
	}
}

func TestJWTCachedRepeat(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "ES256")
	f := newFixture(t, p, newMemStore(t))
	tok := authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice"))
	first, err := f.auth(t, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cp, ok := f.v.CachedPrincipal(Hash(tok)); !ok || cp.UserID != first.UserID {
		t.Fatalf("CachedPrincipal of the verified token = %+v, %v (a login warmup needs it)", cp, ok)
	}
	if _, ok := f.cache.m[Hash(tok)]; ok {
		t.Fatal("the verified token was written to the shared cache on the request path")
	}
	if _, ok := f.cache.m[SubjectKey(testIssuer, "alice")]; !ok {
		t.Fatal("the subject's principal is not in the shared cache")
	}
	// A repeat is answered in process: the JWKS going away, the shared cache
	// failing and the store are all irrelevant to it.
	f.cache.err = fmt.Errorf("cache down")
	p.Down.Store(true)
	again, err := f.auth(t, tok)
	if err != nil || again.UserID != first.UserID {
		t.Fatalf("repeat = %+v, %v", again, err)
	}
	if n := f.subjects.calls.Load(); n != 1 {
		t.Fatalf("subject lookups = %d, want 1", n)
	}
	// A new token of the same subject resolves through the shared cache,
	// not the store.
	f.cache.err = nil
	p.Down.Store(false)
	c := f.claims("alice")
	c["jti"] = "2"
	if _, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, c)); err != nil {
		t.Fatal(err)
	}
	if n := f.subjects.calls.Load(); n != 1 {
		t.Fatalf("subject lookups after a second token = %d, want 1 (cached principal)", n)
	}
	// Past its expiry (and the leeway) the cached token is refused.
	f.clk.Advance(time.Hour + 31*time.Second)
	if _, ok := f.v.CachedPrincipal(Hash(tok)); ok {
		t.Fatal("CachedPrincipal of an expired token")
	}
	_, err = f.auth(t, tok)
	wantCode(t, "expired cached token", err, apperr.ExpiredToken)
}

func TestJWTKeyRotation(t *testing.T) {
	p := authtest.NewIDP(t)
	old := p.AddKey("old", "RS256")
	f := newFixture(t, p, newMemStore(t))
	if err := f.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth(t, authtest.Sign(t, old, map[string]any{"kid": "old"}, f.claims("alice"))); err != nil {
		t.Fatal(err)
	}
	fresh := p.AddKey("new", "ES256")
	f.clk.Advance(11 * time.Second)
	if _, err := f.auth(t, authtest.Sign(t, fresh, map[string]any{"kid": "new"}, f.claims("alice"))); err != nil {
		t.Fatalf("token of a rotated-in key: %v", err)
	}
	if n := p.Fetches.Load(); n != 2 {
		t.Fatalf("JWKS fetches = %d, want 2 (warmup, then the new kid)", n)
	}
}

func TestJWTUnknownKidRefreshRateLimited(t *testing.T) {
	p := authtest.NewIDP(t)
	p.AddKey("k1", "RS256")
	f := newFixture(t, p, newMemStore(t))
	if err := f.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	forger := authtest.NewSigner(t, "RS256")
	var wg sync.WaitGroup
	errs := make([]error, 30)
	for i := range 30 {
		tok := authtest.Sign(t, forger, map[string]any{"kid": fmt.Sprintf("forged-%d", i)}, f.claims("alice"))
		wg.Go(func() { _, errs[i] = f.auth(t, tok) })
	}
	wg.Wait()
	for i, err := range errs {
		wantCode(t, fmt.Sprintf("forged kid %d", i), err, apperr.InvalidToken)
	}
	// The warmup fetch was just now, so the flood is within MinRefresh: no
	// fetch at all.
	if n := p.Fetches.Load(); n != 1 {
		t.Fatalf("JWKS fetches after 30 unknown kids = %d, want 1", n)
	}
	f.clk.Advance(11 * time.Second)
	for i := range 30 {
		wg.Go(func() {
			_, errs[i] = f.auth(t, authtest.Sign(t, forger, map[string]any{"kid": fmt.Sprintf("again-%d", i)}, f.claims("alice")))
		})
	}
	wg.Wait()
	if n := p.Fetches.Load(); n != 2 {
		t.Fatalf("JWKS fetches after another 30 unknown kids past MinRefresh = %d, want 2", n)
	}
	if ok := f.refresh.get("ok"); ok != 2 {
		t.Fatalf("refreshes counted ok = %d, want 2", ok)
	}
}

func TestJWTJWKSDownAtStart(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "EdDSA")
	p.Down.Store(true)
	f := newFixture(t, p, newMemStore(t))
	if err := f.v.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh with the JWKS down: no error")
	}
	tok := authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice"))
	_, err := f.auth(t, tok)
	wantCode(t, "JWKS down at start", err, apperr.Unavailable)
	if e := apperr.As(err); e == nil || e.RetryAfter <= 0 {
		t.Fatalf("no Retry-After on %v", err)
	}
	if f.refresh.get("error") < 1 {
		t.Fatal("failed refresh not counted")
	}
	p.Down.Store(false)
	f.clk.Advance(11 * time.Second)
	if _, err := f.auth(t, tok); err != nil {
		t.Fatalf("JWKS back: %v", err)
	}
	// Down again: known keys keep working, an unknown kid is 503 (its
	// authtest.Signer may be legitimate and unknown only because the JWKS is away).
	p.Down.Store(true)
	f.clk.Advance(11 * time.Second)
	c := f.claims("bob")
	if _, err := f.auth(t, authtest.Sign(t, s, map[string]any{"kid": "k1"}, c)); err != nil {
		t.Fatalf("known key with the JWKS down: %v", err)
	}
	_, err = f.auth(t, authtest.Sign(t, authtest.NewSigner(t, "EdDSA"), map[string]any{"kid": "k2"}, c))
	wantCode(t, "unknown kid with the JWKS down", err, apperr.Unavailable)
}

func TestJWTFetchDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	v := NewJWTVerifier(JWTConfig{JWKSURL: srv.URL, Issuer: testIssuer, Audience: testAudience, Plan: "free",
		FetchTimeout: 50 * time.Millisecond, Subjects: newMemStore(t)})
	done := make(chan error, 1)
	go func() { done <- v.Refresh(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a hanging JWKS fetch succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a hanging JWKS fetch has no deadline")
	}
}

func TestJWTSubjectRaceAcrossInstances(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "ES256")
	shared := newMemStore(t)
	a, b := newFixture(t, p, shared), newFixture(t, p, shared)
	const n = 8
	ids := make([]int64, 2*n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 2 * n {
		f := a
		if i%2 == 1 {
			f = b
		}
		c := f.claims("newcomer")
		c["jti"] = fmt.Sprint(i)
		tok := authtest.Sign(t, s, map[string]any{"kid": "k1"}, c)
		wg.Go(func() {
			<-start
			pr, err := f.auth(t, tok)
			if err != nil {
				t.Errorf("sign-in %d: %v", i, err)
			}
			ids[i] = pr.UserID
		})
	}
	close(start)
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("first sign-ins of one subject on two instances gave users %v", ids)
		}
	}
}

func TestMaxAge(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                        jwksDefaultMaxAge,
		"public, max-age=3600":    time.Hour,
		"max-age=5":               jwksMinMaxAge,
		"max-age=99999999":        jwksMaxMaxAge,
		"no-cache, max-age=bogus": jwksDefaultMaxAge,
	} {
		if got := maxAge(cc); got != want {
			t.Errorf("maxAge(%q) = %v, want %v", cc, got, want)
		}
	}
}

type authCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *authCounter) AuthRequest(_ context.Context, method, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[method+" "+result]++
}

func TestAuthenticatorJWTBesideOpaque(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "RS256")
	f := newFixture(t, p, newMemStore(t))
	text, h, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	opaque := &fakeStore{m: map[domain.TokenHash]domain.Principal{h: {UserID: 99, TokenID: 1}}}
	obs := &authCounter{m: map[string]int{}}
	a := New(Config{Store: opaque, JWT: f.v, Observer: obs, Now: f.clk.Now})
	jwtTok := authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice"))

	if pr, _, err := a.Authenticate(context.Background(), "Bearer "+text); err != nil || pr.UserID != 99 {
		t.Fatalf("opaque token beside JWTs = %+v, %v", pr, err)
	}
	pr, hash, err := a.Authenticate(context.Background(), "Bearer "+jwtTok)
	if err != nil || pr.UserID == 0 || hash != Hash(jwtTok) {
		t.Fatalf("JWT = %+v, %v", pr, err)
	}
	_, _, err = a.Authenticate(context.Background(), "Bearer "+jwtTok+"x")
	wantCode(t, "bad signature", err, apperr.InvalidToken)
	_, _, err = a.Authenticate(context.Background(), "Bearer not-a-token")
	wantCode(t, "neither", err, apperr.MalformedToken)
	for k, want := range map[string]int{"opaque ok": 1, "jwt ok": 1, "jwt invalid_token": 1, "opaque malformed_token": 1} {
		if obs.m[k] != want {
			t.Errorf("auth requests %q = %d, want %d (all: %v)", k, obs.m[k], want, obs.m)
		}
	}
	// JWTs not enabled: a JWT is a malformed token, as before.
	_, _, err = New(Config{Store: opaque}).Authenticate(context.Background(), "Bearer "+jwtTok)
	wantCode(t, "JWT without JWTs enabled", err, apperr.MalformedToken)
}

func TestAuthSpanSaysMethod(t *testing.T) {
	p := authtest.NewIDP(t)
	s := p.AddKey("k1", "ES256")
	f := newFixture(t, p, newMemStore(t))
	text, h, _ := NewToken()
	a := New(Config{Store: &fakeStore{m: map[domain.TokenHash]domain.Principal{h: {UserID: 1}}}, JWT: f.v, Now: f.clk.Now})
	rec := tracetest.NewSpanRecorder()
	tr := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	jwtTok := authtest.Sign(t, s, map[string]any{"kid": "k1"}, f.claims("alice"))
	for _, header := range []string{"Bearer " + text, "Bearer " + jwtTok} {
		ctx, span := tr.Start(context.Background(), "auth")
		if _, _, err := a.Authenticate(ctx, header); err != nil {
			t.Fatal(err)
		}
		span.End()
	}
	var got []string
	for _, sp := range rec.Ended() {
		for _, kv := range sp.Attributes() {
			if kv.Key == "warmpath.auth.method" {
				got = append(got, kv.Value.AsString())
			}
			if strings.Contains(kv.Value.Emit(), "alice") || strings.Contains(kv.Value.Emit(), jwtTok[:20]) {
				t.Errorf("span attribute %s carries the token or its subject", kv.Key)
			}
		}
	}
	if strings.Join(got, ",") != "opaque,jwt" {
		t.Fatalf("auth span methods = %v, want opaque, jwt", got)
	}
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	p := authtest.NewIDP(t)
	p.AddKey("k1", "ES256")
	p.SetMaxAge("3600")
	f := newFixture(t, p, newMemStore(t))
	waits := make(chan time.Duration)
	fire := make(chan time.Time)
	f.v.after = func(d time.Duration) <-chan time.Time { waits <- d; return fire }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.v.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if d := <-waits; d != 10*time.Second {
		t.Fatalf("wait before any keys = %v, want MinRefresh", d)
	}
	fire <- time.Time{}
	if d := <-waits; d != 45*time.Minute {
		t.Fatalf("wait after a fetch with max-age=3600 = %v, want 3/4 of it", d)
	}
	if n := p.Fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1", n)
	}
	p.Down.Store(true)
	fire <- time.Time{}
	if d := <-waits; d != 10*time.Second {
		t.Fatalf("wait after a failed fetch = %v, want MinRefresh", d)
	}
	if f.v.keys.current() == nil {
		t.Fatal("a failed refresh dropped the keys")
	}
	if f.refresh.get("error") != 1 || f.refresh.get("ok") != 1 {
		t.Fatalf("refreshes counted: %v", f.refresh.m)
	}
}
