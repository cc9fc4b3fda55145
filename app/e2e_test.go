package main

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/internal/cli"
)

func TestQueryEndToEnd(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)

	r := in.items(t, u.token, []string{"a", "b", "c", "b"}, nil)
	if r.status != 200 || r.body["added"] != 3.0 || r.body["total"] != 3.0 {
		t.Fatalf("add items: %d %s", r.status, r.raw)
	}
	r = in.query(t, u.token, "a", "x", "c", "y", "x")
	r.wantMissing(t, "query", "x", "y")
	if r.body["checked"] != 5.0 {
		t.Fatalf("checked = %v", r.body["checked"])
	}
	us := r.body["usage"].(map[string]any)
	if us["used"] != 1.0 || us["limit"] != 1000.0 || us["remaining"] != 999.0 {
		t.Fatalf("usage = %v", us)
	}
	reset, err := time.Parse(time.RFC3339, us["resetAt"].(string))
	if err != nil || !reset.After(time.Now()) || reset.Sub(time.Now()) > 24*time.Hour {
		t.Fatalf("resetAt = %v (%v)", us["resetAt"], err)
	}
	for _, h := range []string{"X-Request-Id", "Server-Timing", "RateLimit", "RateLimit-Policy"} {
		if r.header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	if got := r.header.Get("RateLimit-Policy"); got != `"quota";q=1000;w=86400` {
		t.Errorf("RateLimit-Policy = %q", got)
	}
	if !regexp.MustCompile(`^"quota";r=999;t=\d+$`).MatchString(r.header.Get("RateLimit")) {
		t.Errorf("RateLimit = %q", r.header.Get("RateLimit"))
	}
	for _, phase := range []string{"auth;dur=", "usage;dur=", "query;dur=", "total;dur="} {
		if !strings.Contains(r.header.Get("Server-Timing"), phase) {
			t.Errorf("Server-Timing %q lacks %s", r.header.Get("Server-Timing"), phase)
		}
	}

	// Read-your-writes: the next query sees a change, warm or not.
	r = in.items(t, u.token, []string{"x"}, []string{"a"})
	if r.status != 200 || r.body["added"] != 1.0 || r.body["removed"] != 1.0 || r.body["total"] != 3.0 {
		t.Fatalf("change items: %d %s", r.status, r.raw)
	}
	r = in.query(t, u.token, "a", "x", "b")
	if d := cmp.Diff([]any{"a"}, r.body["missing"]); d != "" {
		t.Fatalf("after change, missing (-want +got):\n%s", d)
	}
}

