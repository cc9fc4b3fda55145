package main

// End-to-end: sign-in with the application's own login (JWT bearer tokens
// verified against a JWKS served by the test).

import (
	"strings"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/auth/authtest"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

const (
	e2eIssuer   = "https://login.example.test/"
	e2eAudience = "warmpath-e2e"
)

// testIDP serves a one-key ES256 JWKS and signs tokens with that key.
type testIDP struct {
	*authtest.IDP
	key authtest.Signer
}

func newTestIDP(t testing.TB) *testIDP {
	t.Helper()
	p := &testIDP{IDP: authtest.NewIDP(t)}
	p.key = p.AddKey("e2e-1", "ES256")
	return p
}

func (p *testIDP) env(env map[string]string) map[string]string {
	return withEnv(env, "AUTH_JWKS_URL", p.URL, "AUTH_JWT_ISSUER", e2eIssuer, "AUTH_JWT_AUDIENCE", e2eAudience,
		"AUTH_JWKS_MIN_REFRESH", "1s")
}

// token signs claims for sub (valid for an hour); extra overrides claims.
func (p *testIDP) token(t testing.TB, sub string, extra map[string]any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"iss": e2eIssuer, "aud": e2eAudience, "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": randHex(8)}
	for k, v := range extra {
		claims[k] = v
	}
	return authtest.Sign(t, p.key, map[string]any{"kid": "e2e-1", "typ": "JWT"}, claims)
}

func waitJWKSStep(t testing.TB, in *instance) {
	t.Helper()
	eventually(t, 10*time.Second, "system warmup step jwks ready", func() bool {
		for _, s := range systemWarmup(t, in).Steps {
			if s.Name == "jwks" {
				return s.State == warmup.StateReady
			}
		}
		t.Fatal("no jwks step in system warmup")
		return false
	})
}

