package httpapi

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// BenchmarkDecodeJSON measures decodeJSON alone on a 100-item query body.
func BenchmarkDecodeJSON(b *testing.B) {
	items := make([]string, 100)
	for i := range items {
		items[i] = strconv.Quote("item-" + strconv.Itoa(i) + "-" + strings.Repeat("x", 16))
	}
	body := []byte(`{"items":[` + strings.Join(items, ",") + `]}`)
	app := fiber.New()
	fctx := &fasthttp.RequestCtx{}
	fctx.Request.Header.SetContentType(fiber.MIMEApplicationJSON)
	fctx.Request.SetBody(body)
	c := app.AcquireCtx(fctx)
	defer app.ReleaseCtx(c)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var req queryRequest
		if err := decodeJSON(c, &req); err != nil {
			b.Fatal(err)
		}
		if len(req.Items) != 100 {
			b.Fatal(len(req.Items))
		}
	}
}

// Fiber reuses the request body buffer after the handler returns: decoded
// strings must not alias it.
func TestDecodedStringsDoNotAliasTheBody(t *testing.T) {
	app := fiber.New()
	fctx := &fasthttp.RequestCtx{}
	fctx.Request.Header.SetContentType(fiber.MIMEApplicationJSON)
	fctx.Request.SetBody([]byte(`{"items":["abc","def"]}`))
	c := app.AcquireCtx(fctx)
	defer app.ReleaseCtx(c)
	var req queryRequest
	if err := decodeJSON(c, &req); err != nil {
		t.Fatal(err)
	}
	body := c.Body()
	for i := range body {
		body[i] = 'z'
	}
	if len(req.Items) != 2 || req.Items[0] != "abc" || req.Items[1] != "def" {
		t.Fatalf("items changed with the body: %q", req.Items)
	}
}
