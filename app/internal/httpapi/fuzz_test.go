package httpapi

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"golang.org/x/tools/txtar"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/engine"
)

// corpusBodies are the bodies of the bad-input corpus
// (app/testdata/badinput), unrendered: the fuzz seeds.
func corpusBodies(f *testing.F) [][]byte {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "badinput", "*.txtar"))
	if len(paths) == 0 {
		f.Fatal("no bad-input corpus found")
	}
	var out [][]byte
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range txtar.Parse(raw).Files {
			if _, body, ok := bytes.Cut(file.Data, []byte("\n\n")); ok {
				out = append(out, bytes.TrimSuffix(body, []byte("\n")))
			}
		}
	}
	return out
}

// FuzzDecodeJSON: whatever the body, decoding a request and validating its
// items never panics, refuses with a 4xx code and nothing else, and what it
// accepts is strict JSON whose items are valid, unchanged UTF-8.
func FuzzDecodeJSON(f *testing.F) {
	for _, b := range corpusBodies(f) {
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Add([]byte(`{"items":["a","😀"]}`), true)
	f.Add([]byte(`{"add":["a"],"remove":["b"]}`), false)
	app := fiber.New()
	f.Fuzz(func(t *testing.T, body []byte, query bool) {
		fctx := &fasthttp.RequestCtx{}
		fctx.Request.Header.SetContentType(fiber.MIMEApplicationJSON)
		fctx.Request.SetBody(body)
		c := app.AcquireCtx(fctx)
		defer app.ReleaseCtx(c)
		var items []string
		var err error
		if query {
			var req queryRequest
			if err = decodeJSON(c, &req); err == nil {
				err = engine.ValidateItems("items", req.Items, 1)
			}
			items = req.Items
		} else {
			var req itemsRequest
			if err = decodeJSON(c, &req); err == nil {
				err = engine.ValidateItems("add", req.Add, 0)
			}
			items = append(req.Add, req.Remove...)
		}
		if err != nil {
			e := apperr.As(err)
			if e == nil || status(e.Code) < 400 || status(e.Code) > 499 || e.Message == "" {
				t.Fatalf("refusal %v is not a 4xx with a message", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not JSON: %q", body)
		}
		for _, it := range items {
			if !utf8.ValidString(it) {
				t.Fatalf("accepted an item that is not valid UTF-8: %q", it)
			}
		}
	})
}
