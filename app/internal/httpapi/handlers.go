package httpapi

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
	"github.com/warmpath/warmpath/app/internal/query"
	"github.com/warmpath/warmpath/app/internal/telemetry"
	"github.com/warmpath/warmpath/app/internal/usage"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

type queryRequest struct {
	Items []string `json:"items"`
}

type usageJSON struct {
	Used      int64  `json:"used"`
	Limit     int64  `json:"limit"`
	Remaining int64  `json:"remaining"`
	ResetAt   string `json:"resetAt"`
}

type queryResponse struct {
	Missing []string  `json:"missing"`
	Checked int       `json:"checked"`
	Usage   usageJSON `json:"usage"`
}

type itemsRequest struct {
	Add    []string `json:"add"`
	Remove []string `json:"remove"`
}

type itemsResponse struct {
	Added   int64 `json:"added"`
	Removed int64 `json:"removed"`
	Total   int64 `json:"total"`
}

type warmupResponse struct {
	WarmupStatus warmup.Status `json:"warmupStatus"`
}

// decodeJSON checks the content type and decodes the body into v; every
// failure is a 4xx with a message that says what to fix.
//
// The decoder is github.com/go-json-experiment/json (the upstream of Go's
// encoding/json/v2) with its strict defaults: invalid UTF-8 and lone
// surrogate escapes ("\ud800") are refused, never replaced, so an item is
// never stored different from what was sent; a duplicate object key and
// data after the value are refused; field names match case-sensitively.
func decodeJSON(c *fiber.Ctx, v any) error {
	ct := c.Request().Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), []byte(fiber.MIMEApplicationJSON)) {
		return apperr.New(apperr.UnsupportedMedia, "the body must be application/json")
	}
	// Compressed bodies are refused (RFC 7694): Fiber's c.Body() would
	// inflate them without a bound, past the 1 MiB body limit (a small gzip
	// body inflates to gigabytes).
	var coded bool
	c.Request().Header.VisitAll(func(k, v []byte) {
		if bytes.EqualFold(k, []byte(fiber.HeaderContentEncoding)) && !bytes.EqualFold(bytes.TrimSpace(v), []byte("identity")) {
			coded = true
		}
	})
	if coded {
		c.Set(fiber.HeaderAcceptEncoding, "identity")
		return apperr.New(apperr.UnsupportedMedia, "the body must not be compressed (Content-Encoding)")
	}
	body := c.Request().Body()
	if !utf8.Valid(body) {
		return apperr.New(apperr.InvalidRequest, "the body is not valid UTF-8")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// decodeError turns a decoding error into a 400 that says what to fix.
func decodeError(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		switch {
		case errors.Is(se.Err, jsontext.ErrDuplicateName):
			return apperr.New(apperr.InvalidRequest, "the body has a duplicate key %q", topField(se.JSONPointer))
		}
		// The library's own words say what is wrong (invalid UTF-8 after
		// decoding an escape, characters after the top-level value, …).
		return apperr.New(apperr.InvalidRequest, "the body is not valid JSON: %s (at byte %d)", se.Err, se.ByteOffset)
	}
	var te *json.SemanticError
	if errors.As(err, &te) && te.GoType != nil {
		if f := topField(te.JSONPointer); f != "" {
			return apperr.New(apperr.InvalidRequest, "field %q has the wrong type: want %s", f, te.GoType)
		}
		return apperr.New(apperr.InvalidRequest, "the body has the wrong type: want a JSON object")
	}
	return apperr.New(apperr.InvalidRequest, "the body is not valid JSON")
}

// topField is the top-level member a JSON pointer is in ("" for the root).
func topField(p jsontext.Pointer) string {
	for tok := range p.Tokens() {
		return tok
	}
	return ""
}

// request is a JSON request body that checks its own values.
type request interface{ validate() error }

func (r *queryRequest) validate() error { return engine.ValidateItems("items", r.Items, 1) }

func (r *itemsRequest) validate() error {
	if len(r.Add)+len(r.Remove) == 0 {
		return apperr.New(apperr.InvalidItems, "give at least one item to add or remove")
	}
	if err := engine.ValidateItems("add", r.Add, 0); err != nil {
		return err
	}
	return engine.ValidateItems("remove", r.Remove, 0)
}

