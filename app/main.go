// Command warmpath serves metered per-user has-not queries that are fast from
// the first request after login. `warmpath` (or `warmpath serve`) runs the
// service; `warmpath migrate` applies the database migrations and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "warmpath:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// exitError carries a process exit status (2: bad usage or configuration).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

const usageText = `usage: warmpath [serve|migrate|help]

  serve    run the service (default)
  migrate  apply database migrations to DATABASE_URL and exit

Configuration is read from the environment; see README.md.`

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	switch cmd {
	case "serve":
		return serve(ctx, getenv, stdout, stderr, options{})
	case "migrate":
		return migrate(ctx, getenv, stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usageText)
		return nil
	default:
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q\n%s", cmd, usageText)}
	}
}
