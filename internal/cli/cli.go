// Package cli runs a command's run function as the process: SIGINT and
// SIGTERM cancel its context, an error is printed after the command's name,
// and the exit status comes from the error. The service (app) and the perf
// lab (perf) both start here, so each main is one line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Run is a whole program: its arguments (args[0] is the program), its
// environment and its output streams, injected so tests can call it.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Main runs run with the process's arguments, environment and streams, and
// exits: 0 on success, the ExitError's code, else 1.
func Main(name string, run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(name, err, os.Stderr))
}

// report prints err (if any) after name and returns the exit status.
func report(name string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// ExitError is an error with the process exit status it calls for (2: bad
// usage or configuration).
type ExitError struct {
	Code int
	Err  error
}

// Usage is an ExitError with status 2: a bad command line or configuration.
func Usage(err error) *ExitError { return &ExitError{Code: 2, Err: err} }

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }
