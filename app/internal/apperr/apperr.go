// Package apperr is warmpath's one error type: a stable snake_case code that
// clients can switch on, and a human message. It knows nothing of HTTP; the
// mapping from code to status lives in exactly one place (httpapi).
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, snake_case error code. Codes are part of the public API.
type Code string

// The codes warmpath answers with.
const (
	InvalidRequest       Code = "invalid_request"        // malformed JSON, wrong types
	InvalidItems         Code = "invalid_items"          // empty/oversized list, bad item
	BodyTooLarge         Code = "body_too_large"         // body over the limit
	UnsupportedMedia     Code = "unsupported_media_type" // not application/json
	MissingToken         Code = "missing_token"
	MalformedToken       Code = "malformed_token"
	UnknownToken         Code = "unknown_token"
	ExpiredToken         Code = "expired_token"
	RevokedToken         Code = "revoked_token"
	Forbidden            Code = "forbidden"
	NotFound             Code = "not_found"
	MethodNotAllowed     Code = "method_not_allowed"
	QuotaExceeded        Code = "quota_exceeded"
	TooManyItems         Code = "too_many_items"
	UnknownPlan          Code = "unknown_plan"
	WarmupQueueFull      Code = "warmup_queue_full"
	RequestTimeout       Code = "request_timeout"
	Unavailable          Code = "service_unavailable"
	Internal             Code = "internal_error"
	ShuttingDown         Code = "shutting_down"
	ConflictingOperation Code = "conflict"
	InvalidIdemKey       Code = "invalid_idempotency_key" // Idempotency-Key not 1-255 printable ASCII
	IdemKeyInUse         Code = "idempotency_key_in_use"  // the key's first request is still being answered
	IdemKeyReused        Code = "idempotency_key_reused"  // the key was used with another request

	// InvalidToken is what a client is told for a JWT that fails
	// verification, and for an opaque token that is
	// malformed, unknown or revoked: one answer for all three, so the answer
	// never says whether a token exists. The auth package's finer codes
	// (MalformedToken, UnknownToken, RevokedToken) stay internal, for logs.
	InvalidToken Code = "invalid_token"
	// TooManyAuthFailures refuses a client address that failed
	// authentication too often (429 + Retry-After).
	TooManyAuthFailures Code = "too_many_auth_failures"
)

// Error is an error with a code and a human message. RetryAfter, when
// non-zero, tells the client when to try again.
type Error struct {
	Code       Code
	Message    string
	RetryAfter time.Duration
	Err        error // the cause, for logs; never shown to clients
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with code and message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with code and message that keeps err as its cause.
func Wrap(err error, code Code, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// Temporary returns the error of a dependency that is down: code Unavailable
// with message, a retry in a second (Retry-After: 1) and err as the cause.
func Temporary(err error, message string) *Error {
	return &Error{Code: Unavailable, Message: message, RetryAfter: time.Second, Err: err}
}

// IsFault reports whether err is the server's fault (an internal error, a
// dependency that is down, an unknown code: a 5xx) rather than a refusal of
// the client's request. Errors without a code are faults. httpapi's status
// map agrees (its tests check every code).
func IsFault(err error) bool {
	switch CodeOf(err) {
	case InvalidRequest, InvalidItems, BodyTooLarge, UnsupportedMedia, MissingToken, MalformedToken,
		UnknownToken, ExpiredToken, RevokedToken, Forbidden, NotFound, MethodNotAllowed, QuotaExceeded,
		TooManyItems, UnknownPlan, RequestTimeout, ConflictingOperation, InvalidToken, TooManyAuthFailures:
		return false
	}
	return true
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	if err == nil {
		return nil // (and no heap slot for errors.As's target)
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// CodeOf returns err's code, Internal for errors that carry none.
func CodeOf(err error) Code {
	if e := As(err); e != nil {
		return e.Code
	}
	return Internal
}
