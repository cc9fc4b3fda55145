package httpapi

import (
	"time"

	"github.com/gofiber/fiber/v2"
)

// Bounds of drainRefusedBody: a client that keeps sending past them is cut.
const (
	drainMaxBytes = 16 << 20
	drainMaxTime  = 2 * time.Second
	drainIdle     = 100 * time.Millisecond
)

// drainRefusedBody reads and discards the rest of a body that fasthttp
// refused on its Content-Length (over the 1 MiB limit) before the 413 is
// written. fasthttp answers without reading the body and closes the
// connection; closing a socket with unread data makes the kernel send a
// reset, which often reaches the client before it has read the answer, so a
// browser sees a network error instead of body_too_large. Reading what the
// client is still sending (bounded in bytes and time) lets the 413 arrive
// intact; the connection is closed after it either way.
func drainRefusedBody(c *fiber.Ctx) {
	conn := c.Context().Conn()
	if conn == nil {
		return
	}
	remaining := int64(c.Request().Header.ContentLength())
	if remaining <= 0 || remaining > drainMaxBytes {
		remaining = drainMaxBytes
	}
	deadline := time.Now().Add(drainMaxTime)
	buf := make([]byte, 32<<10)
	for remaining > 0 && time.Now().Before(deadline) {
		// A short idle deadline ends the drain once the client stops
		// sending (fasthttp's reader may already hold part of the body).
		idle := time.Now().Add(drainIdle)
		if idle.After(deadline) {
			idle = deadline
		}
		_ = conn.SetReadDeadline(idle)
		n, err := conn.Read(buf[:min(int64(len(buf)), remaining)])
		remaining -= int64(n)
		if err != nil {
			break // EOF, the idle deadline, or a broken connection: done
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
}
