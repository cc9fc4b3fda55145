// Package warmuptest builds warmup Managers for tests.
package warmuptest

import (
	"context"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/warmup"
)

// New is warmup.New(cfg), failing the test on an error; the Manager is
// stopped (up to 10s) when the test ends.
func New(t testing.TB, cfg warmup.Config) *warmup.Manager {
	t.Helper()
	m, err := warmup.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return m
}
