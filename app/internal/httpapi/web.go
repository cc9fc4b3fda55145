package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// DemoUser is one demo user created at start in embedded mode, as GET
// /demo/users answers it.
type DemoUser struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Plan  string `json:"plan"`
	Token string `json:"token"`
}

type demoUsersResponse struct {
	Users []DemoUser `json:"users"`
}

// asset is one embedded file, read and hashed once at start: serving it is a
// map lookup and a write, nothing else.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// webFiles maps what is served to the file of Config.Web it comes from.
var webFiles = []struct{ name, file, contentType string }{
	{"/", "index.html", "text/html; charset=utf-8"},
	{"/openapi.json", "openapi.json", fiber.MIMEApplicationJSON},
	{"app.js", "app.js", "text/javascript; charset=utf-8"},
	{"style.css", "style.css", "text/css; charset=utf-8"},
	{"client.js", "client/dist/index.js", "text/javascript; charset=utf-8"},
}

// loadAssets reads every served file of fsys; a missing one is an error at
// start, never a 404 at run time.
func loadAssets(fsys fs.FS) (map[string]*asset, error) {
	out := make(map[string]*asset, len(webFiles))
	for _, f := range webFiles {
		body, err := fs.ReadFile(fsys, f.file)
		if err != nil {
			return nil, fmt.Errorf("httpapi: web file %s: %w", f.file, err)
		}
		sum := sha256.Sum256(body)
		out[f.name] = &asset{body: body, contentType: f.contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return out, nil
}

// serveAsset answers a with an ETag and Cache-Control: no-cache (browsers
// revalidate every time and get 304 while the binary is unchanged).
func serveAsset(c *fiber.Ctx, a *asset) error {
	c.Set(fiber.HeaderETag, a.etag)
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	if etagMatches(c.Get(fiber.HeaderIfNoneMatch), a.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	c.Set(fiber.HeaderContentType, a.contentType)
	return c.Send(a.body)
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

func (s *Server) handleIndex(c *fiber.Ctx) error { return serveAsset(c, s.assets["/"]) }

func (s *Server) handleOpenAPI(c *fiber.Ctx) error { return serveAsset(c, s.assets["/openapi.json"]) }

// handleAsset serves exactly the page's assets; anything else is a 404.
func (s *Server) handleAsset(c *fiber.Ctx) error {
	name := c.Params("file")
	if a, ok := s.assets[name]; ok && !strings.HasPrefix(name, "/") {
		return serveAsset(c, a)
	}
	return apperr.New(apperr.NotFound, "no such asset: %s", name)
}

// handleDemoUsers lists the demo users and their tokens, for the demo page.
// It is registered only in embedded mode on a loopback listener.
func (s *Server) handleDemoUsers(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(demoUsersResponse{Users: s.cfg.DemoUsers})
}

// IsLoopback reports whether addr, a listener's address, is a loopback one
// (127.0.0.0/8 or ::1): only there may GET /demo/users hand out tokens.
func IsLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
