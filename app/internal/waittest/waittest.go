// Package waittest waits in tests for a condition that another goroutine or
// process makes true, by polling it against a deadline (no fixed sleeps).
package waittest

import (
	"testing"
	"time"
)

// Interval is how often Until polls.
const Interval = 5 * time.Millisecond

// Until calls cond every Interval until it returns true, and fails the test
// if within passes first; what names the awaited condition in the failure.
// cond runs on the test's goroutine, so it may call t.Fatal.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(Interval)
	}
}
