package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// TestDrainClosedConnectionDoesNotCrash: a connection closed while its
// request is in the handler (closeQuiet judged it quiet a moment before the
// request's last bytes arrived) costs that request its answer, not the
// process: fasthttp's write deadline on the closed connection used to panic.
func TestDrainClosedConnectionDoesNotCrash(t *testing.T) {
	app := fiber.New(fiber.Config{WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, DisableStartupMessage: true})
	app.Post("/", func(c *fiber.Ctx) error {
		if string(c.Body()) == "close" {
			_ = c.Context().Conn().Close() // as closeQuiet would
		}
		return c.SendString("ok")
	})
	p := newPublic(app, newConnTracker())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	base := "http://" + ln.Addr().String() + "/"
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := cl.Post(base, "text/plain", strings.NewReader("close")); err == nil {
		resp.Body.Close()
		t.Fatalf("the closed connection answered %d", resp.StatusCode)
	}
	resp, err := cl.Post(base, "text/plain", strings.NewReader("next"))
	if err != nil {
		t.Fatalf("the server did not survive a connection closed under its handler: %v", err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("next request: %d %s", resp.StatusCode, b)
	}
}
