// Command warmpath serves metered per-user has-not queries that are fast from
// the first request after login. `warmpath` (or `warmpath serve`) runs the
// service; `warmpath migrate` applies the database migrations and exits.
package main

import "github.com/warmpath/warmpath/internal/cli"

func main() { cli.Main("warmpath", run) }