// posted is a JSON POST as its handler gets it (postJSON): the
// authenticated caller, the validated body and the Idempotency-Key.
type posted[T any] struct {
	who query.Caller
	req T
	key domain.IdemKey
}

// postJSON is the Fiber handler of a JSON POST: it reads the request (post)
// and hands it to h, or answers the first failure.
func postJSON[T any, P interface {
	*T
	request
}](s *Server, h func(c *fiber.Ctx, ctx context.Context, in posted[T]) error) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx := c.UserContext()
		var in posted[T]
		var err error
		if in.who, in.key, err = s.post(c, ctx, P(&in.req)); err != nil {
			return err
		}
		return h(c, ctx, in)
	}
}

// post reads a POST as the handlers need it: it authenticates the caller,
// then decodes the JSON body into req and validates it, then reads the
// Idempotency-Key; the first failure is the answer (an unauthenticated
// request learns nothing about its body).
func (s *Server) post(c *fiber.Ctx, ctx context.Context, req request) (query.Caller, domain.IdemKey, error) {
	who, err := s.caller(c, ctx)
	if err != nil {
		return who, domain.IdemKey{}, err
	}
	if err := decodeJSON(c, req); err != nil {
		return who, domain.IdemKey{}, err
	}
	if err := req.validate(); err != nil {
		return who, domain.IdemKey{}, err
	}
	key, err := idemKey(c)
	return who, key, err
}

func (s *Server) handleQuery(c *fiber.Ctx, ctx context.Context, in posted[queryRequest]) error {
	who, key, req := in.who, in.key, in.req
	ans, err := s.cfg.Query.Query(ctx, who, req.Items, key)
	if ans.Metered {
		setRateLimit(c, who.Principal.Plan, ans.Usage)
	}
	if err != nil {
		return err
	}
	if ans.Replayed {
		return sendStored(c, ans.Stored, true)
	}
	if key.Key == "" {
		return c.JSON(queryResponse{Missing: ans.Missing, Checked: len(req.Items), Usage: usageBody(ans.Usage)})
	}
	body, err := encodeJSON(queryResponse{Missing: ans.Missing, Checked: len(req.Items), Usage: usageBody(ans.Usage)})
	if err != nil {
		return err
	}
	stored := domain.StoredAnswer{Status: fiber.StatusOK, Body: string(body)}
	s.cfg.Query.Remember(ctx, who, key, stored)
	return sendStored(c, stored, false)
}

