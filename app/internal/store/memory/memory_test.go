package memory_test

import (
	"testing"

	"github.com/warmpath/warmpath/app/internal/store"
	"github.com/warmpath/warmpath/app/internal/store/memory"
	"github.com/warmpath/warmpath/app/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memory.New()
		t.Cleanup(s.Close)
		return s
	})
}
