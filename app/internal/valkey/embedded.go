package valkey

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// embeddedTick is how often the embedded server's TTLs are advanced: the
// precision of its expiry.
const embeddedTick = 100 * time.Millisecond

// Embedded is an in-process, Valkey-compatible server (miniredis), for the
// embedded default.
type Embedded struct {
	// URL is the server's address (redis://127.0.0.1:port), for any client.
	// Connect with Config.DisableClientCache set: miniredis has no CLIENT
	// TRACKING.
	URL string

	m         *miniredis.Miniredis
	stopClock func()

	mu     sync.Mutex // Dial against Close
	closed bool
}

// StartEmbedded starts an Embedded server on a random 127.0.0.1 port. Data
// lives in memory only and is gone after Close. TTLs run on the wall clock,
// as on a real server, advanced every embeddedTick.
//
// miniredis's own wall-clock mode (ClockTTL) advances every TTL on every
// command by walking and sorting the whole keyspace, so each command costs
// O(keys·log keys) and the server saturates once a few thousand keys exist;
// one FastForward per tick pays that walk ten times a second instead.
func StartEmbedded() (*Embedded, error) {
	m, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("valkey: start embedded server: %w", err)
	}
	return &Embedded{URL: "redis://" + m.Addr(), m: m, stopClock: wallClockTTLs(m, embeddedTick)}, nil
}

// Dial opens an in-process connection to the server (a net.Pipe), for
// Config.Dial: the service's own client then pays no loopback TCP, whose
// system calls cost a warm query about as much as its script.
func (e *Embedded) Dial(context.Context) (net.Conn, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("valkey: embedded server closed")
	}
	client, server := net.Pipe()
	e.m.Server().ServeConn(server)
	return client, nil
}

// Close stops the server.
func (e *Embedded) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	e.stopClock()
	e.m.Close()
}

// wallClockTTLs advances m's TTLs with the wall clock every tick until stop
// returns.
func wallClockTTLs(m *miniredis.Miniredis, tick time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
