// Command warmpath serves metered per-user has-not queries that are fast from
// the first request after login. `warmpath` (or `warmpath serve`) runs the
// service; `warmpath migrate` applies the database migrations and exits.
package main

import (
	"os"
	"runtime/debug"

	"github.com/warmpath/warmpath/internal/cli"
)

// defaultGCPercent is the garbage collector's target (GOGC) when the
// environment sets none. The service's live heap is small (about 10 MB
// under a login storm), so Go's default of 100 collects about once a second
// under load, and the requests in flight during a cycle are the slowest
// ones (README, "The garbage collector's target"). GOGC, and GOMEMLIMIT,
// still override it.
const defaultGCPercent = 400

func main() {
	// The runtime has read GOGC already; an operator's value wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	cli.Main("warmpath", run)
}