func TestReadYourWritesWhenWarm(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "pro", nil)
	in.items(t, u.token, []string{"k1", "k2"}, nil)
	if r := call(t, "POST", in.base+"/api/user/warmup", u.token, nil); r.status != 202 {
		t.Fatalf("warmup: %d %s", r.status, r.raw)
	}
	eventually(t, 10*time.Second, "warmup ready", func() bool {
		r := call(t, "GET", in.base+"/api/user/warmup", u.token, nil)
		return r.body["warmupStatus"].(map[string]any)["state"] == "ready"
	})
	hitsBefore := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit")
	for i := range 20 {
		item := "n" + string(rune('a'+i))
		if r := in.items(t, u.token, []string{item}, []string{"k1"}); r.status != 200 {
			t.Fatalf("items: %d %s", r.status, r.raw)
		}
		r := in.query(t, u.token, item, "k1", "k2")
		if d := cmp.Diff([]any{"k1"}, r.body["missing"]); d != "" {
			t.Fatalf("round %d: missing (-want +got):\n%s", i, d)
		}
		in.items(t, u.token, []string{"k1"}, nil)
	}
	if hits := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "hit"); hits-hitsBefore < 20 {
		t.Fatalf("warm queries should be served by the cache: %v hits", hits-hitsBefore)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", ptr[int64](50))
	in.items(t, u.token, []string{"keep"}, nil)

	expired, revoked := in.deadTokens(t, u)
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = "i" + itoa(int64(i))
	}
	big := append([]byte(`{"items":["`), []byte(strings.Repeat("a", 1<<20))...)
	big = append(big, `"]}`...)
	q := "/api/hasNotEngine-ultra-fast"
	cases := []struct {
		name, method, path, token string
		body                      any
		headers                   []string
		status                    int
		code                      string
	}{
		{"no token", "POST", q, "", map[string]any{"items": []string{"a"}}, nil, 401, "missing_token"},
		{"not bearer", "POST", q, "", map[string]any{"items": []string{"a"}}, []string{"Authorization", "Basic Zm9vOmJhcg=="}, 401, "invalid_token"},
		{"malformed", "POST", q, "nope", map[string]any{"items": []string{"a"}}, nil, 401, "invalid_token"},
		{"unknown", "POST", q, "wp_" + strings.Repeat("A", 43), map[string]any{"items": []string{"a"}}, nil, 401, "invalid_token"},
		{"expired", "POST", q, expired, map[string]any{"items": []string{"a"}}, nil, 401, "expired_token"},
		{"revoked", "POST", q, revoked, map[string]any{"items": []string{"a"}}, nil, 401, "invalid_token"},
		{"wrong content type", "POST", q, u.token, []byte(`{"items":["a"]}`), []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type"},
		{"no content type", "POST", q, u.token, []byte(`{"items":["a"]}`), []string{"Content-Type", ""}, 415, "unsupported_media_type"},
		{"malformed json", "POST", q, u.token, []byte(`{"items":[`), nil, 400, "invalid_request"},
		{"trailing garbage", "POST", q, u.token, []byte(`{"items":["a"]} x`), nil, 400, "invalid_request"},
		{"wrong type", "POST", q, u.token, []byte(`{"items":"a"}`), nil, 400, "invalid_request"},
		{"wrong element type", "POST", q, u.token, []byte(`{"items":[1,2]}`), nil, 400, "invalid_request"},
		{"not an object", "POST", q, u.token, []byte(`[1]`), nil, 400, "invalid_request"},
		{"missing items", "POST", q, u.token, []byte(`{}`), nil, 400, "invalid_items"},
		{"empty list", "POST", q, u.token, map[string]any{"items": []string{}}, nil, 400, "invalid_items"},
		{"too many items", "POST", q, u.token, map[string]any{"items": tooMany}, nil, 400, "invalid_items"},
		{"empty item", "POST", q, u.token, map[string]any{"items": []string{""}}, nil, 400, "invalid_items"},
		{"item too long", "POST", q, u.token, map[string]any{"items": []string{strings.Repeat("é", 129)}}, nil, 400, "invalid_items"},
		{"invalid utf-8", "POST", q, u.token, []byte("{\"items\":[\"\xff\xfe\"]}"), nil, 400, "invalid_request"},
		{"body over 1 MiB", "POST", q, u.token, big, nil, 413, "body_too_large"},
		{"unknown route", "GET", "/api/nope", u.token, nil, nil, 404, "not_found"},
		{"items: empty change", "POST", "/api/items", u.token, map[string]any{"add": []string{}}, nil, 400, "invalid_items"},
		{"items: bad element", "POST", "/api/items", u.token, []byte(`{"add":[true]}`), nil, 400, "invalid_request"},
		{"items: revoked", "POST", "/api/items", revoked, map[string]any{"add": []string{"z"}}, nil, 401, "invalid_token"},
		{"warmup: no token", "POST", "/api/user/warmup", "", nil, nil, 401, "missing_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, tc.method, in.base+tc.path, tc.token, tc.body, tc.headers...)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("got %d %q, want %d %q: %s", r.status, r.errCode(), tc.status, tc.code, tail(string(r.raw), 300))
			}
			if r.body["requestId"] == "" || r.header.Get("X-Request-Id") == "" {
				t.Fatalf("error without request id: %s", r.raw)
			}
			if msg, _ := r.body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Fatalf("error without message: %s", r.raw)
			}
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: %v", r.header)
			}
		})
	}
	// Nothing above was counted or changed: the next query is the first.
	r := in.query(t, u.token, "keep", "z")
	if r.status != 200 || r.body["usage"].(map[string]any)["used"] != 1.0 {
		t.Fatalf("bad input must not be metered: %d %s", r.status, r.raw)
	}
	if d := cmp.Diff([]any{"z"}, r.body["missing"]); d != "" {
		t.Fatalf("bad input must not change items (-want +got):\n%s", d)
	}
}

