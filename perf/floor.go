package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/gofiber/fiber/v2"
)

// floorRequest is the query body the floor parses, like the service does.
type floorRequest struct {
	Items []string `json:"items"`
}

// newFloor is the physical floor: a bare Fiber handler on the query path
// that parses the same JSON body with encoding/json and answers a small
// JSON, with no auth, no usage check, no engine and no telemetry.
func newFloor() *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post(pathQuery, func(c *fiber.Ctx) error {
		var req floorRequest
		if err := json.Unmarshal(c.Body(), &req); err != nil {
			return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{"error": fiber.Map{"code": "invalid_request", "message": "the body is not valid JSON"}})
		}
		return c.JSON(fiber.Map{"missing": []string{}, "checked": len(req.Items)})
	})
	return app
}

// runFloor serves the floor until ctx is done.
func runFloor(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	ln, err := listenFlag("floor", "127.0.0.1:18081", "listen address", args, stderr)
	if ln == nil {
		return err
	}
	app := newFloor()
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	fmt.Fprintf(stdout, "floor: serving http://%s%s\n", ln.Addr(), pathQuery)
	select {
	case <-ctx.Done():
		if err := app.Shutdown(); err != nil {
			return fmt.Errorf("floor: shutdown: %w", err)
		}
		return nil
	case err := <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("floor: serve: %w", err)
		}
		return nil
	}
}
