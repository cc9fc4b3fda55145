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

// status is the one place where error codes become HTTP statuses.
func status(code apperr.Code) int {
	switch code {
	case apperr.InvalidRequest, apperr.InvalidItems, apperr.UnknownPlan:
		return http.StatusBadRequest
	case apperr.MissingToken, apperr.MalformedToken, apperr.UnknownToken, apperr.ExpiredToken, apperr.RevokedToken, apperr.InvalidToken:
		return http.StatusUnauthorized
	case apperr.Forbidden:
		return http.StatusForbidden
	case apperr.NotFound:
		return http.StatusNotFound
	case apperr.MethodNotAllowed:
		return http.StatusMethodNotAllowed
	case apperr.ConflictingOperation:
		return http.StatusConflict
	case apperr.RequestTimeout:
		return http.StatusRequestTimeout
	case apperr.BodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case apperr.UnsupportedMedia:
		return http.StatusUnsupportedMediaType
	case apperr.TooManyItems:
		return http.StatusUnprocessableEntity
	case apperr.QuotaExceeded:
		return http.StatusTooManyRequests
	case apperr.Unavailable, apperr.WarmupQueueFull, apperr.ShuttingDown:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
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

// fromFiber turns Fiber's own errors (routing, body limit) into apperr ones.
func fromFiber(err error) *apperr.Error {
	if e := apperr.As(err); e != nil {
		return e
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusNotFound:
			return apperr.New(apperr.NotFound, "no such route")
		case fiber.StatusMethodNotAllowed:
			return apperr.New(apperr.MethodNotAllowed, "method not allowed on this route")
		case fiber.StatusRequestEntityTooLarge:
			return apperr.New(apperr.BodyTooLarge, "the request body is larger than 1 MiB")
		case fiber.StatusRequestTimeout:
			return apperr.New(apperr.RequestTimeout, "timed out reading the request")
		case fiber.StatusBadRequest:
			return apperr.New(apperr.InvalidRequest, "the request is malformed")
		case fiber.StatusRequestHeaderFieldsTooLarge:
			return apperr.New(apperr.InvalidRequest, "the request headers are too large")
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
