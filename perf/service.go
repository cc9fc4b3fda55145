package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/internal/loopback"
	"github.com/warmpath/warmpath/internal/pgschema"
)

// moduleRoot finds the directory holding go.mod, from the working directory
// upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// binaries are the programs verify runs as subprocesses.
type binaries struct {
	root string // module root: the service's working directory
	app  string // the service
	perf string // this program, for `perf floor`
}

// build compiles the service and the perf lab into dir.
func build(ctx context.Context, root, dir string, log io.Writer) (binaries, error) {
	b := binaries{root: root, app: filepath.Join(dir, "warmpath"), perf: filepath.Join(dir, "perf")}
	for _, t := range []struct{ out, pkg string }{{b.app, "./app"}, {b.perf, "./perf"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("go build %s: %w", t.pkg, err)
		}
	}
	return b, nil
}

// servingLine is the line the service prints once both listeners are up.
var servingLine = regexp.MustCompile(`warmpath: serving http://(\S+) admin http://(\S+)(?: .*started in ([0-9.]+[a-zµ]+)\))?`)

// demoLine is how the embedded default prints a demo user's token.
var demoLine = regexp.MustCompile(`warmpath: demo user (\S+)\s.*token=(wp_\S+)`)

// Service is one running warmpath process.
type Service struct {
	Public, Admin string    // base URLs
	Launched      time.Time // just before the process was started
	Env           map[string]string
	cmd           *exec.Cmd
	serving       chan struct{} // closed when the serving line is read
	exited        chan struct{} // closed when the process has exited
	exitErr       error         // set before exited is closed
	mu            sync.Mutex
	demo          map[string]string // demo user name → token (embedded mode)
	said          [2]string         // the addresses of the serving line
	startedIn     time.Duration     // the service's own start time, from the serving line
	log           *os.File
}

// launch starts the service with env on top of the process environment, on
// fresh loopback ports, and returns at once: the caller may probe it before
// it says it is serving. Its stderr (the logs) goes to logPath.
func launch(bin binaries, env map[string]string, logPath string) (*Service, error) {
	pub, err := loopback.FreeAddr()
	if err != nil {
		return nil, err
	}
	adm, err := loopback.FreeAddr()
	if err != nil {
		return nil, err
	}
	full := map[string]string{"HTTP_ADDR": pub, "ADMIN_ADDR": adm}
	for k, v := range env {
		full[k] = v
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("service log: %w", err)
	}
	cmd := exec.Command(bin.app)
	cmd.Dir = bin.root
	cmd.Env = mergeEnv(os.Environ(), full)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("service stdout: %w", err)
	}
	s := &Service{
		Public: "http://" + pub, Admin: "http://" + adm, Env: full, cmd: cmd,
		serving: make(chan struct{}), exited: make(chan struct{}), demo: map[string]string{}, log: logf,
	}
	s.Launched = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start service: %w", err)
	}
	go s.readStdout(stdout, logf)
	go func() {
		err := cmd.Wait()
		s.exitErr = err
		close(s.exited)
	}()
	return s, nil
}

