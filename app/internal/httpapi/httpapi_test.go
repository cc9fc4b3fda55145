package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/valyala/fasthttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

// The fakes stand for the feature services behind httpapi's interfaces.

type fakeAuth struct {
	p   domain.Principal
	err error
}

func (f fakeAuth) Authenticate(context.Context, string) (domain.Principal, domain.TokenHash, error) {
	return f.p, domain.TokenHash{}, f.err
}

type fakeQuery struct {
	ans   query.Answer
	err   error
	items []string // what Query was asked
}

func (f *fakeQuery) Remember(context.Context, query.Caller, domain.IdemKey, domain.StoredAnswer) {}

func (f *fakeQuery) Keyed(ctx context.Context, _ query.Caller, _ domain.IdemKey, do func(context.Context) (domain.StoredAnswer, error)) (query.Answer, error) {
	a, err := do(ctx)
	return query.Answer{Stored: a}, err
}

func (f *fakeQuery) Query(_ context.Context, _ query.Caller, items []string, _ domain.IdemKey) (query.Answer, error) {
	f.items = items
	return f.ans, f.err
}
func (f *fakeQuery) Warm(context.Context, query.Caller) (warmup.Status, error) {
	return warmup.Status{State: warmup.StateQueued}, f.err
}
func (f *fakeQuery) WarmupStatus(context.Context, int64) (warmup.Status, error) {
	return warmup.Status{State: warmup.StateReady}, f.err
}

type fakeItems struct{ err error }

func (f fakeItems) Update(_ context.Context, _ int64, add, remove []string, _ int64) (domain.ItemChange, error) {
	return domain.ItemChange{Added: int64(len(add)), Removed: int64(len(remove)), Total: int64(len(add))}, f.err
}

type fakeSystem struct{}

func (fakeSystem) System() warmup.SystemStatus { return warmup.SystemStatus{} }

var dayPlan = domain.Plan{Name: "free", Quota: 1000, Period: domain.PeriodDay, MaxItems: 10}

// apiServer is a public server over fakes.
func apiServer(t testing.TB, a fakeAuth, q *fakeQuery, it ItemUpdater) *Public {
	t.Helper()
	return testServer(t, Config{Metrics: noopMetrics(t), Auth: a, Query: q, Items: it, Warmup: fakeSystem{}})
}

// testServer is NewServer(cfg) with quiet, no-op logging and telemetry.
func testServer(t testing.TB, cfg Config) *Public {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.TracerProvider = tracenoop.NewTracerProvider()
	cfg.MeterProvider = metricnoop.NewMeterProvider()
	pub, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// noopMetrics are the service's metrics on a no-op meter provider.
func noopMetrics(t testing.TB) *telemetry.Metrics {
	t.Helper()
	metrics, err := telemetry.NewMetrics(metricnoop.NewMeterProvider(), telemetry.Thresholds{})
	if err != nil {
		t.Fatal(err)
	}
	return metrics
}

func do(t *testing.T, pub *Public, method, path, contentType, body string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer x")
	resp, err := pub.App.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	i := strings.Index(s, `"code":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"code":"`):]
	return s[:strings.IndexByte(s, '"')]
}

// TestErrorQuotingInvalidUTF8: an error message that quotes the request
// (here a path of raw bytes that are not UTF-8) is still sent in the error
// shape, the bytes written as U+FFFD, rather than failing the answer.
func TestErrorQuotingInvalidUTF8(t *testing.T) {
	pub := apiServer(t, fakeAuth{}, &fakeQuery{}, fakeItems{})
	h := pub.App.Handler()
	var rc fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.SetMethod("GET")
	req.SetRequestURI("/nope\xff")
	rc.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}, nil)
	h(&rc)
	var body errorBody
	if err := json.Unmarshal(rc.Response.Body(), &body); err != nil || rc.Response.StatusCode() != 404 ||
		body.Error.Code != apperr.NotFound || body.RequestID == "" || !strings.Contains(body.Error.Message, "/nope\ufffd") {
		t.Fatalf("%d %q (%v), want a 404 not_found error naming /nope\ufffd", rc.Response.StatusCode(), rc.Response.Body(), err)
	}
}

