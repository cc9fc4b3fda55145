package waittest

import (
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records instead of stopping.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r)
}

func TestUntilReturnsOnceCondHolds(t *testing.T) {
	n := 0
	Until(t, time.Minute, "three calls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func TestUntilFailsAfterDeadline(t *testing.T) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != r {
			t.Fatalf("Until did not fail: recovered %v", p)
		}
		if !strings.Contains(r.failed, "timed out") {
			t.Errorf("failure %q does not say it timed out", r.failed)
		}
	}()
	Until(r, 20*time.Millisecond, "never", func() bool { return false })
}
