package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Browser tests drive Debian's chromium (apt-get install chromium) headless
// through chromedp. They skip without it on a developer machine and fail
// without it in CI (CI set), where .ci/run installs it.

// chromiumPath finds the browser, or skips (fails in CI).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("browser test needs chromium in CI (apt-get install chromium; .ci/run installs it)")
	}
	t.Skip("browser test needs chromium (apt-get install chromium)")
	return ""
}

// newTab starts a fresh headless chromium (its own profile in a temporary
// directory) and returns the context of one tab. Everything the test does in
// the browser is bounded by limit; each step is bounded again by within.
func newTab(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile := t.TempDir() // registered first, removed after the browser exits
	output := &syncBuffer{}
	root, cancelRoot := context.WithTimeout(context.Background(), limit)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// Containers often have a tiny /dev/shm; chromium crashes tabs on it.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1000, 900),
		chromedp.CombinedOutput(output),
	)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		cancelRoot()
		if t.Failed() {
			t.Logf("chromium output:\n%s", tail(output.String(), 4000))
		}
	})
	// The first call starts the browser; it lives as long as tab (bounded by limit).
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v\n%s", err, tail(output.String(), 4000))
	}
	return tab
}

// within runs steps with their own deadline and fails the test on an error.
func within(t *testing.T, ctx context.Context, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) within d.
func eval[T any](t *testing.T, ctx context.Context, d time.Duration, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// poll waits within d until the expression is truthy and returns its value.
func poll[T any](t *testing.T, ctx context.Context, d time.Duration, what, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
	return v
}

// pageProblems collects what must not happen on a page: uncaught exceptions,
// console.error calls, failed requests and responses >= 400 that the test did
// not expect.
type pageProblems struct {
	mu       sync.Mutex
	urls     map[network.RequestID]string
	problems []string
}

// watchPage starts collecting the tab's problems; expected says which
// responses >= 400 are part of the test (nil: none).
func watchPage(t *testing.T, ctx context.Context, expected func(url string, status int64) bool) *pageProblems {
	t.Helper()
	p := &pageProblems{urls: map[network.RequestID]string{}}
	add := func(format string, args ...any) {
		p.mu.Lock()
		p.problems = append(p.problems, fmt.Sprintf(format, args...))
		p.mu.Unlock()
	}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			add("uncaught exception at %s:%d: %s", d.URL, d.LineNumber, msg)
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			add("console.error: %s", strings.Join(parts, " "))
		case *network.EventRequestWillBeSent:
			p.mu.Lock()
			p.urls[ev.RequestID] = ev.Request.Method + " " + ev.Request.URL
			p.mu.Unlock()
		case *network.EventLoadingFailed:
			// A request the page itself cancelled (navigation, abort) is not a failure.
			if ev.Canceled {
				return
			}
			p.mu.Lock()
			url := p.urls[ev.RequestID]
			p.mu.Unlock()
			add("request failed: %s: %s %s", url, ev.ErrorText, ev.BlockedReason)
		case *network.EventResponseReceived:
			r := ev.Response
			if r.Status >= 400 && (expected == nil || !expected(r.URL, r.Status)) {
				add("response %d for %s", r.Status, r.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return p
}

// check fails the test on every problem seen so far.
func (p *pageProblems) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.problems {
		t.Error("page: " + s)
	}
}

// screenshotPath is WARMPATH_SCREENSHOT (a relative path is relative to the
// repository root, not to app/ where the test runs) or a temporary file.
func screenshotPath(t *testing.T, name string) string {
	p := os.Getenv("WARMPATH_SCREENSHOT")
	if p == "" {
		return filepath.Join(t.TempDir(), name)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(repoRoot(t), p)
	}
	return p
}

// repoRoot is the nearest directory at or above the working one with a go.mod.
func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// pageLoad is what the browser measured of loading the page.
type pageLoad struct {
	DomInteractive float64 `json:"domInteractive"`   // ms from navigation start
	DomContentLoad float64 `json:"domContentLoaded"` // module scripts (app.js, the client) have run
	LoadEventEnd   float64 `json:"loadEventEnd"`
	Transfer       float64 `json:"transfer"` // bytes over the wire, headers included
	Encoded        float64 `json:"encoded"`  // bodies as sent (no compression here)
	Resources      []struct {
		Name     string  `json:"name"`
		Transfer float64 `json:"transfer"`
		Encoded  float64 `json:"encoded"`
	} `json:"resources"`
}

const pageLoadJS = `(() => {
  const n = performance.getEntriesByType("navigation")[0];
  if (!n || !n.loadEventEnd) return null;
  const res = performance.getEntriesByType("resource").map((r) => ({name: r.name, transfer: r.transferSize, encoded: r.encodedBodySize}));
  const sum = (k) => res.reduce((s, r) => s + r[k], 0);
  return {domInteractive: n.domInteractive, domContentLoaded: n.domContentLoadedEventEnd, loadEventEnd: n.loadEventEnd,
    transfer: n.transferSize + sum("transfer"), encoded: n.encodedBodySize + sum("encoded"), resources: res};
})()`

// pageBudget is the target for the page and everything it loads, client
// included, uncompressed (DESIGN: small enough for a demo on any link).
const pageBudget = 50 * 1024

func TestBrowserDemoPage(t *testing.T) {
	chromiumPath(t) // skip before starting anything
	inst := start(t, nil)
	ctx := newTab(t, 90*time.Second)
	problems := watchPage(t, ctx, nil)

	within(t, ctx, 15*time.Second, "open the page", chromedp.Navigate(inst.base+"/"))
	// Embedded mode on loopback: the page lists the demo users.
	within(t, ctx, 10*time.Second, "demo users listed", chromedp.WaitVisible(chromedp.CSS(`button[data-user="alice"]`)))

	load := poll[pageLoad](t, ctx, 10*time.Second, "navigation timing", pageLoadJS)
	t.Logf("page load (fresh browser): domInteractive %.1f ms, DOMContentLoaded %.1f ms, loadEventEnd %.1f ms; %d resources + document: %.0f bytes transferred (%.0f bytes of bodies)",
		load.DomInteractive, load.DomContentLoad, load.LoadEventEnd, len(load.Resources), load.Transfer, load.Encoded)
	for _, r := range load.Resources {
		t.Logf("  %6.0f B  %s", r.Encoded, r.Name)
	}
	if load.Encoded > pageBudget {
		t.Errorf("page and assets are %.0f bytes, over the %d-byte budget", load.Encoded, pageBudget)
	}
	// Again, as a returning visitor: the assets revalidate (ETag, 304).
	within(t, ctx, 15*time.Second, "reload the page", chromedp.Reload())
	within(t, ctx, 10*time.Second, "demo users listed again", chromedp.WaitVisible(chromedp.CSS(`button[data-user="alice"]`)))
	again := poll[pageLoad](t, ctx, 10*time.Second, "navigation timing", pageLoadJS)
	t.Logf("page load (reload): domInteractive %.1f ms, DOMContentLoaded %.1f ms, loadEventEnd %.1f ms; %.0f bytes transferred",
		again.DomInteractive, again.DomContentLoad, again.LoadEventEnd, again.Transfer)

	// Sign in as alice: warmup is fired at once and its state shown live.
	within(t, ctx, 5*time.Second, "pick alice", chromedp.Click(chromedp.CSS(`button[data-user="alice"]`)))
	poll[bool](t, ctx, 15*time.Second, "warmup ready", `document.getElementById("warm").dataset.state === "ready"`)
	status := eval[string](t, ctx, 5*time.Second, `document.getElementById("warm-status").textContent`)
	if !strings.Contains(status, "ready") {
		t.Errorf("warmup status shows %q, want ready", status)
	}
	parts := eval[int](t, ctx, 5*time.Second, `document.querySelectorAll("#parts dt").length`)
	if parts != 3 {
		t.Errorf("warmup shows %d parts, want session, usage and items", parts)
	}

	// One item alice has (her first in demo_users.json) and one she has not;
	// sent with Ctrl+Enter from the textarea, as a keyboard user would.
	known, fresh := demoItem(t, "alice"), "https://example.com/new-"+randHex(4)
	query := func(items ...string) {
		t.Helper()
		n := eval[int](t, ctx, 5*time.Second, `document.querySelectorAll("#compare tbody tr").length`)
		within(t, ctx, 10*time.Second, "send a query",
			chromedp.SetValue(chromedp.ID("items"), strings.Join(items, "\n")),
			chromedp.Focus(chromedp.ID("items")),
			chromedp.KeyEvent(kb.Enter, chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		)
		poll[bool](t, ctx, 10*time.Second, "the answer", fmt.Sprintf(`document.querySelectorAll("#compare tbody tr").length > %d`, n))
	}
	query(known, fresh)
	if e := eval[string](t, ctx, 5*time.Second, `document.getElementById("error").textContent`); e != "" {
		t.Fatalf("the page shows an error: %s", e)
	}
	missing := eval[[]string](t, ctx, 5*time.Second, `[...document.querySelectorAll("#missing li")].map((li) => li.textContent)`)
	if !slices.Equal(missing, []string{fresh}) {
		t.Errorf("missing items shown %q, want exactly [%q]", missing, fresh)
	}
	checkBreakdown(t, ctx)

	// An empty add form (as the page starts) is refused on the page, saying why.
	within(t, ctx, 10*time.Second, "add nothing", chromedp.Click(chromedp.ID("add-btn")))
	poll[bool](t, ctx, 10*time.Second, "the empty-form error", `document.getElementById("error").textContent.startsWith("invalid_items: ")`)

	// Add the new item, then query again: the next query sees the change.
	fresh2 := "https://example.com/new-" + randHex(4)
	within(t, ctx, 10*time.Second, "add an item",
		chromedp.SetValue(chromedp.ID("add"), fresh),
		chromedp.Click(chromedp.ID("add-btn")),
	)
	poll[bool](t, ctx, 10*time.Second, "item added", `document.getElementById("add-status").textContent.startsWith("Added 1 ")`)
	query(known, fresh, fresh2)
	missing = eval[[]string](t, ctx, 5*time.Second, `[...document.querySelectorAll("#missing li")].map((li) => li.textContent)`)
	if !slices.Equal(missing, []string{fresh2}) {
		t.Errorf("after adding %q, missing items shown %q, want exactly [%q]", fresh, missing, fresh2)
	}
	checkBreakdown(t, ctx)
	query(known, fresh, fresh2)
	checkBreakdown(t, ctx)

	// Cold vs warm: the first query, the following ones, their median.
	rows := eval[[]string](t, ctx, 5*time.Second, `[...document.querySelectorAll("#compare tbody th")].map((th) => th.textContent)`)
	if want := []string{"#1 first after sign-in", "#2", "#3", "median of #2–#3"}; !slices.Equal(rows, want) {
		t.Errorf("cold-vs-warm table rows %q, want %q", rows, want)
	}
	t.Logf("cold vs warm: %q", eval[[]string](t, ctx, 5*time.Second, `[...document.querySelectorAll("#compare tbody tr")].map((tr) => tr.innerText.replaceAll("\t", " | "))`))
	// RateLimit: alice (free: 1000 a day) has used three queries.
	if q := eval[string](t, ctx, 5*time.Second, `document.getElementById("quota").dataset.remaining`); q != "997" {
		t.Errorf("quota remaining shown %q, want 997", q)
	}

	shot := screenshotPath(t, "demo-page.png")
	png := func() []byte {
		c, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		b, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		return b
	}()
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	problems.check(t)
}

// demoItem is the first item of the named demo user (app/demo_users.json,
// what the embedded default creates).
func demoItem(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("demo_users.json")
	if err != nil {
		t.Fatal(err)
	}
	var users []struct {
		Name  string   `json:"name"`
		Items []string `json:"items"`
	}
	if err := json.Unmarshal(raw, &users); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.Name == name && len(u.Items) > 0 {
			return u.Items[0]
		}
	}
	t.Fatalf("demo_users.json has no user %s with items", name)
	return ""
}

// checkBreakdown asserts the answer's time bar came from the browser's
// PerformanceResourceTiming.serverTiming and that its phases add up to at
// most the server's total (each is rounded to the microsecond: allow that).
func checkBreakdown(t *testing.T, ctx context.Context) {
	t.Helper()
	d := eval[map[string]string](t, ctx, 5*time.Second, `({...document.getElementById("bar").dataset})`)
	num := func(k string) float64 {
		v, err := strconv.ParseFloat(d[k], 64)
		if err != nil {
			t.Fatalf("breakdown %s = %q: %v (all: %v)", k, d[k], err, d)
		}
		return v
	}
	if d["source"] != "resource" {
		t.Errorf("breakdown read from %q, want the resource timing entry (serverTiming)", d["source"])
	}
	auth, usage, q, other, total := num("auth"), num("usage"), num("query"), num("other"), num("total")
	if total <= 0 || auth <= 0 || q <= 0 {
		t.Errorf("breakdown %v: want auth, query and total > 0", d)
	}
	if sum := auth + usage + q; sum > total+0.003 {
		t.Errorf("phases auth %.3f + usage %.3f + query %.3f = %.3f ms, over the total %.3f ms", auth, usage, q, sum, total)
	}
	if other < 0 || auth+usage+q+other > total+0.003 {
		t.Errorf("breakdown with other %.3f ms adds up past the total %.3f ms", other, total)
	}
	t.Logf("breakdown: auth %.3f, usage %.3f, query %.3f, other %.3f, total %.3f ms", auth, usage, q, other, total)
}

// crossOriginPage is a page of another origin that calls the query API with
// a bearer token and reports what it could read.
var crossOriginPage = template.Must(template.New("page").Parse(`<!doctype html>
<meta charset="utf-8"><title>other origin</title><link rel="icon" href="data:,">
<script type="module">
const url = {{.API}} + "/api/hasNotEngine-ultra-fast";
try {
  const res = await fetch(url, {
    method: "POST",
    headers: {authorization: "Bearer " + {{.Token}}, "content-type": "application/json"},
    body: JSON.stringify({items: ["a", "b"]}),
  });
  const body = await res.json();
  let entry;
  for (let i = 0; i < 100 && !entry; i++) {
    entry = performance.getEntriesByName(url)[0];
    if (!entry) await new Promise((r) => setTimeout(r, 10));
  }
  window.result = {
    status: res.status,
    serverTiming: res.headers.get("server-timing") ?? "",
    rateLimit: res.headers.get("ratelimit") ?? "",
    rateLimitPolicy: res.headers.get("ratelimit-policy") ?? "",
    requestId: res.headers.get("x-request-id") ?? "",
    entryTiming: entry ? entry.serverTiming.map((m) => m.name + "=" + m.duration) : [],
    missing: body.missing ?? [],
  };
} catch (e) {
  window.result = {error: String(e)};
}
</script>`))

type crossOriginResult struct {
	Error           string   `json:"error"`
	Status          int      `json:"status"`
	ServerTiming    string   `json:"serverTiming"`
	RateLimit       string   `json:"rateLimit"`
	RateLimitPolicy string   `json:"rateLimitPolicy"`
	RequestID       string   `json:"requestId"`
	EntryTiming     []string `json:"entryTiming"`
	Missing         []string `json:"missing"`
}

func TestBrowserCrossOrigin(t *testing.T) {
	chromiumPath(t)
	// The other origin's server: its address first (warmpath must allow it),
	// its page once warmpath's address and a token are known.
	other := httptest.NewUnstartedServer(nil)
	origin := "http://" + other.Listener.Addr().(*net.TCPAddr).String()
	inst := start(t, map[string]string{"CORS_ORIGINS": origin})
	u := inst.newUser(t, "pro", nil)
	other.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = crossOriginPage.Execute(w, map[string]string{"API": inst.base, "Token": u.token})
	})
	other.Start()
	t.Cleanup(other.Close)

	ctx := newTab(t, 60*time.Second)
	problems := watchPage(t, ctx, nil)
	within(t, ctx, 15*time.Second, "open the other origin's page", chromedp.Navigate(origin+"/"))
	res := poll[crossOriginResult](t, ctx, 10*time.Second, "the page's fetch", `window.result`)
	if res.Error != "" {
		t.Fatalf("the cross-origin fetch failed: %s", res.Error)
	}
	t.Logf("read from %s: %+v", origin, res)
	if res.Status != 200 {
		t.Errorf("status %d, want 200", res.Status)
	}
	for name, v := range map[string]string{"Server-Timing": res.ServerTiming, "RateLimit": res.RateLimit, "RateLimit-Policy": res.RateLimitPolicy, "X-Request-Id": res.RequestID} {
		if v == "" {
			t.Errorf("the page could not read %s", name)
		}
	}
	if !strings.Contains(res.ServerTiming, "total;dur=") {
		t.Errorf("Server-Timing %q has no total", res.ServerTiming)
	}
	if !slices.ContainsFunc(res.EntryTiming, func(s string) bool { return strings.HasPrefix(s, "total=") }) {
		t.Errorf("performance entry serverTiming %q has no total (Timing-Allow-Origin missing?)", res.EntryTiming)
	}
	if !slices.Equal(res.Missing, []string{"a", "b"}) {
		t.Errorf("missing %q, want [a b] for a new user", res.Missing)
	}
	problems.check(t)
}

