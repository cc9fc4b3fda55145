package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/gofiber/fiber/v2"
	vk "github.com/valkey-io/valkey-go"
)

// floorRequest is the query body the floor parses, like the service does.
type floorRequest struct {
	Items []string `json:"items"`
}

// floorScript is the round-trip floor's one call per request: a script that
// does nothing on one key of a user's slot. What it costs is the least any
// answer that needs one Valkey round trip can cost (the service's count
// script is one such call, doing its work inside).
const floorScript = "return 1"

// floorKey is the key the round-trip floor's script names: a user's hash
// tag, as the service's keys carry, so a cluster routes it like them.
const floorKey = "{u:0}:floor"

// newFloor is the physical floor: a bare Fiber handler on the query path
// that parses the same JSON body with encoding/json and answers a small
// JSON, with no auth, no usage check, no engine and no telemetry. With a
// Valkey client it is the round-trip floor: the same handler plus one
// EVALSHA of floorScript per request, answered 503 when it fails.
func newFloor(c vk.Client) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	script := vk.NewLuaScript(floorScript)
	app.Post(pathQuery, func(f *fiber.Ctx) error {
		var req floorRequest
		if err := json.Unmarshal(f.Body(), &req); err != nil {
			return f.Status(fiber.StatusBadRequest).JSON(fiber.Map{"error": fiber.Map{"code": "invalid_request", "message": "the body is not valid JSON"}})
		}
		if c != nil {
			if err := script.Exec(f.Context(), c, []string{floorKey}, nil).Error(); err != nil {
				return f.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"error": fiber.Map{"code": "unavailable", "message": "the floor's Valkey call failed"}})
			}
		}
		return f.JSON(fiber.Map{"missing": []string{}, "checked": len(req.Items)})
	})
	return app
}

// runFloor serves the floor until ctx is done.
func runFloor(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	at := fs.String("addr", "127.0.0.1:18081", "listen address")
	valkeyURL := fs.String("valkey", "", "Valkey URL (redis:// or valkey://): serve the round-trip floor, one EVALSHA of a script that returns 1 per request")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	var c vk.Client
	if *valkeyURL != "" {
		var err error
		if c, err = newValkeyClient(*valkeyURL); err != nil {
			return fmt.Errorf("floor: --valkey: %w", err)
		}
		defer c.Close()
	}
	ln, err := net.Listen("tcp", *at)
	if err != nil {
		return fmt.Errorf("floor: listen %s: %w", *at, err)
	}
	app := newFloor(c)
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	kind := "floor"
	if c != nil {
		kind = "round-trip floor"
	}
	fmt.Fprintf(stdout, "floor: serving the %s on http://%s%s\n", kind, ln.Addr(), pathQuery)
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
