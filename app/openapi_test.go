package main

// The public API against its OpenAPI document (app/web/openapi.json, the one
// the server embeds and serves): every answer a test receives through client
// is validated (apiValidator), and TestOpenAPIResponses produces each
// documented status on the embedded default. Routes vs document:
// TestOpenAPIRoutesMatch in app/internal/httpapi.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/warmpath/warmpath/app/web"
)

// apiRouter finds a request's operation in openapi.json, whatever host the
// test listener has (the document's servers are dropped).
var apiRouter = sync.OnceValues(func() (routers.Router, error) {
	raw, err := web.Files.ReadFile("openapi.json")
	if err != nil {
		return nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("load openapi.json: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.json is invalid: %w", err)
	}
	doc.Servers = nil
	// The page and its assets are text; kin-openapi decodes only the
	// types it is told about.
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
	return legacy.NewRouter(doc)
})

// publicListeners maps a public listener's host:port to the test that
// started it: the test apiValidator fails on a mismatch.
var publicListeners sync.Map

// checkPublicAPI makes client validate every answer of hostport until t ends.
func checkPublicAPI(t testing.TB, hostport string) {
	publicListeners.Store(hostport, t)
	t.Cleanup(func() { publicListeners.Delete(hostport) })
}

// apiValidator is an http.RoundTripper that validates each answer of a
// public listener to a documented route against openapi.json: a status the
// operation does not document, a documented required header missing or not
// matching its schema, a content type or body not matching is an error of
// the test that started the instance. Other answers (admin listener,
// undocumented routes, HEAD) pass through unchecked.
type apiValidator struct{ base http.RoundTripper }

func (v apiValidator) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	owner, ok := publicListeners.Load(req.URL.Host)
	if !ok {
		return resp, nil
	}
	raw, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		// Hand the caller what was read, then the error, as the body would.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(raw), errReader{rerr}))
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	if err := validateAPI(req, resp, raw); err != nil {
		owner.(testing.TB).Errorf("openapi.json: %s %s answered %d, not as documented: %v\nbody: %s",
			req.Method, req.URL.RequestURI(), resp.StatusCode, err, tail(string(raw), 500))
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// validateAPI checks one answer against the document; nil for answers to
// routes the document does not have.
func validateAPI(req *http.Request, resp *http.Response, body []byte) error {
	router, err := apiRouter()
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return nil // not a documented path and method
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                opts,
	}
	return openapi3filter.ValidateResponse(req.Context(), in)
}

