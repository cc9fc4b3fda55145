package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/config"
	"github.com/warmpath/warmpath/app/internal/domain"
	"github.com/warmpath/warmpath/app/internal/engine"
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
func decodeJSON(c *fiber.Ctx, v any) error {
	ct := c.Request().Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), []byte(fiber.MIMEApplicationJSON)) {
		return apperr.New(apperr.UnsupportedMedia, "the body must be application/json")
	}
	body := c.Body()
	// encoding/json silently replaces invalid UTF-8; refuse it instead so an
	// item is never stored different from what was sent.
	if !utf8.Valid(body) {
		return apperr.New(apperr.InvalidRequest, "the body is not valid UTF-8")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return apperr.New(apperr.InvalidRequest, "field %q has the wrong type: want %s", te.Field, te.Type)
		}
		return apperr.New(apperr.InvalidRequest, "the body is not valid JSON")
	}
	return nil
}

func (s *Server) handleQuery(c *fiber.Ctx) error {
	ctx := c.UserContext()
	st := state(c)
	p, hash, err := s.principal(c, ctx)
	if err != nil {
		return err
	}
	var req queryRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := engine.ValidateItems("items", req.Items, 1); err != nil {
		return err
	}

	var dec usage.Decision
	err = s.phase(ctx, "usage.check", &st.b.UsageCheck, func(ctx context.Context) error {
		var err error
		dec, err = s.cfg.Usage.Check(ctx, p)
		return err
	})
	if err != nil {
		return err
	}
	setRateLimit(c, p.Plan, dec)
	if !dec.Allowed {
		return &apperr.Error{Code: apperr.QuotaExceeded, Message: fmt.Sprintf("quota of %d queries per %s reached; it resets at %s", dec.Limit, p.Plan.Period, dec.ResetAt.Format(time.RFC3339)), RetryAfter: dec.RetryAfter}
	}
	s.recordFirstQuery(ctx, p.UserID)

	var res engine.Result
	err = s.phase(ctx, "engine.query", &st.b.Query, func(ctx context.Context) error {
		var err error
		res, err = s.cfg.Engine.HasNot(ctx, p.UserID, req.Items)
		if err != nil || res.Source == engine.SourceCache {
			return err
		}
		switch s.cfg.Strategy {
		case config.StrategyAsync:
			// Answered from the store at once; warm the user for next time.
			if _, err := s.cfg.Warmup.Enqueue(ctx, warmup.Job{UserID: p.UserID, TokenHash: &hash, Kind: warmup.KindLogin, Cause: ctx}); err != nil && !errors.Is(err, warmup.ErrQueueFull) {
				// Debug, not warn: while Valkey is down every query is cold and
				// this would log once per request; readyz and the cache metrics
				// already say it.
				s.log.DebugContext(ctx, "enqueue warmup for cold user", "user_id", p.UserID, "err", err.Error())
			}
		case config.StrategyInline:
			// The pre-optimisation behaviour, kept for A/B runs: the request
			// waits for the full warmup, then answers from the cache.
			if _, err := s.cfg.Warmup.Run(ctx, warmup.Job{UserID: p.UserID, TokenHash: &hash, Kind: warmup.KindInline, Cause: ctx}); err == nil {
				if again, err := s.cfg.Engine.HasNot(ctx, p.UserID, req.Items); err == nil {
					again.DB += res.DB
					res = again
				}
			}
		}
		return nil
	})
	st.b.DB += res.DB
	if err != nil {
		// Only successful metered requests count: give the unit back.
		if rerr := s.cfg.Usage.Refund(context.WithoutCancel(ctx), p, dec); rerr != nil {
			s.log.WarnContext(ctx, "usage refund failed; a failed request stays counted", "user_id", p.UserID, "err", rerr.Error())
		}
		return err
	}
	return c.JSON(queryResponse{
		Missing: res.Missing,
		Checked: len(req.Items),
		Usage:   usageBody(dec),
	})
}

func usageBody(d usage.Decision) usageJSON {
	return usageJSON{Used: d.Used, Limit: d.Limit, Remaining: d.Remaining, ResetAt: d.ResetAt.UTC().Format(time.RFC3339)}
}

// setRateLimit sets the IETF RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): the policy and what is left.
func setRateLimit(c *fiber.Ctx, plan domain.Plan, d usage.Decision) {
	window := int64(d.ResetAt.Sub(windowStart(plan, d.ResetAt)).Seconds())
	c.Set("RateLimit-Policy", `"quota";q=`+strconv.FormatInt(d.Limit, 10)+`;w=`+strconv.FormatInt(window, 10))
	reset := max(int64(time.Until(d.ResetAt).Seconds()), 0)
	c.Set("RateLimit", `"quota";r=`+strconv.FormatInt(d.Remaining, 10)+`;t=`+strconv.FormatInt(reset, 10))
}

// windowStart is the start of the window that ends at reset.
func windowStart(plan domain.Plan, reset time.Time) time.Time {
	start, _ := plan.Period.Window(reset.Add(-time.Nanosecond))
	return start
}