func TestStatusOfEveryCode(t *testing.T) {
	for _, tc := range []struct {
		code apperr.Code
		want int
	}{
		{apperr.InvalidRequest, 400}, {apperr.InvalidItems, 400}, {apperr.UnknownPlan, 400},
		{apperr.MissingToken, 401}, {apperr.MalformedToken, 401}, {apperr.UnknownToken, 401},
		{apperr.ExpiredToken, 401}, {apperr.RevokedToken, 401},
		{apperr.Forbidden, 403}, {apperr.NotFound, 404}, {apperr.MethodNotAllowed, 405},
		{apperr.RequestTimeout, 408}, {apperr.ConflictingOperation, 409}, {apperr.BodyTooLarge, 413},
		{apperr.UnsupportedMedia, 415}, {apperr.TooManyItems, 422}, {apperr.QuotaExceeded, 429},
		{apperr.Internal, 500}, {apperr.Unavailable, 503}, {apperr.WarmupQueueFull, 503}, {apperr.ShuttingDown, 503},
		{apperr.Code("no_such_code"), 500},
	} {
		t.Run(string(tc.code), func(t *testing.T) {
			if got := status(tc.code); got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
			// Spans mark faults by apperr.IsFault: it must agree with the map.
			if fault := apperr.IsFault(&apperr.Error{Code: tc.code}); fault != (tc.want >= 500) {
				t.Errorf("apperr.IsFault = %v for a %d", fault, tc.want)
			}
		})
	}
}

func TestJSONDecoding(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		code                    string
	}{
		{"json", "application/json", `{"items":["a"]}`, 200, ""},
		{"json with charset", "application/json; charset=utf-8", `{"items":["a"]}`, 200, ""},
		{"json in capitals", "Application/JSON", `{"items":["a"]}`, 200, ""},
		{"no content type", "", `{"items":["a"]}`, 415, "unsupported_media_type"},
		{"text", "text/plain", `{"items":["a"]}`, 415, "unsupported_media_type"},
		{"invalid UTF-8", "application/json", "{\"items\":[\"\xff\"]}", 400, "invalid_request"},
		{"not JSON", "application/json", `{"items":`, 400, "invalid_request"},
		{"wrong type", "application/json", `{"items":"a"}`, 400, "invalid_request"},
		{"wrong element type", "application/json", `{"items":[1]}`, 400, "invalid_request"},
		// Strict input: refused, never repaired, never counted.
		{"lone high surrogate escape", "application/json", `{"items":["\ud800"]}`, 400, "invalid_request"},
		{"lone low surrogate escape", "application/json", `{"items":["a\udc00b"]}`, 400, "invalid_request"},
		{"reversed surrogate pair", "application/json", `{"items":["\ude00\ud83d"]}`, 400, "invalid_request"},
		{"high surrogate then non-surrogate", "application/json", `{"items":["\ud83d\u0041"]}`, 400, "invalid_request"},
		{"lone surrogate in a key", "application/json", `{"\ud800":1,"items":["a"]}`, 400, "invalid_request"},
		{"UTF-8 encoded surrogate", "application/json", "{\"items\":[\"\xed\xa0\x80\"]}", 400, "invalid_request"},
		{"overlong UTF-8", "application/json", "{\"items\":[\"\xc0\xaf\"]}", 400, "invalid_request"},
		{"duplicate key", "application/json", `{"items":["a"],"items":["b"]}`, 400, "invalid_request"},
		{"duplicate key in another case is unknown, not a duplicate", "application/json", `{"items":["a"],"Items":["b"]}`, 200, ""},
		{"duplicate key through an escape", "application/json", `{"items":["a"],"\u0069tems":["b"]}`, 400, "invalid_request"},
		{"trailing data", "application/json", `{"items":["a"]} {"items":["b"]}`, 400, "invalid_request"},
		{"trailing garbage", "application/json", `{"items":["a"]}x`, 400, "invalid_request"},
		{"trailing comma", "application/json", `{"items":["a"],}`, 400, "invalid_request"},
		{"trailing whitespace is fine", "application/json", "{\"items\":[\"a\"]}\n\t ", 200, ""},
		{"not an object", "application/json", `["a"]`, 400, "invalid_request"},
		{"valid surrogate pair (emoji)", "application/json", `{"items":["\ud83d\ude00"]}`, 200, ""},
		{"raw emoji", "application/json", `{"items":["😀"]}`, 200, ""},
		{"no items", "application/json", `{"items":[]}`, 400, "invalid_items"},
		{"too many items", "application/json", `{"items":[` + strings.Repeat(`"a",`, 1000) + `"a"]}`, 400, "invalid_items"},
		{"item too long", "application/json", `{"items":["` + strings.Repeat("a", 257) + `"]}`, 400, "invalid_items"},
		{"empty item", "application/json", `{"items":[""]}`, 400, "invalid_items"},
		{"NUL in item", "application/json", `{"items":["a\u0000b"]}`, 400, "invalid_items"},
		// Over 1 MiB (413) is Fiber's own limit, before any handler: see
		// TestBodyTooLargeHasServerTiming, on a real listener.
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &fakeQuery{ans: query.Answer{Metered: true, Usage: usage.Decision{Allowed: true, Limit: 1000, ResetAt: time.Now().Add(time.Hour)}}}
			pub := apiServer(t, fakeAuth{p: domain.Principal{UserID: 1, Plan: dayPlan}}, q, fakeItems{})
			resp := do(t, pub, "POST", "/api/hasNotEngine-ultra-fast", tc.contentType, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := errorCode(t, resp); got != tc.code {
				t.Fatalf("code %q, want %q", got, tc.code)
			}
			if tc.status != 200 && q.items != nil {
				t.Fatal("a refused body reached the query service")
			}
		})
	}
	t.Run("a surrogate pair decodes to the one character sent", func(t *testing.T) {
		q := &fakeQuery{ans: query.Answer{Metered: true, Usage: usage.Decision{Allowed: true, Limit: 1000, ResetAt: time.Now().Add(time.Hour)}}}
		pub := apiServer(t, fakeAuth{p: domain.Principal{UserID: 1, Plan: dayPlan}}, q, fakeItems{})
		if resp := do(t, pub, "POST", "/api/hasNotEngine-ultra-fast", "application/json", `{"items":["\ud83d\ude00"]}`); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if len(q.items) != 1 || q.items[0] != "😀" {
			t.Fatalf("items %q, want [😀]", q.items)
		}
	})
	t.Run("items endpoint refuses the same", func(t *testing.T) {
		for _, body := range []string{`{"add":["\ud800"]}`, `{"add":["a"],"add":["b"]}`, `{"add":["a"]}]`} {
			pub := apiServer(t, fakeAuth{}, &fakeQuery{}, fakeItems{})
			resp := do(t, pub, "POST", "/api/items", "application/json", body)
			if resp.StatusCode != 400 || errorCode(t, resp) != "invalid_request" {
				t.Fatalf("%s: status %d, want 400 invalid_request", body, resp.StatusCode)
			}
		}
	})
	t.Run("wrong type names the field", func(t *testing.T) {
		pub := apiServer(t, fakeAuth{}, &fakeQuery{}, fakeItems{})
		b, _ := io.ReadAll(do(t, pub, "POST", "/api/items", "application/json", `{"add":"x"}`).Body)
		if !strings.Contains(string(b), `\"add\"`) {
			t.Fatalf("message should name the field: %s", b)
		}
	})
}

