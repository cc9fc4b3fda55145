package httpapi

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// pipeConn is a net.Conn that records Close.
type pipeConn struct {
	net.Conn
	closed bool
}

func (p *pipeConn) Close() error { p.closed = true; return nil }

func TestCloseQuietSparesRequestsUntilTheirResponseIsWritten(t *testing.T) {
	tr := newConnTracker()
	now := time.Now()
	spare, inHandler, written, idle := &pipeConn{}, &pipeConn{}, &pipeConn{}, &pipeConn{}
	for _, c := range []*pipeConn{spare, inHandler, written, idle} {
		tr.track(c, fasthttp.StateNew)
		tr.track(c, fasthttp.StateActive)
	}
	tr.setBusy(inHandler) // a request inside the handler chain
	tr.setBusy(written)   // handler returned; response not yet written
	tr.setBusy(idle)
	tr.track(idle, fasthttp.StateIdle) // response written: keep-alive idle

	tr.closeQuiet(now.Add(time.Second)) // past the grace for "active" conns
	for name, tc := range map[string]struct {
		c    *pipeConn
		want bool
	}{"spare (never sent a request)": {spare, true}, "in handler": {inHandler, false},
		"response not yet written": {written, false}, "idle keep-alive": {idle, true}} {
		if tc.c.closed != tc.want {
			t.Errorf("%s: closed=%v, want %v", name, tc.c.closed, tc.want)
		}
	}
}