func TestQuotaBoundaryNeverOverAdmits(t *testing.T) {
	env := backendEnv(t)
	// The boundary is the counter's atomicity, not timeouts: a Valkey call
	// starved past VALKEY_TIMEOUT on a loaded machine would fall back to
	// counting in process (fail-open), which enforces the quota per instance.
	env["VALKEY_TIMEOUT"] = "5s"
	a, b := startPair(t, env) // two instances share the counter
	u := a.newUser(t, "free", ptr[int64](100))
	const n = 400
	var mu sync.Mutex
	counts := map[int]int{}
	var retryAfterMissing int
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			in := a
			if i%2 == 1 {
				in = b
			}
			r := in.query(t, u.token, "x")
			mu.Lock()
			counts[r.status]++
			if r.status == 429 && (r.header.Get("Retry-After") == "" || r.errCode() != "quota_exceeded") {
				retryAfterMissing++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[200] != 100 || counts[429] != 300 {
		t.Fatalf("want exactly 100×200 and 300×429, got %v", counts)
	}
	if retryAfterMissing > 0 {
		t.Fatalf("%d 429s without Retry-After or quota_exceeded", retryAfterMissing)
	}
}

func TestRevokedTokenRefusedWithinOneSecondEverywhere(t *testing.T) {
	a, b := startPair(t, backendEnv(t))
	u := a.newUser(t, "pro", nil)
	// Warm both instances' client-side caches.
	for range 3 {
		if r := a.query(t, u.token, "x"); r.status != 200 {
			t.Fatalf("a: %d", r.status)
		}
		if r := b.query(t, u.token, "x"); r.status != 200 {
			t.Fatalf("b: %d", r.status)
		}
	}
	if r := call(t, "DELETE", a.admin+"/admin/tokens/"+itoa(u.tokenID), "", nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	revokedAt := time.Now()
	for _, in := range []*instance{a, b} {
		for {
			r := in.query(t, u.token, "x")
			if r.status == 401 && r.errCode() == "invalid_token" {
				break
			}
			if time.Since(revokedAt) > time.Second {
				t.Fatalf("token still accepted (%d) %s after revocation", r.status, time.Since(revokedAt))
			}
		}
	}
}

func TestColdUserAnsweredFromPostgres(t *testing.T) {
	env := backendEnv(t)
	env["WARMUP_STRATEGY"] = "off" // stays cold: every answer comes from Postgres
	in := start(t, env)
	u := in.newUser(t, "free", nil)
	in.items(t, u.token, []string{"p", "q"}, nil)
	missBefore := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss")
	for range 3 {
		r := in.query(t, u.token, "p", "r")
		r.wantMissing(t, "cold query", "r")
	}
	if got := in.metric(t, "warmpath_cache_requests_total", "cache", "items", "result", "miss") - missBefore; got != 3 {
		t.Fatalf("want 3 item-cache misses answered from Postgres, got %v", got)
	}
}

func TestEmbeddedDefaultServesDemoUser(t *testing.T) {
	in := start(t, map[string]string{}) // nothing set: in-memory store + in-process Valkey
	m := regexp.MustCompile(`demo user alice\s+plan=free\s+id=\d+ token=(wp_\S+)`).FindStringSubmatch(in.stdout.String())
	if m == nil {
		t.Fatalf("no demo token printed:\n%s", in.stdout.String())
	}
	r := in.query(t, m[1], "https://example.com/a", "https://example.com/zzz")
	r.wantMissing(t, "query", "https://example.com/zzz")
	if !strings.Contains(in.stderr.String(), "NOT persisted") {
		t.Fatalf("embedded mode must say loudly that nothing is persisted")
	}
}

func TestBadConfigExitsTwo(t *testing.T) {
	for _, kv := range [][2]string{{"HTTP_ADDR", "nope"}, {"SYNC_INTERVAL", "-1s"}, {"WARMUP_STRATEGY", "eager"}} {
		var out, errOut syncBuffer
		err := run(context.Background(), []string{"warmpath"}, func(k string) string {
			if k == kv[0] {
				return kv[1]
			}
			return ""
		}, &out, &errOut)
		var ee *cli.ExitError
		if !errors.As(err, &ee) || ee.Code != 2 || !strings.Contains(err.Error(), kv[0]) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%s: want exit 2 naming the variable in one line, got %v", kv[0], kv[1], err)
		}
	}
}

func TestLivezAndReadyz(t *testing.T) {
	in := start(t, backendEnv(t))
	if r := call(t, "GET", in.base+"/livez", "", nil); r.status != 200 {
		t.Fatalf("livez %d", r.status)
	}
	r := call(t, "GET", in.base+"/readyz?verbose", "", nil)
	if r.status != 200 {
		t.Fatalf("readyz %d %s", r.status, r.raw)
	}
	checks, _ := r.body["checks"].([]any)
	var names []string
	for _, c := range checks {
		names = append(names, c.(map[string]any)["name"].(string))
	}
	if d := cmp.Diff([]string{"store", "valkey"}, names); d != "" {
		t.Fatalf("checks (-want +got):\n%s", d)
	}
	if r.body["warmup"] == nil {
		t.Fatalf("verbose readyz must report warmup progress: %s", r.raw)
	}
}

// A DEMO_USERS_FILE that is named but cannot be read stops the start (exit 2,
// naming the variable) instead of silently creating other users.
func TestMissingDemoUsersFileExitsTwo(t *testing.T) {
	env := map[string]string{"HTTP_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0", "DEMO_USERS_FILE": filepath.Join(t.TempDir(), "nope.json")}
	var out, errOut syncBuffer
	err := run(context.Background(), []string{"warmpath"}, func(k string) string { return env[k] }, &out, &errOut)
	var ee *cli.ExitError
	if !errors.As(err, &ee) || ee.Code != 2 || !strings.Contains(err.Error(), "DEMO_USERS_FILE") {
		t.Fatalf("want exit 2 naming DEMO_USERS_FILE, got %v", err)
	}
}

// TestNewTokenIsCachedForItsFirstRequest: a token the admin API creates (with
// its user, or for an existing user) is put into the principal cache at
// once, so the login's first request, POST /api/user/warmup, authenticates
// from the cache: its Server-Timing has no "db" phase (no store lookup).
func TestNewTokenIsCachedForItsFirstRequest(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	r := call(t, "POST", in.admin+"/admin/users/"+itoa(u.id)+"/tokens", "", map[string]any{"expiresIn": "1h"})
	if r.status != 201 {
		t.Fatalf("create token: %d %s", r.status, r.raw)
	}
	for name, tok := range map[string]string{"the user's first token": u.token, "a later token": r.body["token"].(string)} {
		w := call(t, "POST", in.base+"/api/user/warmup", tok, nil)
		if w.status != 202 && w.status != 200 {
			t.Fatalf("%s: warmup: %d %s", name, w.status, w.raw)
		}
		st := w.header.Get("Server-Timing")
		if !strings.Contains(st, "auth;dur=") || strings.Contains(st, "db;dur=") {
			t.Errorf("%s: first request's Server-Timing %q: want auth without a db lookup", name, st)
		}
	}
}
