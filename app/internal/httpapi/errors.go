package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/telemetry"
)

// statuses is the one place where error codes become HTTP statuses; a code
// not listed here is a 500.
var statuses = map[int][]apperr.Code{
	http.StatusBadRequest: {apperr.InvalidRequest, apperr.InvalidItems, apperr.UnknownPlan, apperr.InvalidIdemKey},
	http.StatusUnauthorized: {apperr.MissingToken, apperr.MalformedToken, apperr.UnknownToken, apperr.ExpiredToken,
		apperr.RevokedToken, apperr.InvalidToken},
	http.StatusForbidden:             {apperr.Forbidden},
	http.StatusNotFound:              {apperr.NotFound},
	http.StatusMethodNotAllowed:      {apperr.MethodNotAllowed},
	http.StatusRequestTimeout:        {apperr.RequestTimeout},
	http.StatusConflict:              {apperr.ConflictingOperation, apperr.IdemKeyInUse},
	http.StatusRequestEntityTooLarge: {apperr.BodyTooLarge},
	http.StatusUnsupportedMediaType:  {apperr.UnsupportedMedia},
	http.StatusUnprocessableEntity:   {apperr.TooManyItems, apperr.IdemKeyReused},
	http.StatusTooManyRequests:       {apperr.QuotaExceeded, apperr.TooManyAuthFailures},
	http.StatusServiceUnavailable:    {apperr.Unavailable, apperr.WarmupQueueFull, apperr.ShuttingDown},
}

// statusOf is statuses by code.
var statusOf = func() map[apperr.Code]int {
	m := map[apperr.Code]int{}
	for st, codes := range statuses {
		for _, c := range codes {
			m[c] = st
		}
	}
	return m
}()

// status is the HTTP status of an error code (statuses).
func status(code apperr.Code) int {
	if st, ok := statusOf[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON shape of every error.
type errorBody struct {
	Error     errorDetail `json:"error"`
	RequestID string      `json:"requestId"`
}

type errorDetail struct {
	Code    apperr.Code `json:"code"`
	Message string      `json:"message"`
}

// fiberErrors are the answers to Fiber's own errors, by their status.
var fiberErrors = map[int]struct {
	code    apperr.Code
	message string
}{
	fiber.StatusNotFound:                    {apperr.NotFound, "no such route"},
	fiber.StatusMethodNotAllowed:            {apperr.MethodNotAllowed, "method not allowed on this route"},
	fiber.StatusRequestEntityTooLarge:       {apperr.BodyTooLarge, "the request body is larger than 1 MiB"},
	fiber.StatusRequestTimeout:              {apperr.RequestTimeout, "timed out reading the request"},
	fiber.StatusBadRequest:                  {apperr.InvalidRequest, "the request is malformed"},
	fiber.StatusRequestHeaderFieldsTooLarge: {apperr.InvalidRequest, "the request headers are too large"},
}

// fromFiber turns Fiber's own errors (routing, body limit) into apperr ones.
func fromFiber(err error) *apperr.Error {
	if e := apperr.As(err); e != nil {
		return e
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		if e, ok := fiberErrors[fe.Code]; ok {
			return &apperr.Error{Code: e.code, Message: e.message}
		}
		if fe.Code >= 400 && fe.Code < 500 {
			return apperr.New(apperr.InvalidRequest, "the request was rejected")
		}
	}
	return apperr.Wrap(err, apperr.Internal, "an internal error occurred")
}

// errorHandler is Fiber's ErrorHandler. observe answers every error of the
// handler chain itself; what reaches here was raised by fasthttp/Fiber before
// any middleware ran (the 1 MiB body limit, a malformed request, headers too
// large), so it gets here what observe gives every other response: an id,
// CORS, Server-Timing and the request-duration metric.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	if _, ok := c.Locals(stateKey).(*reqState); ok {
		return writeError(c, err)
	}
	start := time.Now()
	if errors.Is(err, fiber.ErrRequestEntityTooLarge) {
		drainRefusedBody(c)
	}
	s.cors(c)
	werr := writeError(c, err)
	total := time.Since(start)
	c.Set("Server-Timing", telemetry.ServerTiming(telemetry.Breakdown{Total: total}))
	method := stableMethod(c.Method())
	s.reqDuration.Record(context.Background(), total.Seconds(), metric.WithAttributeSet(attribute.NewSet(
		semconv.HTTPRequestMethodKey.String(method),
		semconv.HTTPRoute("unmatched"),
		semconv.HTTPResponseStatusCode(c.Response().StatusCode()),
	)))
	return werr
}

// writeError writes err in the JSON error shape, with Retry-After when the
// error says when to retry and WWW-Authenticate on 401s.
func writeError(c *fiber.Ctx, err error) error {
	e := fromFiber(err)
	st := status(e.Code)
	if e.RetryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, retryAfter(e.RetryAfter))
	}
	if st == http.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="warmpath", error="invalid_token"`)
		if e.Code == apperr.MissingToken {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="warmpath"`)
		}
	}
	id := requestID(c)
	c.Set(fiber.HeaderXRequestID, id)
	return c.Status(st).JSON(errorBody{
		Error:     errorDetail{Code: e.Code, Message: e.Message},
		RequestID: id,
	})
}

// retryAfter renders a duration as whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}
