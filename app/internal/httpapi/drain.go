package httpapi

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Public is the public API server, with a drain that waits for requests in
// flight but not for connections that carry none.
type Public struct {
	App   *fiber.App
	conns *connTracker
}

// connTracker follows connections. fasthttp marks a new connection "active"
// before its first byte arrives, so a client's spare (never used) connection
// looks busy until ReadTimeout and would hold a drain until its deadline.
// The tracker knows which connections are inside a handler; the others can
// be closed at shutdown.
type connTracker struct {
	mu sync.Mutex
	m  map[net.Conn]*connInfo
	// draining is set once Shutdown has begun: /readyz answers 503 from
	// then on, so a load balancer stops sending.
	draining atomic.Bool
}

type connInfo struct {
	state fasthttp.ConnState
	since time.Time
	busy  bool // a request is inside the handler chain
}

func newConnTracker() *connTracker { return &connTracker{m: map[net.Conn]*connInfo{}} }

func (t *connTracker) track(c net.Conn, st fasthttp.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch st {
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(t.m, c)
	default:
		ci := t.m[c]
		if ci == nil {
			ci = &connInfo{}
			t.m[c] = ci
		}
		ci.state, ci.since = st, time.Now()
		if st == fasthttp.StateIdle {
			// The response has been written: only now is the request done
			// (the handler returned earlier, before fasthttp wrote it).
			ci.busy = false
		}
	}
}

// setBusy marks c as carrying a request; fasthttp's next idle (or closed)
// state clears it, after the response is written.
func (t *connTracker) setBusy(c net.Conn) {
	t.mu.Lock()
	if ci := t.m[c]; ci != nil {
		ci.busy = true
	}
	t.mu.Unlock()
}

// quietGrace is how long an "active" connection may go without reaching a
// handler before drain treats it as quiet: long enough for a request already
// on the wire to arrive, far shorter than any drain deadline.
const quietGrace = 200 * time.Millisecond

// closeQuiet closes connections with no request in flight.
func (t *connTracker) closeQuiet(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, ci := range t.m {
		quiet := ci.state == fasthttp.StateNew || ci.state == fasthttp.StateIdle ||
			(ci.state == fasthttp.StateActive && !ci.busy && now.Sub(ci.since) > quietGrace)
		if quiet {
			_ = c.Close()
			delete(t.m, c)
		}
	}
}

func newPublic(app *fiber.App, conns *connTracker) *Public {
	srv := app.Server()
	srv.ConnState = conns.track
	srv.CloseOnShutdown = true // in-flight responses say Connection: close
	return &Public{App: app, conns: conns}
}

// Serve serves on ln until Shutdown.
func (p *Public) Serve(ln net.Listener) error { return p.App.Listener(drainListener{ln}) }

// drainListener hands fasthttp drainConns.
type drainListener struct{ net.Listener }

func (l drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &drainConn{c}, nil
}

// drainConn is a public connection that closeQuiet may close while fasthttp
// still holds it: a request whose last bytes arrive just as its connection
// is judged quiet reaches the handler anyway, and fasthttp panics ("BUG:
// error in SetWriteDeadline") when it then sets the write deadline of a
// closed connection, which would crash the process in the middle of its
// drain, before the usage flush. On a closed connection a deadline is a
// no-op here; the write that follows fails and fasthttp drops the
// connection as it drops any broken one.
type drainConn struct{ net.Conn }

func (c *drainConn) SetDeadline(t time.Time) error { return ignoreClosed(c.Conn.SetDeadline(t)) }
func (c *drainConn) SetReadDeadline(t time.Time) error {
	return ignoreClosed(c.Conn.SetReadDeadline(t))
}
func (c *drainConn) SetWriteDeadline(t time.Time) error {
	return ignoreClosed(c.Conn.SetWriteDeadline(t))
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests finish, and closes
// connections that carry no request, all within ctx's deadline.
func (p *Public) Shutdown(ctx context.Context) error {
	p.conns.draining.Store(true)
	done := make(chan error, 1)
	go func() { done <- p.App.ShutdownWithContext(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		p.conns.closeQuiet(time.Now())
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
	}
}
