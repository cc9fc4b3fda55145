package main

// Building and running the service binary as a separate process.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// builtBinary is the service binary, built once per test process.
var builtBinary struct {
	once sync.Once
	path string
	err  error
}

// binary builds the service binary (once per test process) and returns its
// path. The binary lives in a per-process temporary directory; directories
// left by earlier processes (older than 15 minutes, past the default go test
// timeout) are removed, so only the binaries of recent runs stay behind.
func binary(t *testing.T) string {
	t.Helper()
	builtBinary.once.Do(func() {
		if old, _ := filepath.Glob(filepath.Join(os.TempDir(), "warmpath-sy-bin-*")); len(old) > 0 {
			for _, d := range old {
				if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > 15*time.Minute {
					_ = os.RemoveAll(d)
				}
			}
		}
		dir, err := os.MkdirTemp("", "warmpath-sy-bin-*")
		if err != nil {
			builtBinary.err = fmt.Errorf("temp dir: %w", err)
			return
		}
		path := filepath.Join(dir, "warmpath")
		cmd := exec.Command("go", "build", "-o", path, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			builtBinary.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		builtBinary.path = path
	})
	if builtBinary.err != nil {
		t.Fatalf("build the service binary: %v", builtBinary.err)
	}
	return builtBinary.path
}

// proc is one run of the service binary.
type proc struct {
	cmd         *exec.Cmd
	base, admin string
	stdout      *syncBuffer
	stderr      *syncBuffer
	done        chan struct{} // closed when the process has exited
	exitCode    int
}

// binaryEnv is env for a binary of the test: listeners on free loopback
// ports, warnings only, then the given name, value pairs.
func binaryEnv(env map[string]string, pairs ...string) map[string]string {
	env["HTTP_ADDR"], env["ADMIN_ADDR"], env["LOG_LEVEL"] = "127.0.0.1:0", "127.0.0.1:0", "warn"
	return withEnv(env, pairs...)
}

// withEnv sets env's variables from pairs (name, value, name, value, …) and
// returns env.
func withEnv(env map[string]string, pairs ...string) map[string]string {
	if len(pairs)%2 != 0 {
		panic("withEnv: odd number of arguments")
	}
	for i := 0; i < len(pairs); i += 2 {
		env[pairs[i]] = pairs[i+1]
	}
	return env
}

// startProc starts the binary in dir with exactly env (plus PATH and HOME),
// waits for its "serving" line and for /readyz, and kills it at cleanup if it
// is still running.
func startProc(t *testing.T, bin, dir string, env map[string]string) *proc {
	t.Helper()
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Dir = dir
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode() // -1 when killed by a signal
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("binary stderr (pid %d):\n%s", p.cmd.Process.Pid, tail(p.stderr.String(), 3000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(p.stdout.String()); m != nil {
			p.base, p.admin = "http://"+m[1], "http://"+m[2]
			break
		}
		select {
		case <-p.done:
			t.Fatalf("binary exited (%d) before serving:\nstdout:\n%s\nstderr:\n%s", p.exitCode, p.stdout.String(), tail(p.stderr.String(), 3000))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("binary did not print its addresses; stderr:\n%s", tail(p.stderr.String(), 3000))
		}
	}
	// On failure the cleanup above logs the binary's stderr.
	eventually(t, time.Until(deadline), "the binary to become ready (/readyz 200)", func() bool { return ready(p.base) })
	return p
}

// inst views the process as an instance, for the harness helpers.
func (p *proc) inst() *instance { return &instance{base: p.base, admin: p.admin} }

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(within):
		t.Fatalf("binary did not exit within %s; stderr:\n%s", within, tail(p.stderr.String(), 3000))
		return 0
	}
}
