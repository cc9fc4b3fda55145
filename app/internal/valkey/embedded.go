package valkey

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// embeddedTick is how often the embedded server's TTLs are advanced: the
// precision of its expiry.
const embeddedTick = 100 * time.Millisecond

// StartEmbedded starts an in-process, Valkey-compatible server (miniredis) on
// a random 127.0.0.1 port, for the embedded default. Connect to url with
// Config.DisableClientCache set: miniredis has no CLIENT TRACKING. Data lives
// in memory only and is gone after stop. TTLs run on the wall clock, as on a
// real server, advanced every embeddedTick.
//
// miniredis's own wall-clock mode (ClockTTL) advances every TTL on every
// command by walking and sorting the whole keyspace, so each command costs
// O(keys·log keys) and the server saturates once a few thousand keys exist;
// one FastForward per tick pays that walk ten times a second instead.
func StartEmbedded() (url string, stop func(), err error) {
	m, err := miniredis.Run()
	if err != nil {
		return "", nil, fmt.Errorf("valkey: start embedded server: %w", err)
	}
	stopClock := wallClockTTLs(m, embeddedTick)
	return "redis://" + m.Addr(), func() {
		stopClock()
		m.Close()
	}, nil
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
