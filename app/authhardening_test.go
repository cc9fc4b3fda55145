package main

// Auth hardening end to end: refused tokens answered alike, failed auth
// limited per client address (X-Forwarded-For believed only from
// TRUSTED_PROXIES), and the admin API never open without ADMIN_TOKEN.

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/internal/cli"
)

var totalDur = regexp.MustCompile(`dur=[0-9.]+`)

// comparable is an answer with what differs per request blanked: the request
// id, the date and the duration in Server-Timing.
func comparableAnswer(r reply) (body string, header map[string]string) {
	body = strings.ReplaceAll(string(r.raw), r.header.Get("X-Request-Id"), "ID")
	header = map[string]string{}
	for k := range r.header {
		switch k {
		case "X-Request-Id", "Date":
			header[k] = "…"
		case "Server-Timing":
			header[k] = totalDur.ReplaceAllString(r.header.Get(k), "dur=N")
		default:
			header[k] = strings.Join(r.header.Values(k), "\n")
		}
	}
	return body, header
}

func TestFailedAuthAnswersUniform(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	tok := call(t, "POST", in.admin+"/admin/users/"+itoa(u.id)+"/tokens", "", map[string]any{})
	if tok.status != 201 {
		t.Fatalf("token: %d %s", tok.status, tok.raw)
	}
	revoked := tok.body["token"].(string)
	if r := call(t, "DELETE", in.admin+"/admin/tokens/"+itoa(int64(tok.body["id"].(float64))), "", nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	tokens := map[string]string{
		"unknown":   "wp_" + strings.Repeat("Z", 43),
		"revoked":   revoked,
		"malformed": "wp_short",
		"jwt-like":  "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
	}
	routes := []struct {
		method, path string
		body         any
	}{
		{"POST", queryRoute, map[string]any{"items": []string{"a"}}},
		{"POST", "/api/items", map[string]any{"add": []string{"a"}}},
		{"POST", "/api/user/warmup", nil},
		{"GET", "/api/user/warmup", nil},
	}
	for _, rt := range routes {
		var firstName, firstBody string
		var firstHeader map[string]string
		names := make([]string, 0, len(tokens))
		for n := range tokens {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			r := call(t, rt.method, in.base+rt.path, tokens[name], rt.body)
			if r.status != 401 || r.errCode() != "invalid_token" {
				t.Fatalf("%s %s with a %s token: %d %s", rt.method, rt.path, name, r.status, r.raw)
			}
			if st := r.header.Get("Server-Timing"); !strings.HasPrefix(st, "total;dur=") || strings.Contains(st, ",") {
				t.Errorf("%s token: Server-Timing %q tells which lookups ran; want total only", name, st)
			}
			body, header := comparableAnswer(r)
			if firstHeader == nil {
				firstName, firstBody, firstHeader = name, body, header
				continue
			}
			if body != firstBody {
				t.Errorf("%s %s: the %s token's body differs from the %s token's:\n%s\n%s", rt.method, rt.path, name, firstName, body, firstBody)
			}
			if d := cmp.Diff(firstHeader, header); d != "" {
				t.Errorf("%s %s: the %s token's headers differ from the %s token's (-%s +%s):\n%s", rt.method, rt.path, name, firstName, firstName, name, d)
			}
		}
	}
}

func TestFailedAuthRateLimitedPerAddress(t *testing.T) {
	env := backendEnv(t)
	// A refill so slow that no token comes back during the test.
	env["AUTH_FAILURE_BURST"], env["AUTH_FAILURE_RATE"] = "5", "0.001"
	in := start(t, env)
	u := in.newUser(t, "free", nil)
	bad := "wp_" + strings.Repeat("G", 43)
	for i := range 5 {
		if r := in.query(t, bad, "a"); r.status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.raw)
		}
	}
	r := in.query(t, bad, "a")
	if r.status != 429 || r.errCode() != "too_many_auth_failures" || r.header.Get("Retry-After") == "" {
		t.Fatalf("after the burst: %d %q Retry-After %q, want 429 too_many_auth_failures with Retry-After", r.status, r.errCode(), r.header.Get("Retry-After"))
	}
	// While limited, a right guess is refused too (else guessing would not
	// be slowed), on every authenticated route, and nothing is counted.
	for _, rt := range []struct{ method, path string }{{"POST", queryRoute}, {"POST", "/api/items"}, {"POST", "/api/user/warmup"}, {"GET", "/api/user/warmup"}} {
		var body any
		if rt.method == "POST" && rt.path != "/api/user/warmup" {
			body = map[string]any{"items": []string{"a"}, "add": []string{"a"}}
		}
		if rt.path == "/api/items" {
			body = map[string]any{"add": []string{"a"}}
		}
		if r := call(t, rt.method, in.base+rt.path, u.token, body); r.status != 429 || r.errCode() != "too_many_auth_failures" {
			t.Fatalf("%s %s with a valid token from a limited address: %d %s", rt.method, rt.path, r.status, r.raw)
		}
	}
	// Unauthenticated routes still answer.
	if r := call(t, "GET", in.base+"/readyz", "", nil); r.status != 200 {
		t.Fatalf("/readyz: %d", r.status)
	}
	// Without TRUSTED_PROXIES a forged X-Forwarded-For changes nothing.
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"a"}}, "X-Forwarded-For", "198.51.100.7"); r.status != 429 {
		t.Fatalf("X-Forwarded-For from an untrusted peer was believed: %d %s", r.status, r.raw)
	}
}

