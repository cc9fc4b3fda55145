package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/store/pgtest"
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

// backendEnv returns the environment for a service on real Postgres (a fresh
// schema) and Valkey (a fresh key prefix); the test is skipped without them.
func backendEnv(t *testing.T) map[string]string {
	t.Helper()
	if os.Getenv("DATABASE_URL") == "" || os.Getenv("VALKEY_URL") == "" {
		t.Skip("end-to-end test needs DATABASE_URL and VALKEY_URL (see .ci/run)")
	}
	return map[string]string{
		"DATABASE_URL":  pgtest.NewSchema(t),
		"VALKEY_URL":    os.Getenv("VALKEY_URL"),
		"VALKEY_PREFIX": "wpt" + randHex(6),
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs the service with env (plus port-0 listeners) and waits until it
// serves and /readyz answers 200. The service is stopped at cleanup.
func start(t *testing.T, env map[string]string) *instance {
	t.Helper()
	return startWith(t, env, options{})
}

// startWith is start with test seams (e.g. a span exporter).
func startWith(t *testing.T, env map[string]string, opts options) *instance {
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
			t.Fatalf("service exited before serving: %v\nstderr:\n%s", err, inst.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not start; stderr:\n%s", inst.stderr.String())
		}
	}
	for {
		resp, err := http.Get(inst.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return inst
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service never became ready; stderr:\n%s", inst.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// reply is a decoded HTTP response.
type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (r reply) errCode() string {
	if e, ok := r.body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

// client is what end-to-end tests call the service with. Its transport
// validates every answer of a public listener (status, documented headers,
// body) against openapi.json and fails the test that started the instance
// on a mismatch (see apiValidator in openapi_test.go).
var client = &http.Client{Timeout: 20 * time.Second, Transport: apiValidator{base: &http.Transport{MaxIdleConnsPerHost: 512}}}

// call sends a request; body may be nil, a []byte (sent as is) or a value
// (sent as JSON).
func call(t testing.TB, method, url, token string, body any, headers ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

// user is a provisioned user.
type user struct {
	id      int64
	tokenID int64
	token   string
}

// newUser provisions a user through the admin API, as the perf lab does.
func (in *instance) newUser(t testing.TB, plan string, quota *int64) user {
	t.Helper()
	body := map[string]any{"name": "u-" + randHex(4), "plan": plan}
	if quota != nil {
		body["quota"] = *quota
	}
	r := call(t, "POST", in.admin+"/admin/users", "", body)
	if r.status != 201 {
		t.Fatalf("create user: %d %s", r.status, r.raw)
	}
	return user{id: int64(r.body["id"].(float64)), tokenID: int64(r.body["tokenId"].(float64)), token: r.body["token"].(string)}
}

func (in *instance) query(t testing.TB, token string, items ...string) reply {
	t.Helper()
	return call(t, "POST", in.base+"/api/hasNotEngine-ultra-fast", token, map[string]any{"items": items})
}

func (in *instance) items(t testing.TB, token string, add, remove []string) reply {
	t.Helper()
	return call(t, "POST", in.base+"/api/items", token, map[string]any{"add": add, "remove": remove})
}

// metric returns the sum of a metric's samples whose labels contain every
// given `k="v"` pair, from the admin /metrics endpoint.
func (in *instance) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	r := call(t, "GET", in.admin+"/metrics", "", nil)
	var sum float64
	for _, line := range strings.Split(string(r.raw), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		rest := strings.TrimPrefix(line, name)
		if i := strings.Index(rest, "} "); strings.HasPrefix(rest, "{") && i >= 0 {
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) > 0 {
			fmt.Sscan(fields[0], &v)
		}
		sum += v
	}
	return sum
}

func ptr[T any](v T) *T { return &v }

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
