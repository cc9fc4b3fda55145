package httpapi

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/web"
)

// frontendServer is a public server with nothing behind the API (no auth,
// no store): enough for what is answered before or beside the API routes.
func frontendServer(t *testing.T, cfg Config) *Public {
	t.Helper()
	return testServer(t, cfg)
}

// documentedRoutes are the operations of web/openapi.json as "METHOD
// /fiber/:path", loaded and validated with kin-openapi.
func documentedRoutes(t *testing.T) []string {
	t.Helper()
	raw, err := web.Files.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	var out []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			out = append(out, method+" "+param.ReplaceAllString(path, ":$1"))
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIRoutesMatch: the routes the public server registers (with the
// frontend and the demo users, as in embedded mode on loopback) are exactly
// the operations of openapi.json. Left out of the comparison, on purpose:
// the middlewares registered with Use (observe, the catch-all 404), the
// OPTIONS /* CORS preflight (answered on every path; CORS is described in the
// document's description, as OpenAPI has no place for it), and the HEAD route
// Fiber adds beside every GET (same answer without a body).
func TestOpenAPIRoutesMatch(t *testing.T) {
	p := frontendServer(t, Config{Web: web.Files, DemoUsers: []DemoUser{}})
	var registered []string
	for _, r := range p.App.GetRoutes(true) {
		if r.Method == fiber.MethodHead || (r.Method == fiber.MethodOptions && r.Path == "/*") {
			continue
		}
		registered = append(registered, r.Method+" "+r.Path)
	}
	slices.Sort(registered)
	registered = slices.Compact(registered)
	documented := documentedRoutes(t)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is registered but not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.json documents %s, which the server does not register", d)
		}
	}
	if t.Failed() {
		t.Logf("registered: %q\ndocumented: %q", registered, documented)
	}

	// Without a frontend and demo users, their routes are absent.
	for _, r := range frontendServer(t, Config{}).App.GetRoutes(true) {
		if r.Path == "/demo/users" || r.Path == "/" && r.Method == fiber.MethodGet || strings.HasPrefix(r.Path, "/assets") {
			t.Errorf("route %s %s registered without Web/DemoUsers", r.Method, r.Path)
		}
	}
}

// TestBodyTooLargeHasServerTiming: the 413 fasthttp raises while reading a
// body over 1 MiB, before any middleware runs, still carries Server-Timing,
// X-Request-Id, CORS and the JSON error shape.
func TestBodyTooLargeHasServerTiming(t *testing.T) {
	p := frontendServer(t, Config{CORSOrigins: []string{"https://app.example"}})
	// A real listener: fiber's App.Test returns fasthttp's read error
	// instead of the answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Serve(ln) }()
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	req, err := http.NewRequest("POST", "http://"+ln.Addr().String()+"/api/hasNotEngine-ultra-fast", bytes.NewReader(bytes.Repeat([]byte("a"), MaxBodyBytes+1)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://app.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !bytes.Contains(body, []byte(`"code":"body_too_large"`)) {
		t.Fatalf("got %d %s, want 413 body_too_large", resp.StatusCode, body)
	}
	if st := resp.Header.Get("Server-Timing"); !regexp.MustCompile(`^total;dur=[0-9.]+$`).MatchString(st) {
		t.Errorf("Server-Timing = %q", st)
	}
	if id := resp.Header.Get("X-Request-Id"); id == "" || !bytes.Contains(body, []byte(`"requestId":"`+id+`"`)) {
		t.Errorf("X-Request-Id %q not the body's requestId: %s", id, body)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("Access-Control-Allow-Origin = %q", got)
	}
	if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Server-Timing") {
		t.Errorf("Access-Control-Expose-Headers = %q", got)
	}
}