func TestFailedAuthLimitBehindTrustedProxy(t *testing.T) {
	env := backendEnv(t)
	env["AUTH_FAILURE_BURST"], env["AUTH_FAILURE_RATE"], env["TRUSTED_PROXIES"] = "3", "0.001", "127.0.0.0/8,::1"
	in := start(t, env)
	u := in.newUser(t, "free", ptr[int64](100))
	bad := "wp_" + strings.Repeat("H", 43)
	attacker := "203.0.113.9"
	for range 3 {
		if r := call(t, "POST", in.base+queryRoute, bad, map[string]any{"items": []string{"a"}}, "X-Forwarded-For", attacker); r.status != 401 {
			t.Fatalf("failure: %d %s", r.status, r.raw)
		}
	}
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"a"}}, "X-Forwarded-For", attacker); r.status != 429 {
		t.Fatalf("the limited client behind the proxy: %d %s, want 429", r.status, r.raw)
	}
	// A forged leftmost entry does not escape: the proxy appends the real
	// peer, and the rightmost untrusted address is the client.
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"a"}}, "X-Forwarded-For", "192.0.2.1, "+attacker); r.status != 429 {
		t.Fatalf("a forged X-Forwarded-For entry escaped the limit: %d %s", r.status, r.raw)
	}
	// Another client behind the same proxy is not affected.
	if r := call(t, "POST", in.base+queryRoute, u.token, map[string]any{"items": []string{"a"}}, "X-Forwarded-For", "203.0.113.10"); r.status != 200 {
		t.Fatalf("another client behind the proxy: %d %s, want 200", r.status, r.raw)
	}
	// The proxy's own requests (no X-Forwarded-For) are their own client.
	if r := in.query(t, u.token, "a"); r.status != 200 {
		t.Fatalf("the proxy itself: %d %s", r.status, r.raw)
	}
}

func TestAdminOffLoopbackWithoutTokenRefusesToStart(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		var out, errOut syncBuffer
		err := run(context.Background(), []string{"warmpath"}, func(k string) string {
			return map[string]string{"ADMIN_ADDR": addr, "HTTP_ADDR": "127.0.0.1:0"}[k]
		}, &out, &errOut)
		var ee *cli.ExitError
		if !errors.As(err, &ee) || ee.Code != 2 || !strings.Contains(err.Error(), "ADMIN_TOKEN") {
			t.Errorf("ADMIN_ADDR=%s without ADMIN_TOKEN: want exit 2 naming ADMIN_TOKEN, got %v", addr, err)
		}
		if strings.Contains(out.String(), "serving") {
			t.Errorf("ADMIN_ADDR=%s without ADMIN_TOKEN started serving:\n%s", addr, out.String())
		}
	}
}

func TestAdminTokenRequiredOnEveryAdminRoute(t *testing.T) {
	env := backendEnv(t)
	env["ADMIN_TOKEN"] = "adm_" + randHex(16)
	in := start(t, env)
	routes := []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/cmdline"},
		{"POST", "/admin/users"}, {"POST", "/admin/users/1/tokens"}, {"DELETE", "/admin/tokens/1"},
		{"POST", "/admin/sync"}, {"GET", "/admin/sync"}, {"GET", "/admin/warmup"}, {"GET", "/admin/nope"},
	}
	for _, rt := range routes {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + env["ADMIN_TOKEN"] + "x", "Basic " + env["ADMIN_TOKEN"], env["ADMIN_TOKEN"]} {
			req, _ := http.NewRequest(rt.method, in.admin+rt.path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("%s %s with Authorization %q: %d, want 401", rt.method, rt.path, auth, resp.StatusCode)
			}
		}
	}
	// With the token the admin API answers.
	r := call(t, "GET", in.admin+"/admin/warmup", "", nil, "Authorization", "Bearer "+env["ADMIN_TOKEN"])
	if r.status != 200 {
		t.Fatalf("GET /admin/warmup with the token: %d %s", r.status, r.raw)
	}
}
