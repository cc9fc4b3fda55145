package valkey

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// StartEmbedded starts an in-process, Valkey-compatible server (miniredis) on
// a random 127.0.0.1 port, for the embedded default. Connect to url with
// Config.DisableClientCache set: miniredis has no CLIENT TRACKING. Data lives
// in memory only and is gone after stop. TTLs run on the wall clock, as on a
// real server.
func StartEmbedded() (url string, stop func(), err error) {
	m, err := miniredis.Run()
	if err != nil {
		return "", nil, fmt.Errorf("valkey: start embedded server: %w", err)
	}
	// Without ClockTTL miniredis never expires keys by itself.
	m.ClockTTL(true)
	return "redis://" + m.Addr(), m.Close, nil
}