func (s *Server) handleItems(c *fiber.Ctx) error {
	ctx := c.UserContext()
	st := state(c)
	p, _, err := s.principal(c, ctx)
	if err != nil {
		return err
	}
	var req itemsRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Add)+len(req.Remove) == 0 {
		return apperr.New(apperr.InvalidItems, "give at least one item to add or remove")
	}
	if err := engine.ValidateItems("add", req.Add, 0); err != nil {
		return err
	}
	if err := engine.ValidateItems("remove", req.Remove, 0); err != nil {
		return err
	}
	var ch domain.ItemChange
	err = s.phase(ctx, "engine.update", &st.b.Query, func(ctx context.Context) error {
		var db time.Duration
		var err error
		ch, db, err = s.cfg.Engine.Update(ctx, p.UserID, req.Add, req.Remove, p.Plan.MaxItems)
		st.b.DB += db
		return err
	})
	if err != nil {
		return err
	}
	return c.JSON(itemsResponse{Added: ch.Added, Removed: ch.Removed, Total: ch.Total})
}

func (s *Server) handleWarmupPost(c *fiber.Ctx) error {
	ctx := c.UserContext()
	p, hash, err := s.principal(c, ctx)
	if err != nil {
		return err
	}
	if s.cfg.Strategy == config.StrategyOff {
		// Warmup is switched off (A/B runs): accept, report, enqueue nothing.
		ws, err := s.cfg.Warmup.Status(ctx, p.UserID)
		if err != nil {
			return &apperr.Error{Code: apperr.Unavailable, Message: "warmup status is temporarily unavailable", RetryAfter: time.Second, Err: err}
		}
		return c.Status(fiber.StatusAccepted).JSON(warmupResponse{WarmupStatus: ws})
	}
	ws, err := s.cfg.Warmup.Enqueue(ctx, warmup.Job{UserID: p.UserID, TokenHash: &hash, Kind: warmup.KindLogin, Cause: ctx})
	if errors.Is(err, warmup.ErrQueueFull) {
		return &apperr.Error{Code: apperr.WarmupQueueFull, Message: "the warmup queue is full; queries still work, try warming up again shortly", RetryAfter: time.Second, Err: err}
	}
	if err != nil {
		return &apperr.Error{Code: apperr.Unavailable, Message: "warmup is temporarily unavailable; queries still work", RetryAfter: time.Second, Err: err}
	}
	s.firstQuery.mark(p.UserID)
	return c.Status(fiber.StatusAccepted).JSON(warmupResponse{WarmupStatus: ws})
}

func (s *Server) handleWarmupGet(c *fiber.Ctx) error {
	ctx := c.UserContext()
	p, _, err := s.principal(c, ctx)
	if err != nil {
		return err
	}
	ws, err := s.cfg.Warmup.Status(ctx, p.UserID)
	if err != nil {
		return &apperr.Error{Code: apperr.Unavailable, Message: "warmup status is temporarily unavailable", RetryAfter: time.Second, Err: err}
	}
	return c.JSON(warmupResponse{WarmupStatus: ws})
}

func (s *Server) handleLivez(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

type checkResult struct {
	Name       string  `json:"name"`
	OK         bool    `json:"ok"`
	DurationMs float64 `json:"durationMs"`
	Error      string  `json:"error,omitempty"`
}

// handleReadyz reports whether dependencies are reachable. It is NOT gated on
// warmup: a cold instance serves correctly, only slower.
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
			results[i] = checkResult{Name: chk.Name, OK: err == nil, DurationMs: ms(time.Since(start))}
			if err != nil {
				results[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	ready := true
	for _, r := range results {
		ready = ready && r.OK
	}
	code := fiber.StatusOK
	statusText := "ready"
	if !ready {
		code = fiber.StatusServiceUnavailable
		statusText = "unavailable"
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	body := fiber.Map{"status": statusText}
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

// firstQueries remembers users whose login warmup was requested here and
// whose first metered query has not been seen yet, so that query can be
// counted by the state its warmup was in (warmpath_first_query_total).
type firstQueries struct {
	mu sync.Mutex
	m  map[int64]struct{}
}

func newFirstQueries() *firstQueries { return &firstQueries{m: map[int64]struct{}{}} }

func (f *firstQueries) mark(userID int64) {
	f.mu.Lock()
	// Bounded: a flood of warmups must not grow memory without limit.
	if len(f.m) < 1<<20 {
		f.m[userID] = struct{}{}
	}
	f.mu.Unlock()
}

func (f *firstQueries) take(userID int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return false
	}
	if _, ok := f.m[userID]; !ok {
		return false
	}
	delete(f.m, userID)
	return true
}

func (s *Server) recordFirstQuery(ctx context.Context, userID int64) {
	if !s.firstQuery.take(userID) {
		return
	}
	state := "none"
	if ws, err := s.cfg.Warmup.Status(ctx, userID); err == nil && ws.State != warmup.StateIdle {
		state = string(ws.State)
		if ws.State == warmup.StateFailed {
			state = "none"
		}
	}
	s.metrics.FirstQuery(ctx, state)
}