// sendStored sends a JSON answer that is (or becomes) a key's stored
// answer; replayed marks a repeat (Idempotent-Replayed: true).
func sendStored(c *fiber.Ctx, a domain.StoredAnswer, replayed bool) error {
	if replayed {
		c.Set(headerIdempotentReplayed, "true")
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(a.Status).SendString(a.Body)
}

func usageBody(d usage.Decision) usageJSON {
	return usageJSON{Used: d.Used, Limit: d.Limit, Remaining: d.Remaining, ResetAt: d.ResetAt.UTC().Format(time.RFC3339)}
}

// setRateLimit sets the IETF RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): the policy and what is left.
func setRateLimit(c *fiber.Ctx, plan domain.Plan, d usage.Decision) {
	window := int64(d.ResetAt.Sub(windowStart(plan, d.ResetAt)).Seconds())
	reset := max(int64(time.Until(d.ResetAt).Seconds()), 0)
	// Built in one stack buffer (the header copies it): no allocation.
	var buf [96]byte
	b := append(buf[:0], `"quota";q=`...)
	b = strconv.AppendInt(b, d.Limit, 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, window, 10)
	c.Response().Header.SetBytesV("RateLimit-Policy", b)
	b = append(buf[:0], `"quota";r=`...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	c.Response().Header.SetBytesV("RateLimit", b)
}

// windowStart is the start of the window that ends at reset.
func windowStart(plan domain.Plan, reset time.Time) time.Time {
	start, _ := plan.Period.Window(reset.Add(-time.Nanosecond))
	return start
}

func (s *Server) handleItems(c *fiber.Ctx, ctx context.Context, in posted[itemsRequest]) error {
	who, key, req := in.who, in.key, in.req
	ans, err := s.cfg.Query.Keyed(ctx, who, key, func(ctx context.Context) (domain.StoredAnswer, error) {
		var ch domain.ItemChange
		err := telemetry.RunSpan(ctx, s.tracer, telemetry.PhaseQuery, "engine.update", func(ctx context.Context) error {
			var err error
			ch, err = s.cfg.Items.Update(ctx, who.Principal.UserID, req.Add, req.Remove, who.Principal.Plan.MaxItems)
			return err
		})
		if err != nil {
			return domain.StoredAnswer{}, err
		}
		body, err := encodeJSON(itemsResponse{Added: ch.Added, Removed: ch.Removed, Total: ch.Total})
		return domain.StoredAnswer{Status: fiber.StatusOK, Body: string(body)}, err
	})
	if err != nil {
		return err
	}
	return sendStored(c, ans.Stored, ans.Replayed)
}

func (s *Server) handleWarmupPost(c *fiber.Ctx) error {
	ctx := c.UserContext()
	who, err := s.caller(c, ctx)
	if err != nil {
		return err
	}
	ws, err := s.cfg.Query.Warm(ctx, who)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(warmupResponse{WarmupStatus: ws})
}

func (s *Server) handleWarmupGet(c *fiber.Ctx) error {
	ctx := c.UserContext()
	who, err := s.caller(c, ctx)
	if err != nil {
		return err
	}
	ws, err := s.cfg.Query.WarmupStatus(ctx, who.Principal.UserID)
	if err != nil {
		return err
	}
	return c.JSON(warmupResponse{WarmupStatus: ws})
}

func (s *Server) handleLivez(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

type checkResult struct {
	Name       string     `json:"name"`
	OK         bool       `json:"ok"`
	State      CheckState `json:"state"`
	DurationMs float64    `json:"durationMs"`
	Error      string     `json:"error,omitempty"`
}

// readiness is the instance's state from its checks' results: down if a
// check that it cannot answer without fails, or if every check fails
// (nothing left to answer from); degraded if some check fails; else ok.
func readiness(results []checkResult) CheckState {
	state, failed := CheckOK, 0
	for _, r := range results {
		switch r.State {
		case CheckOK:
			continue
		case CheckDown:
			return CheckDown
		}
		state = CheckDegraded
		failed++
	}
	if failed > 0 && failed == len(results) {
		return CheckDown
	}
	return state
}

// handleReadyz answers 200 while the instance can answer requests, degraded
// included, and 503 when it cannot answer at all or is draining at
// shutdown. It is NOT gated on warmup: a cold instance serves correctly,
// only slower.
func (s *Server) handleReadyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.CheckTimeout)
	defer cancel()
	results := make([]checkResult, len(s.cfg.Checks))
	var wg sync.WaitGroup
	for i, chk := range s.cfg.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := chk.Run(ctx)
			results[i] = checkResult{Name: chk.Name, OK: err == nil, State: CheckOK, DurationMs: ms(time.Since(start))}
			if err != nil {
				results[i].Error = err.Error()
				results[i].State = chk.Failure
				if results[i].State != CheckDegraded {
					results[i].State = CheckDown
				}
			}
		}()
	}
	wg.Wait()
	state := readiness(results)
	draining := s.conns.draining.Load()
	code := fiber.StatusOK
	statusText := "ready"
	if state == CheckDown || draining {
		code = fiber.StatusServiceUnavailable
		statusText = "unavailable"
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	body := fiber.Map{"status": statusText, "state": state}
	if draining {
		body["draining"] = true
	}
	if c.Request().URI().QueryArgs().Has("verbose") {
		body["checks"] = results
		body["warmup"] = s.cfg.Warmup.System()
	}
	return c.Status(code).JSON(body)
}

func (s *Server) notFound(c *fiber.Ctx) error {
	return apperr.New(apperr.NotFound, "no such route: %s %s", c.Method(), c.Path())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