func TestRateLimitHeaders(t *testing.T) {
	_, reset := domain.PeriodDay.Window(time.Now())
	allowed := usage.Decision{Allowed: true, Used: 1, Limit: 1000, Remaining: 999, ResetAt: reset}
	denied := usage.Decision{Used: 1000, Limit: 1000, ResetAt: reset, RetryAfter: 90 * time.Minute}
	for _, tc := range []struct {
		name              string
		ans               query.Answer
		err               error
		status            int
		policy, remaining string
		retryAfter        string
	}{
		{"allowed", query.Answer{Metered: true, Usage: allowed}, nil, 200, `"quota";q=1000;w=86400`, `"quota";r=999;t=`, ""},
		{"over quota", query.Answer{Metered: true, Usage: denied}, &apperr.Error{Code: apperr.QuotaExceeded, Message: "no", RetryAfter: denied.RetryAfter}, 429, `"quota";q=1000;w=86400`, `"quota";r=0;t=`, "5400"},
		{"failed after the check", query.Answer{Metered: true, Usage: allowed}, apperr.Temporary(nil, "down"), 503, `"quota";q=1000;w=86400`, `"quota";r=999;t=`, "1"},
		{"check failed", query.Answer{}, apperr.Temporary(nil, "down"), 503, "", "", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := apiServer(t, fakeAuth{p: domain.Principal{UserID: 1, Plan: dayPlan}}, &fakeQuery{ans: tc.ans, err: tc.err}, fakeItems{})
			resp := do(t, pub, "POST", "/api/hasNotEngine-ultra-fast", "application/json", `{"items":["a"]}`)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("RateLimit-Policy"); got != tc.policy {
				t.Errorf("RateLimit-Policy %q, want %q", got, tc.policy)
			}
			got := resp.Header.Get("RateLimit")
			if !strings.HasPrefix(got, tc.remaining) || (tc.remaining == "") != (got == "") {
				t.Errorf("RateLimit %q, want %q…", got, tc.remaining)
			}
			if tc.remaining != "" {
				// t is the seconds until the reset.
				secs, err := strconv.Atoi(strings.TrimPrefix(got, tc.remaining))
				if want := int(time.Until(reset).Seconds()); err != nil || secs < want-2 || secs > want {
					t.Errorf("RateLimit %q: t should be the %d seconds until the reset", got, want)
				}
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
}

func TestRetryAfterRendering(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Nanosecond: "1", 999 * time.Millisecond: "1", time.Second: "1",
		1001 * time.Millisecond: "2", 90 * time.Second: "90", 24 * time.Hour: "86400",
	} {
		if got := retryAfter(d); got != want {
			t.Errorf("retryAfter(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestWWWAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		want   string
	}{
		{apperr.New(apperr.MissingToken, "x"), 401, `Bearer realm="warmpath"`},
		{apperr.New(apperr.MalformedToken, "x"), 401, `Bearer realm="warmpath", error="invalid_token"`},
		{apperr.New(apperr.UnknownToken, "x"), 401, `Bearer realm="warmpath", error="invalid_token"`},
		{apperr.New(apperr.ExpiredToken, "x"), 401, `Bearer realm="warmpath", error="invalid_token"`},
		{apperr.New(apperr.RevokedToken, "x"), 401, `Bearer realm="warmpath", error="invalid_token"`},
		{apperr.Temporary(nil, "authentication is temporarily unavailable"), 503, ""},
	} {
		t.Run(string(apperr.CodeOf(tc.err)), func(t *testing.T) {
			pub := apiServer(t, fakeAuth{err: tc.err}, &fakeQuery{}, fakeItems{})
			for _, r := range []struct{ method, path string }{{"POST", "/api/hasNotEngine-ultra-fast"}, {"GET", "/api/user/warmup"}} {
				resp := do(t, pub, r.method, r.path, "application/json", `{"items":["a"]}`)
				if resp.StatusCode != tc.status {
					t.Fatalf("%s %s: status %d, want %d", r.method, r.path, resp.StatusCode, tc.status)
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != tc.want {
					t.Errorf("%s %s: WWW-Authenticate %q, want %q", r.method, r.path, got, tc.want)
				}
			}
		})
	}
}

func TestServerTimingHasTheDBPhaseAddedThroughTheContext(t *testing.T) {
	// A store call inside the items route adds its time to db through the
	// request's context, the way app's store wrapper does; the header shows
	// it, and query (the phase it ran in) is at least as long.
	resp := do(t, apiServer(t, fakeAuth{p: domain.Principal{UserID: 1, Plan: dayPlan}}, &fakeQuery{}, slowItems{d: 3 * time.Millisecond}), "POST", "/api/items", "application/json", `{"add":["a"]}`)
	st := resp.Header.Get("Server-Timing")
	dur := func(name string) float64 {
		for _, part := range strings.Split(st, ", ") {
			if v, ok := strings.CutPrefix(part, name+";dur="); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		t.Fatalf("Server-Timing %q has no %s", st, name)
		return 0
	}
	if db, q := dur("db"), dur("query"); db < 3 || q < db {
		t.Fatalf("Server-Timing %q: want db >= 3 ms (the store call) and query >= db", st)
	}
}

// slowItems is an item updater whose "store call" takes d, timed as db the
// way the store wrapper in app/ does it.
type slowItems struct{ d time.Duration }

func (s slowItems) Update(ctx context.Context, _ int64, add, _ []string, _ int64) (domain.ItemChange, error) {
	defer telemetry.AddPhase(ctx, telemetry.PhaseDB, time.Now())
	time.Sleep(s.d)
	return domain.ItemChange{Added: int64(len(add))}, nil
}
