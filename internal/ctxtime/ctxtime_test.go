package ctxtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a done context = %v, want context.Canceled", err)
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(0) on a done context = %v, want context.Canceled", err)
	}
}

// TestEvery: f runs repeatedly, and Every returns once ctx is done (here:
// cancelled by the third run).
func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	Every(ctx, time.Millisecond, func() {
		if runs++; runs == 3 {
			cancel()
		}
	})
	if runs != 3 {
		t.Errorf("runs = %d, want 3", runs)
	}
}