func TestJWTSignInEndToEnd(t *testing.T) {
	idp := newTestIDP(t)
	in := start(t, idp.env(backendEnv(t)))
	waitJWKSStep(t, in)
	if r := call(t, "GET", in.base+"/readyz?verbose", "", nil); !strings.Contains(string(r.raw), `"jwks"`) {
		t.Errorf("/readyz?verbose does not show the jwks step: %s", r.raw)
	}

	tok := idp.token(t, "alice", nil)
	r := in.items(t, tok, []string{"a", "b"}, nil)
	if r.status != 200 || r.body["total"] != 2.0 {
		t.Fatalf("add items with a JWT: %d %s", r.status, r.raw)
	}
	r = in.query(t, tok, "a", "x")
	if r.status != 200 || r.body["usage"].(map[string]any)["used"] != 1.0 {
		t.Fatalf("query with a JWT: %d %s", r.status, r.raw)
	}
	if got := r.header.Get("RateLimit-Policy"); got != `"quota";q=1000;w=86400` {
		t.Errorf("first sign-in plan: RateLimit-Policy = %q, want the free plan's", got)
	}
	if !strings.Contains(r.header.Get("Server-Timing"), "auth;dur=") {
		t.Errorf("Server-Timing %q has no auth phase", r.header.Get("Server-Timing"))
	}
	// Another token of the same subject is the same user (same set, same count).
	r = in.query(t, idp.token(t, "alice", map[string]any{"aud": []string{"other", e2eAudience}}), "a", "x")
	if r.status != 200 || r.body["usage"].(map[string]any)["used"] != 2.0 || r.body["checked"] != 2.0 {
		t.Fatalf("second token of the same subject: %d %s", r.status, r.raw)
	}
	if d := r.body["missing"].([]any); len(d) != 1 || d[0] != "x" {
		t.Fatalf("second token sees another set: %s", r.raw)
	}

	// Login warmup works with a JWT: its session part finds the principal.
	bob := idp.token(t, "bob", nil)
	if r := postWarmup(t, in, bob); r.status != 202 && r.status != 200 {
		t.Fatalf("warmup with a JWT: %d %s", r.status, r.raw)
	}
	st := waitWarmup(t, in, bob, warmup.StateReady)
	if ps, ok := st.Parts[warmup.PartSession]; !ok || ps.State != warmup.StateReady {
		t.Fatalf("warmup parts with a JWT: %+v", st.Parts)
	}

	// Refusals: 401 with the code and the WWW-Authenticate error.
	for _, tc := range []struct {
		name, token, code string
	}{
		{"expired", idp.token(t, "alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), "expired_token"},
		{"wrong audience", idp.token(t, "alice", map[string]any{"aud": "someone-else"}), "invalid_token"},
		{"wrong issuer", idp.token(t, "alice", map[string]any{"iss": "https://evil.example/"}), "invalid_token"},
		{"no subject", idp.token(t, "", nil), "invalid_token"},
		{"tampered", tok[:len(tok)-4] + "AAAA", "invalid_token"},
	} {
		r := in.query(t, tc.token, "a")
		if r.status != 401 || r.errCode() != tc.code || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q %s (WWW-Authenticate %q)", tc.name, r.status, r.errCode(), r.raw, r.header.Get("WWW-Authenticate"))
		}
	}

	// A subject bound in advance signs in as that user, on its plan.
	r = call(t, "POST", in.admin+"/admin/users", "", map[string]any{"name": "carol", "plan": "pro", "subject": "carol-sub"})
	if r.status != 201 {
		t.Fatalf("create a user with a subject: %d %s", r.status, r.raw)
	}
	if r2 := call(t, "POST", in.admin+"/admin/users", "", map[string]any{"name": "carol2", "plan": "free", "subject": "carol-sub"}); r2.status != 409 {
		t.Fatalf("second user with the same subject: %d %s", r2.status, r2.raw)
	}
	carolOpaque := r.body["token"].(string)
	if r := in.items(t, carolOpaque, []string{"z"}, nil); r.status != 200 {
		t.Fatalf("bound user's opaque token: %d %s", r.status, r.raw)
	}
	r = in.query(t, idp.token(t, "carol-sub", nil), "z")
	if r.status != 200 || len(r.body["missing"].([]any)) != 0 || !strings.HasPrefix(r.header.Get("RateLimit-Policy"), `"quota";q=1000000;`) {
		t.Fatalf("bound subject: %d %s (RateLimit-Policy %q)", r.status, r.raw, r.header.Get("RateLimit-Policy"))
	}

	// Opaque tokens keep working beside JWTs.
	u := in.newUser(t, "free", nil)
	if r := in.query(t, u.token, "a"); r.status != 200 {
		t.Fatalf("opaque token with JWTs on: %d %s", r.status, r.raw)
	}

	m := call(t, "GET", in.admin+"/metrics", "", nil)
	for _, want := range []string{`warmpath_auth_requests_total{method="jwt",result="ok"`, `warmpath_auth_requests_total{method="jwt",result="invalid_token"`, `warmpath_jwks_refreshes_total{result="ok"`} {
		if !strings.Contains(string(m.raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestJWTJWKSDownAtStart(t *testing.T) {
	idp := newTestIDP(t)
	idp.Down.Store(true)
	in := start(t, idp.env(backendEnv(t))) // serves (readyz 200) without keys
	if r := call(t, "GET", in.base+"/livez", "", nil); r.status != 200 {
		t.Fatalf("livez with the JWKS down: %d", r.status)
	}
	tok := idp.token(t, "alice", nil)
	r := in.query(t, tok, "a")
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("JWT with the JWKS down: %d %s (Retry-After %q)", r.status, r.raw, r.header.Get("Retry-After"))
	}
	u := in.newUser(t, "free", nil)
	if r := in.query(t, u.token, "a"); r.status != 200 {
		t.Fatalf("opaque token with the JWKS down: %d %s", r.status, r.raw)
	}
	idp.Down.Store(false)
	eventually(t, 10*time.Second, "JWT accepted once the JWKS is back", func() bool {
		return in.query(t, tok, "a").status == 200
	})
}

func TestJWTSubjectAcrossInstances(t *testing.T) {
	idp := newTestIDP(t)
	a, b := startPair(t, idp.env(backendEnv(t)))
	waitJWKSStep(t, a)
	waitJWKSStep(t, b)
	// First sign-ins of one new subject racing on both instances: one user.
	const n = 8
	done := make(chan reply, 2*n)
	for i := range 2 * n {
		in := a
		if i%2 == 1 {
			in = b
		}
		go func() { done <- <-queryAsync(in, idp.token(t, "racer", nil), "a") }()
	}
	for range 2 * n {
		if r := <-done; r.status != 200 {
			t.Fatalf("racing first sign-in: %d %s", r.status, r.raw)
		}
	}
	r := a.query(t, idp.token(t, "racer", nil), "a")
	if used := r.body["usage"].(map[string]any)["used"]; used != float64(2*n+1) {
		t.Fatalf("usage of the subject after %d queries on two instances = %v, want %d (one user, one count)", 2*n+1, used, 2*n+1)
	}
}
