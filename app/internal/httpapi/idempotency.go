package httpapi

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/gofiber/fiber/v2"

	"github.com/warmpath/warmpath/app/internal/apperr"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// The Idempotency-Key fields (draft-ietf-httpapi-idempotency-key-header).
const (
	headerIdempotencyKey     = "Idempotency-Key"
	headerIdempotentReplayed = "Idempotent-Replayed"
	maxIdempotencyKey        = 255
)

// idemKey reads the request's Idempotency-Key: none (a zero key) when the
// header is absent; 1–255 printable ASCII characters, else a 400. The
// stores see digests only: of the key (kept per user), and of the method,
// path and body it was first used with (the fingerprint a reuse is told
// by).
func idemKey(c *fiber.Ctx) (domain.IdemKey, error) {
	raw := c.Request().Header.Peek(headerIdempotencyKey)
	if raw == nil {
		return domain.IdemKey{}, nil
	}
	if len(raw) == 0 || len(raw) > maxIdempotencyKey {
		return domain.IdemKey{}, apperr.New(apperr.InvalidIdemKey, "Idempotency-Key must be 1 to %d printable ASCII characters", maxIdempotencyKey)
	}
	for _, b := range raw {
		if b < 0x20 || b > 0x7e {
			return domain.IdemKey{}, apperr.New(apperr.InvalidIdemKey, "Idempotency-Key must be 1 to %d printable ASCII characters", maxIdempotencyKey)
		}
	}
	kd := sha256.Sum256(raw)
	h := sha256.New()
	h.Write(c.Request().Header.Method())
	h.Write([]byte{' '})
	h.Write(c.Request().URI().Path())
	h.Write([]byte{'\n'})
	h.Write(c.Body())
	var fp [sha256.Size]byte
	return domain.IdemKey{Key: hex.EncodeToString(kd[:16]), Fingerprint: hex.EncodeToString(h.Sum(fp[:0])[:16])}, nil
}