func TestBrowserDemoPageBadToken(t *testing.T) {
	chromiumPath(t)
	inst := start(t, nil)
	ctx := newTab(t, 60*time.Second)
	// The page's warmup calls are answered 401: that is the test.
	problems := watchPage(t, ctx, func(url string, status int64) bool {
		return status == 401 && strings.HasSuffix(url, "/api/user/warmup")
	})
	within(t, ctx, 15*time.Second, "open the page", chromedp.Navigate(inst.base+"/"))
	poll[bool](t, ctx, 10*time.Second, "page ready", `document.body.dataset.ready === "1"`)
	// Paste a token and press Enter, as a keyboard user would.
	within(t, ctx, 10*time.Second, "sign in with a bad token",
		chromedp.SendKeys(chromedp.ID("token"), "wp_"+strings.Repeat("A", 43)+kb.Enter),
	)
	shown := poll[string](t, ctx, 10*time.Second, "the error", `document.getElementById("error").hidden ? "" : document.getElementById("error").textContent`)
	if !strings.Contains(shown, "_token (HTTP 401)") || !strings.Contains(shown, "Request id: ") {
		t.Errorf("error shown %q, want the code, the status and the request id", shown)
	}
	if v := eval[string](t, ctx, 5*time.Second, `document.getElementById("token").value`); v != "" {
		t.Errorf("token input still holds %q after sign-in", v)
	}
	// The token is refused: back to the sign-in form.
	if eval[bool](t, ctx, 5*time.Second, `document.getElementById("token-form").hidden`) {
		t.Error("the sign-in form is still hidden after the token was refused")
	}
	status := eval[string](t, ctx, 5*time.Second, `document.getElementById("warm-status").textContent`)
	if !strings.Contains(status, "Could not read the warmup status") {
		t.Errorf("warmup status %q, want that it could not be read", status)
	}
	t.Logf("shown: %s | %s", shown, status)
	problems.check(t)
}
