package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/store/pgtest"
	"github.com/warmpath/warmpath/app/internal/waittest"
)

// syncBuffer is an io.Writer safe for the service and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is one running service, started through run.
type instance struct {
	base, admin string
	stdout      *syncBuffer
	stderr      *syncBuffer
	stop        func() error
}

var servingRE = regexp.MustCompile(`serving http://(\S+) admin http://(\S+)`)

// backendEnv returns the environment of a service on this run's backends:
// real Postgres (a fresh schema) when DATABASE_URL is set and real Valkey (a
// fresh key prefix) when VALKEY_URL is set; each one left unset is the
// embedded default (in-memory store, in-process Valkey).
func backendEnv(t testing.TB) map[string]string {
	t.Helper()
	env := map[string]string{}
	if os.Getenv("DATABASE_URL") != "" {
		env["DATABASE_URL"] = pgtest.NewSchema(t)
	}
	if url := os.Getenv("VALKEY_URL"); url != "" {
		env["VALKEY_URL"] = url
		env["VALKEY_PREFIX"] = "wpt" + randHex(6)
	}
	return env
}

// realBackendEnv is backendEnv for a test that needs what only real servers
// give (a fault proxy in front of them, data that outlives a process, two
// instances sharing them); why says what, in one line. Without
// DATABASE_URL and VALKEY_URL the test is skipped.
func realBackendEnv(t *testing.T, why string) map[string]string {
	t.Helper()
	needReal(t, why)
	return backendEnv(t)
}

// needReal skips t unless DATABASE_URL and VALKEY_URL name real servers; why
// says what the test needs of them. A test whose subtests all need them
// calls it first, so it is reported skipped rather than passed.
func needReal(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("DATABASE_URL") == "" || os.Getenv("VALKEY_URL") == "" {
		t.Skip("needs DATABASE_URL and VALKEY_URL (see .ci/run): " + why)
	}
}

// onPostgres reports whether env's store is a real Postgres (pgx spans, pool
// metrics, rows a test can read directly).
func onPostgres(env map[string]string) bool { return env["DATABASE_URL"] != "" }

// shared reports whether env's backends are real servers that several
// instances can share (the embedded ones live and die with one instance).
func shared(env map[string]string) bool {
	return env["DATABASE_URL"] != "" && env["VALKEY_URL"] != ""
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs the service with env (plus port-0 listeners) and waits until it
// serves and /readyz answers 200. The service is stopped at cleanup.
func start(t testing.TB, env map[string]string) *instance {
	t.Helper()
	return startWith(t, env, options{})
}

// startWith is start with test seams (e.g. a span exporter).
func startWith(t testing.TB, env map[string]string, opts options) *instance {
	t.Helper()
	full := map[string]string{
		"HTTP_ADDR":           "127.0.0.1:0",
		"ADMIN_ADDR":          "127.0.0.1:0",
		"LOG_LEVEL":           "warn",
		"SYSTEM_WARMUP_DELAY": "10ms",
		"SHUTDOWN_TIMEOUT":    "5s",
	}
	if lvl := os.Getenv("WARMPATH_TEST_LOGS"); lvl != "" {
		full["LOG_LEVEL"] = lvl
	}
	for k, v := range env {
		full[k] = v
	}
	if _, set := full["VALKEY_TIMEOUT"]; !set && full["VALKEY_URL"] == "" {
		// The embedded default's server shares the test binary's CPU: under
		// -race with every package testing at once, a call can be starved
		// past the default 500 ms, and the request then gets a (correct)
		// 503 or a fail-open answer instead of the one its test asserts.
		// Tests of timeouts run on real servers behind a fault proxy and
		// set their own.
		full["VALKEY_TIMEOUT"] = "5s"
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, []string{"warmpath"}, func(k string) string { return full[k] }, inst.stdout, inst.stderr, opts)
	}()
	var once sync.Once
	var stopErr error
	inst.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = fmt.Errorf("service did not stop within 15s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		stopStart := time.Now()
		defer func() { t.Logf("stop took %s", time.Since(stopStart)) }()
		if err := inst.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() || os.Getenv("WARMPATH_TEST_LOGS") != "" {
			t.Logf("service stderr:\n%s", tail(inst.stderr.String(), 4000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(inst.stdout.String()); m != nil {
			inst.base, inst.admin = "http://"+m[1], "http://"+m[2]
			checkPublicAPI(t, m[1]) // every answer of this listener through client is checked against openapi.json
			break
		}
		select {
		case err := <-done:
			done <- err // for stop, which the cleanup calls
			t.Fatalf("service exited before serving: %v\nstderr:\n%s", err, inst.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not start; stderr:\n%s", inst.stderr.String())
		}
	}
	// On failure the cleanup above logs the service's stderr.
	eventually(t, time.Until(deadline), "the service to become ready (/readyz 200)", func() bool { return ready(inst.base) })
	return inst
}

// ready reports whether base/readyz answers 200.
func ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// startPair starts two instances on env's backends when they can be shared
// (real servers); on the embedded default, whose backends live inside one
// instance, it starts one and returns it twice: the test's assertions then
// hold for one instance, and the cross-instance part needs DATABASE_URL and
// VALKEY_URL.
func startPair(t *testing.T, env map[string]string) (a, b *instance) {
	t.Helper()
	a = start(t, env)
	if !shared(env) {
		t.Log("embedded backends: one instance plays both (set DATABASE_URL and VALKEY_URL for two)")
		return a, a
	}
	return a, start(t, env)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	waittest.Until(t, within, what, cond)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