// TestAPIValidatorCatchesMismatch: the validator is not a yes-man.
func TestAPIValidatorCatchesMismatch(t *testing.T) {
	get := func(path string) *http.Request {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:1"+path, nil)
		return req
	}
	ok := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"a-1"}, "Server-Timing": {"total;dur=0.010"}}
	if err := validateAPI(get("/livez"), &http.Response{StatusCode: 200, Header: ok}, []byte(`{"status":"ok"}`)); err != nil {
		t.Fatalf("a documented answer is refused: %v", err)
	}
	noTiming := ok.Clone()
	noTiming.Del("Server-Timing")
	for name, c := range map[string]struct {
		path   string
		status int
		header http.Header
		body   string
	}{
		"wrong body":            {"/livez", 200, ok, `{"status":"nope"}`},
		"no Server-Timing":      {"/livez", 200, noTiming, `{"status":"ok"}`},
		"undocumented status":   {"/livez", 418, ok, `{"status":"ok"}`},
		"error shape":           {"/assets/x.js", 404, ok, `{"error":"not_found"}`},
		"wrong content type":    {"/livez", 200, http.Header{"Content-Type": {"text/plain"}, "X-Request-Id": {"a"}, "Server-Timing": {"total;dur=1"}}, `ok`},
		"warmup state null":     {"/api/user/warmup", 200, ok, `{"warmupStatus":{"state":null}}`},
		"bad Server-Timing":     {"/livez", 200, http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"a"}, "Server-Timing": {"auth;dur=1"}}, `{"status":"ok"}`},
		"demo user without tok": {"/demo/users", 200, ok, `{"users":[{"id":1,"name":"a","plan":"free"}]}`},
	} {
		if err := validateAPI(get(c.path), &http.Response{StatusCode: c.status, Header: c.header}, []byte(c.body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOpenAPIResponses produces, on the embedded default, every status the
// document promises for the routes a frontend uses, each validated (status,
// headers, body) by client's transport.
func TestOpenAPIResponses(t *testing.T) {
	in := start(t, map[string]string{
		"PLANS": "free:1000/day:10000,pro:1000000/month:1000000,tiny:1000/day:2",
	})
	type want struct {
		name, method, path, token string
		body                      any
		headers                   []string
		status                    int
		code                      string
	}
	run := func(w want) reply {
		t.Helper()
		r := call(t, w.method, in.base+w.path, w.token, w.body, w.headers...)
		if r.status != w.status || r.errCode() != w.code {
			t.Errorf("%s: %s %s = %d %q, want %d %q: %s", w.name, w.method, w.path, r.status, r.errCode(), w.status, w.code, tail(string(r.raw), 300))
		}
		return r
	}

	demo := run(want{name: "demo users", method: "GET", path: "/demo/users", status: 200})
	users, _ := demo.body["users"].([]any)
	if len(users) == 0 {
		t.Fatalf("no demo users: %s", demo.raw)
	}
	alice := users[0].(map[string]any)
	if !strings.Contains(in.stdout.String(), alice["token"].(string)) || demo.header.Get("Cache-Control") != "no-store" {
		t.Errorf("demo user %v is not the one printed at start, or is cacheable (%q)", alice, demo.header.Get("Cache-Control"))
	}
	u := in.newUser(t, "free", nil)
	q := "/api/hasNotEngine-ultra-fast"
	run(want{name: "items", method: "POST", path: "/api/items", token: u.token, body: map[string]any{"add": []string{"a"}}, status: 200})
	run(want{name: "query", method: "POST", path: q, token: u.token, body: map[string]any{"items": []string{"a", "b"}}, status: 200})
	run(want{name: "query, nothing missing", method: "POST", path: q, token: u.token, body: map[string]any{"items": []string{"a"}}, status: 200})
	run(want{name: "warmup", method: "POST", path: "/api/user/warmup", token: u.token, status: 202})
	run(want{name: "warmup status", method: "GET", path: "/api/user/warmup", token: u.token, status: 200})
	run(want{name: "warmup status, never warmed", method: "GET", path: "/api/user/warmup", token: alice["token"].(string), status: 200})
	run(want{name: "livez", method: "GET", path: "/livez", status: 200})
	run(want{name: "readyz", method: "GET", path: "/readyz", status: 200})
	run(want{name: "readyz verbose", method: "GET", path: "/readyz?verbose", status: 200})

	spec := run(want{name: "openapi", method: "GET", path: "/openapi.json", status: 200})
	if raw, _ := web.Files.ReadFile("openapi.json"); !bytes.Equal(spec.raw, raw) || spec.header.Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json is not the embedded document (%q)", spec.header.Get("Content-Type"))
	}
	for path, ct := range map[string]string{
		"/":                 "text/html; charset=utf-8",
		"/assets/app.js":    "text/javascript; charset=utf-8",
		"/assets/style.css": "text/css; charset=utf-8",
		"/assets/client.js": "text/javascript; charset=utf-8",
	} {
		r := run(want{name: "page " + path, method: "GET", path: path, status: 200})
		if r.header.Get("Content-Type") != ct || r.header.Get("Cache-Control") != "no-cache" || r.header.Get("ETag") == "" {
			t.Errorf("%s: Content-Type %q Cache-Control %q ETag %q", path, r.header.Get("Content-Type"), r.header.Get("Cache-Control"), r.header.Get("ETag"))
		}
		file := map[string]string{"/": "index.html", "/assets/client.js": "client/dist/index.js"}[path]
		if file == "" {
			file = strings.TrimPrefix(path, "/assets/")
		}
		if raw, _ := web.Files.ReadFile(file); !bytes.Equal(r.raw, raw) {
			t.Errorf("%s is not the embedded %s", path, file)
		}
		again := run(want{name: "revalidate " + path, method: "GET", path: path, headers: []string{"If-None-Match", r.header.Get("ETag")}, status: 304})
		if len(again.raw) != 0 || again.header.Get("ETag") != r.header.Get("ETag") {
			t.Errorf("%s: 304 with a body or another ETag: %v", path, again.header)
		}
	}
	run(want{name: "unknown asset", method: "GET", path: "/assets/index.html", status: 404, code: "not_found"})
	run(want{name: "no asset traversal", method: "GET", path: "/assets/..%2Fopenapi.json", status: 404, code: "not_found"})

	run(want{name: "malformed JSON", method: "POST", path: q, token: u.token, body: []byte(`{"items":[`), status: 400, code: "invalid_request"})
	run(want{name: "no items", method: "POST", path: "/api/items", token: u.token, body: map[string]any{}, status: 400, code: "invalid_items"})
	run(want{name: "no token", method: "POST", path: q, body: map[string]any{"items": []string{"a"}}, status: 401, code: "missing_token"})
	run(want{name: "unknown token", method: "GET", path: "/api/user/warmup", token: "wp_" + strings.Repeat("A", 43), status: 401, code: "invalid_token"})
	big := append([]byte(`{"items":["`), bytes.Repeat([]byte("a"), 1<<20)...)
	big = append(big, `"]}`...)
	// fasthttp refuses on Content-Length; the server drains what the client
	// is still sending before it answers, so the client reads the 413
	// instead of meeting a reset. Every attempt must get the answer.
	for range 5 {
		req, _ := http.NewRequest("POST", in.base+q, bytes.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+u.token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("body over 1 MiB: %v (the client must read the 413, not a reset)", err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !bytes.Contains(raw, []byte(`"code":"body_too_large"`)) {
			t.Errorf("body over 1 MiB: %d %s", resp.StatusCode, raw)
		}
	}
	run(want{name: "not JSON", method: "POST", path: q, token: u.token, body: []byte(`{"items":["a"]}`), headers: []string{"Content-Type", "text/plain"}, status: 415, code: "unsupported_media_type"})

	tiny := in.newUser(t, "tiny", nil)
	run(want{name: "items within the plan", method: "POST", path: "/api/items", token: tiny.token, body: map[string]any{"add": []string{"a", "b"}}, status: 200})
	run(want{name: "items over the plan", method: "POST", path: "/api/items", token: tiny.token, body: map[string]any{"add": []string{"c"}}, status: 422, code: "too_many_items"})

	one := in.newUser(t, "free", ptr[int64](1))
	run(want{name: "last unit", method: "POST", path: q, token: one.token, body: map[string]any{"items": []string{"a"}}, status: 200})
	over := run(want{name: "over quota", method: "POST", path: q, token: one.token, body: map[string]any{"items": []string{"a"}}, status: 429, code: "quota_exceeded"})
	if over.header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
}

// TestOpenAPIUnavailable produces a 503 on the embedded default: the warmup
// queue full (one worker, one slot). The worker is kept busy by a user with
// 10,000 items, whose warmup loads them all into Valkey; the next login
// warmup takes the slot and a burst of others is refused. No sleep, and no
// timing assumption either: a burst that happens to find room (the big
// warmup already done) is tried again with fresh users.
func TestOpenAPIUnavailable(t *testing.T) {
	in := start(t, map[string]string{"WARMUP_QUEUE_SIZE": "1", "WARMUP_WORKERS": "1", "SYSTEM_WARMUP_HOT_USERS": "0"})
	items := make([]string, 1000)
	for attempt := 1; ; attempt++ {
		big := in.newUser(t, "free", nil)
		for batch := range 10 {
			for i := range items {
				items[i] = fmt.Sprintf("item-%d-%d", batch, i)
			}
			if r := in.items(t, big.token, items, nil); r.status != 200 {
				t.Fatalf("items: %d %s", r.status, r.raw)
			}
		}
		burst := make([]user, 8)
		for i := range burst {
			burst[i] = in.newUser(t, "free", nil)
		}
		if r := call(t, "POST", in.base+"/api/user/warmup", big.token, nil); r.status != 202 {
			t.Fatalf("warmup of the big user: %d %s", r.status, r.raw)
		}
		var mu sync.Mutex
		var full []reply
		var wg sync.WaitGroup
		for _, u := range burst {
			wg.Go(func() {
				r := call(t, "POST", in.base+"/api/user/warmup", u.token, nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.status == 503:
					full = append(full, r)
				case r.status != 202:
					t.Errorf("warmup: %d %s", r.status, r.raw)
				}
			})
		}
		wg.Wait()
		for _, r := range full {
			if r.errCode() != "warmup_queue_full" || r.header.Get("Retry-After") == "" {
				t.Errorf("queue full: %q Retry-After=%q", r.errCode(), r.header.Get("Retry-After"))
			}
		}
		if len(full) > 0 {
			return
		}
		if attempt == 5 {
			t.Fatalf("no warmup was refused in %d bursts with a queue of one", attempt)
		}
	}
}

// TestDemoUsersOnlyOnLoopback: a listener on every interface never hands out
// demo tokens, even in embedded mode.
func TestDemoUsersOnlyOnLoopback(t *testing.T) {
	in := start(t, map[string]string{"HTTP_ADDR": "0.0.0.0:0"})
	if r := call(t, "GET", in.base+"/demo/users", "", nil); r.status != 404 || r.errCode() != "not_found" {
		t.Fatalf("GET /demo/users on a non-loopback listener: %d %s", r.status, r.raw)
	}
	if r := call(t, "GET", in.base+"/", "", nil); r.status != 200 {
		t.Fatalf("the page is served everywhere: %d", r.status)
	}
}

// TestCORS: allowed origins can read the timing, quota and retry headers of
// answers and errors; preflights allow what a page sends; other origins get
// nothing; "*" answers "*".
func TestCORS(t *testing.T) {
	const origin = "https://app.example"
	in := start(t, map[string]string{"CORS_ORIGINS": "https://other.example," + origin})
	u := in.newUser(t, "free", ptr[int64](1))
	q := "/api/hasNotEngine-ultra-fast"
	body := map[string]any{"items": []string{"a"}}
	expose := []string{"Server-Timing", "RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-Id", "Idempotent-Replayed"}
	allowed := func(name string, r reply, want int, allow string) {
		t.Helper()
		if r.status != want {
			t.Errorf("%s: status %d, want %d: %s", name, r.status, want, r.raw)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != allow {
			t.Errorf("%s: Access-Control-Allow-Origin = %q, want %q", name, got, allow)
		}
		if got := r.header.Get("Timing-Allow-Origin"); got != allow {
			t.Errorf("%s: Timing-Allow-Origin = %q, want %q", name, got, allow)
		}
		got := strings.Split(r.header.Get("Access-Control-Expose-Headers"), ", ")
		for _, h := range expose {
			if !containsFold(got, h) {
				t.Errorf("%s: Access-Control-Expose-Headers %q lacks %s", name, got, h)
			}
		}
		if r.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s: credentials allowed", name)
		}
	}
	allowed("200", call(t, "POST", in.base+q, u.token, body, "Origin", origin), 200, origin)
	r := call(t, "POST", in.base+q, u.token, body, "Origin", origin)
	allowed("429", r, 429, origin)
	if r.header.Get("Retry-After") == "" || !strings.Contains(r.header.Get("Vary"), "Origin") {
		t.Errorf("429: Retry-After %q, Vary %q", r.header.Get("Retry-After"), r.header.Get("Vary"))
	}
	allowed("livez", call(t, "GET", in.base+"/livez", "", nil, "Origin", origin), 200, origin)

	pre := call(t, "OPTIONS", in.base+q, "", nil, "Origin", origin, "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	if pre.status != 204 || pre.header.Get("Access-Control-Allow-Origin") != origin {
		t.Errorf("preflight: %d %v", pre.status, pre.header)
	}
	allowHeaders := strings.Split(pre.header.Get("Access-Control-Allow-Headers"), ", ")
	for _, h := range []string{"authorization", "content-type", "idempotency-key", "x-request-id", "traceparent", "tracestate"} {
		if !containsFold(allowHeaders, h) {
			t.Errorf("preflight: Access-Control-Allow-Headers %q lacks %s", allowHeaders, h)
		}
	}
	if !strings.Contains(pre.header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: Access-Control-Allow-Methods %q", pre.header.Get("Access-Control-Allow-Methods"))
	}

	for name, r := range map[string]reply{
		"disallowed": call(t, "GET", in.base+"/livez", "", nil, "Origin", "https://evil.example"),
		"no origin":  call(t, "GET", in.base+"/livez", "", nil),
		"disallowed preflight": call(t, "OPTIONS", in.base+q, "", nil, "Origin", "https://evil.example", "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization"),
	} {
		for _, h := range []string{"Access-Control-Allow-Origin", "Timing-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Allow-Headers"} {
			if v := r.header.Get(h); v != "" {
				t.Errorf("%s origin: %s = %q", name, h, v)
			}
		}
	}

	star := start(t, map[string]string{"CORS_ORIGINS": "*"})
	allowed("* 200", call(t, "GET", star.base+"/livez", "", nil, "Origin", origin), 200, "*")
	allowed("* 401", call(t, "POST", star.base+q, "", body, "Origin", "http://localhost:5173"), 401, "*")
	pre = call(t, "OPTIONS", star.base+q, "", nil, "Origin", "http://localhost:5173", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	if pre.status != 204 || pre.header.Get("Access-Control-Allow-Origin") != "*" || !containsFold(strings.Split(pre.header.Get("Access-Control-Allow-Headers"), ", "), "idempotency-key") {
		t.Errorf("* preflight: %d %v", pre.status, pre.header)
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.TrimSpace(x), s) {
			return true
		}
	}
	return false
}

// TestFrontendRoutesNotMetered: the page, its assets, the document and the
// demo users produce no [PERF] line and no phase metrics, while an API call
// does (so the check can fail).
func TestFrontendRoutesNotMetered(t *testing.T) {
	in := start(t, map[string]string{"LOG_LEVEL": "info"})
	before := in.metric(t, "warmpath_phase_duration_seconds")
	for _, path := range []string{"/", "/assets/app.js", "/assets/style.css", "/assets/client.js", "/openapi.json", "/demo/users", "/assets/nope.js"} {
		call(t, "GET", in.base+path, "", nil)
	}
	if after := in.metric(t, "warmpath_phase_duration_seconds"); after != before {
		t.Errorf("frontend routes recorded phase metrics: %v → %v", before, after)
	}
	if logs := in.stderr.String(); strings.Contains(logs, "[PERF]") {
		t.Fatalf("frontend routes logged [PERF] lines:\n%s", tail(logs, 2000))
	}
	call(t, "GET", in.base+"/api/user/warmup", "", nil)
	eventually(t, 5*time.Second, "a [PERF] line and phase metrics for an API call", func() bool {
		return strings.Contains(in.stderr.String(), "[PERF]") && in.metric(t, "warmpath_phase_duration_seconds") > before
	})
}
