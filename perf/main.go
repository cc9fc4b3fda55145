// Command perf is warmpath's perf lab. It talks to the service over HTTP only
// (the public and admin APIs) and drives open-model load with vegeta:
//
//	go run ./perf floor   serve the bare-Fiber physical floor
//	go run ./perf load    provision users and run one constant-rate attack
//	go run ./perf verify  build and start the service, run the checklist,
//	                      write perf/out/verify.json and perf/out/verify.html
//	go run ./perf sink    an OTLP/HTTP endpoint that discards (overhead runs)
//	go run ./perf soak    a bounded steady load; fails on growing resources
//	                      or p99 drift; writes perf/out/soak.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/warmpath/warmpath/internal/cli"
)

func main() { cli.Main("perf", run) }

const usageText = `usage: perf <command> [flags]

  floor   serve a bare Fiber handler on POST /api/hasNotEngine-ultra-fast (the floor)
  load    provision users and run one constant-rate attack (or --max)
  verify  run the validation checklist; writes perf/out/verify.{json,html}
  sink    accept and discard OTLP/HTTP exports (telemetry-overhead runs)
  soak    steady load for --duration (default 10m); fails if heap, goroutines, fds
          or connections keep growing or p99 drifts; writes perf/out/soak.json
  bigwarm time the warmup of users with a large item set (default 100,000)
  login   time a new token's first POST /api/user/warmup, right after the admin API made it

Run "perf <command> -h" for the flags of a command.`

func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return cli.Usage(err)
}

// listenFlag parses the command line of a server command whose one flag is
// --addr, and listens there. A nil listener comes with the error to return
// (nil after -h).
func listenFlag(cmd, addr, usage string, args []string, stderr io.Writer) (net.Listener, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	at := fs.String("addr", addr, usage)
	if err := fs.Parse(args); err != nil {
		return nil, usageErr(err)
	}
	ln, err := net.Listen("tcp", *at)
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", cmd, *at, err)
	}
	return ln, nil
}

// commands are perf's subcommands by name.
var commands = map[string]cli.Run{
	"floor":   runFloor,
	"load":    runLoad,
	"verify":  runVerify,
	"sink":    runSink,
	"soak":    runSoak,
	"bigwarm": runBigWarm,
	"login":   runLogin,
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return cli.Usage(errors.New(usageText))
	}
	cmd, rest := args[1], args[2:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprintln(stdout, usageText)
		return nil
	}
	c, ok := commands[cmd]
	if !ok {
		return cli.Usage(fmt.Errorf("unknown command %q\n%s", cmd, usageText))
	}
	return c(ctx, rest, getenv, stdout, stderr)
}