// readStdout watches the service's stdout for the demo tokens and the
// serving line, and copies it into the log.
func (s *Service) readStdout(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	once := sync.Once{}
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		if m := demoLine.FindStringSubmatch(line); m != nil {
			s.mu.Lock()
			s.demo[m[1]] = m[2]
			s.mu.Unlock()
		}
		if m := servingLine.FindStringSubmatch(line); m != nil {
			// The addresses were chosen by launch; the line confirms them.
			s.mu.Lock()
			s.said = [2]string{"http://" + m[1], "http://" + m[2]}
			s.startedIn, _ = time.ParseDuration(m[3])
			s.mu.Unlock()
			once.Do(func() { close(s.serving) })
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// WaitServing waits for the serving line.
func (s *Service) WaitServing(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.serving:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.said != [2]string{s.Public, s.Admin} {
			return fmt.Errorf("service serves on %s and %s, not on the addresses it was given", s.said[0], s.said[1])
		}
		return nil
	case <-s.exited:
		return fmt.Errorf("service exited before serving: %v (log: %s)", s.exitErr, s.log.Name())
	case <-t.C:
		return fmt.Errorf("service not serving after %s (log: %s)", timeout, s.log.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StartedIn is how long the service says its start took (from its own
// clock, so without process exec and runtime init); 0 before it serves.
func (s *Service) StartedIn() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startedIn
}

// Pid is the service's process id.
func (s *Service) Pid() int { return s.cmd.Process.Pid }

// DemoToken returns the token the embedded default printed for name.
func (s *Service) DemoToken(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.demo[name]
}

// Stop sends SIGTERM and waits for the process to drain and exit; after the
// deadline it is killed.
func (s *Service) Stop(timeout time.Duration) error {
	defer s.log.Close()
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.exited:
		if s.exitErr != nil {
			return fmt.Errorf("service exit: %w", s.exitErr)
		}
		return nil
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("service did not stop within %s; killed", timeout)
	}
}

// startService launches the service and waits until it serves.
func startService(ctx context.Context, bin binaries, env map[string]string, logPath string) (*Service, error) {
	s, err := launch(bin, env, logPath)
	if err != nil {
		return nil, err
	}
	if err := s.WaitServing(ctx, 90*time.Second); err != nil {
		_ = s.Stop(5 * time.Second)
		return nil, err
	}
	return s, nil
}

// mergeEnv returns base with every key of over set to its value.
func mergeEnv(base []string, over map[string]string) []string {
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := over[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range over {
		out = append(out, k+"="+v)
	}
	return out
}

// Backend is where the services verify starts keep their data: the real
// Postgres and Valkey from DATABASE_URL/VALKEY_URL, or the embedded default.
// Each isolated deployment gets its own Postgres schema and Valkey key
// prefix, so verify never touches anyone else's data on a shared server and
// removes its own when done.
type Backend struct {
	DatabaseURL string
	ValkeyURL   string
	mu          sync.Mutex
	schemas     []string
	prefixes    []string
}

// Name is the backend as verify.json reports it.
func (b *Backend) Name() string {
	switch {
	case b.DatabaseURL != "" && b.ValkeyURL != "":
		return "postgres+valkey"
	case b.DatabaseURL != "":
		return "postgres+embedded-valkey"
	case b.ValkeyURL != "":
		return "memory+valkey"
	default:
		return "embedded"
	}
}

// Persistent reports whether data outlives a service process.
func (b *Backend) Persistent() bool { return b.DatabaseURL != "" }

// Isolation is one deployment's slice of the backend, as service env.
type Isolation map[string]string

// Isolate creates a fresh schema (when Postgres is used) and picks a fresh
// key prefix.
func (b *Backend) Isolate(ctx context.Context) (Isolation, error) {
	id := randHex(6)
	// Both always set, empty for the embedded default, so a DATABASE_URL or
	// VALKEY_URL in verify's own environment never leaks into the service.
	env := Isolation{"DATABASE_URL": "", "VALKEY_URL": b.ValkeyURL}
	if b.DatabaseURL != "" {
		schema := "wp_perf_" + id
		u, err := pgschema.Create(ctx, b.DatabaseURL, schema)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		b.schemas = append(b.schemas, schema)
		b.mu.Unlock()
		env["DATABASE_URL"] = u
	}
	env["VALKEY_PREFIX"] = b.NewPrefix()
	return env, nil
}

// NewPrefix returns a fresh Valkey key prefix, removed by Cleanup.
func (b *Backend) NewPrefix() string {
	p := "wpperf" + randHex(6)
	b.mu.Lock()
	b.prefixes = append(b.prefixes, p)
	b.mu.Unlock()
	return p
}

// Cleanup drops every schema and deletes every key verify created. It must
// run after the services using them have stopped.
func (b *Backend) Cleanup(ctx context.Context) error {
	var errs []error
	b.mu.Lock()
	schemas, prefixes := b.schemas, b.prefixes
	b.schemas, b.prefixes = nil, nil
	b.mu.Unlock()
	if len(schemas) > 0 {
		if err := pgschema.Drop(ctx, b.DatabaseURL, schemas...); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		}
	}
	if b.ValkeyURL != "" && len(prefixes) > 0 {
		if err := deleteKeys(ctx, b.ValkeyURL, prefixes); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteKeys removes every key that starts with one of prefixes (SCAN, then
// UNLINK in batches: never a blocking KEYS or a FLUSH on a shared server).
func deleteKeys(ctx context.Context, rawURL string, prefixes []string) error {
	opt, err := vk.ParseURL(strings.Replace(rawURL, "valkey://", "redis://", 1))
	if err != nil {
		return fmt.Errorf("cleanup: parse VALKEY_URL: %w", err)
	}
	opt.DisableCache = true
	c, err := vk.NewClient(opt)
	if err != nil {
		return fmt.Errorf("cleanup: connect to valkey: %w", err)
	}
	defer c.Close()
	for _, p := range prefixes {
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(p+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("cleanup: scan %s*: %w", p, err)
			}
			if len(e.Elements) > 0 {
				if err := c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build()).Error(); err != nil {
					return fmt.Errorf("cleanup: unlink %s*: %w", p, err)
				}
			}
			cursor = e.Cursor
			if cursor == 0 {
				break
			}
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
