package valkey_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	vk "github.com/valkey-io/valkey-go"

	"github.com/warmpath/warmpath/app/internal/valkey"
)

// The embedded server runs every script in one shared Lua state (see
// third_party/miniredis/PATCH.md). These tests pin what the service relies
// on: many scripts in a row, failed ones among them, from many connections,
// keep the semantics of a fresh state per script.

// onEmbedded is a raw client on a fresh embedded server (StartEmbedded),
// over its in-process connections as the service's, and the server.
func onEmbedded(t *testing.T) (vk.Client, *valkey.Embedded) {
	t.Helper()
	e, err := valkey.StartEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return dialEmbedded(t, e), e
}

// dialEmbedded is a client (connections of its own) on e.
func dialEmbedded(t *testing.T, e *valkey.Embedded) vk.Client {
	t.Helper()
	c, err := vk.NewClient(vk.ClientOption{
		InitAddress: []string{strings.TrimPrefix(e.URL, "redis://")},
		DialCtxFn: func(ctx context.Context, _ string, _ *net.Dialer, _ *tls.Config) (net.Conn, error) {
			return e.Dial(ctx)
		},
		DisableCache: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// eval runs EVAL (or cmd: EVAL_RO, EVALSHA...) of script with keys and argv.
func eval(t *testing.T, c vk.Client, cmd, script string, keys []string, argv ...string) vk.ValkeyResult {
	t.Helper()
	args := append([]string{script, fmt.Sprint(len(keys))}, keys...)
	return c.Do(t.Context(), c.B().Arbitrary(cmd).Args(append(args, argv...)...).Build())
}

// evalStrings is eval's reply as strings (an array; nil members as "<nil>").
func evalStrings(t *testing.T, c vk.Client, script string, keys []string, argv ...string) []string {
	t.Helper()
	msgs, err := eval(t, c, "EVAL", script, keys, argv...).ToArray()
	if err != nil {
		t.Fatalf("EVAL %q: %v", script, err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		if m.IsNil() {
			out[i] = "<nil>"
			continue
		}
		if out[i], err = m.ToString(); err != nil {
			n, err := m.AsInt64()
			if err != nil {
				t.Fatalf("EVAL %q: reply %d: %v", script, i, err)
			}
			out[i] = fmt.Sprint(n)
		}
	}
	return out
}

// wantErr checks that r is a script error containing want.
func wantErr(t *testing.T, r vk.ValkeyResult, want string) {
	t.Helper()
	err := r.Error()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want one containing %q", err, want)
	}
}

func TestEmbeddedScriptsKeysAndArgvPerCall(t *testing.T) {
	c, _ := onEmbedded(t)
	const s = `return {#KEYS, #ARGV, tostring(KEYS[1]), tostring(KEYS[2]), tostring(ARGV[1])}`
	for _, tc := range []struct {
		keys, argv []string
		want       []string
	}{
		{[]string{"k1", "k2"}, []string{"a1", "a2", "a3"}, []string{"2", "3", "k1", "k2", "a1"}},
		{[]string{"k3"}, nil, []string{"1", "0", "k3", "nil", "nil"}},
		{nil, nil, []string{"0", "0", "nil", "nil", "nil"}},
		{nil, []string{"a4"}, []string{"0", "1", "nil", "nil", "a4"}},
	} {
		if diff := cmp.Diff(tc.want, evalStrings(t, c, s, tc.keys, tc.argv...)); diff != "" {
			t.Errorf("keys %v argv %v (-want +got):\n%s", tc.keys, tc.argv, diff)
		}
	}
	// A script may change its KEYS and ARGV tables; the next gets its own.
	eval(t, c, "EVAL", `KEYS[1] = 'changed'; ARGV[5] = 'extra'; return 1`, []string{"k1"}, "a1")
	if diff := cmp.Diff([]string{"1", "1", "k9", "nil", "a9"}, evalStrings(t, c, s, []string{"k9"}, "a9")); diff != "" {
		t.Errorf("after a script changed KEYS/ARGV (-want +got):\n%s", diff)
	}
}

func TestEmbeddedScriptsReplyPerCall(t *testing.T) {
	c, _ := onEmbedded(t)
	for i := range 5 {
		want := fmt.Sprint("reply-", i)
		if got, err := eval(t, c, "EVAL", `return ARGV[1]`, nil, want).ToString(); err != nil || got != want {
			t.Fatalf("run %d: %q, %v; want %q", i, got, err, want)
		}
	}
	// A script that returns nothing answers nil, not an earlier reply.
	if err := eval(t, c, "EVAL", `local x = 1`, nil).Error(); !isNil(err) {
		t.Fatalf("a script without a return: err = %v, want nil", err)
	}
	// Nor after one that failed with values on the stack.
	wantErr(t, eval(t, c, "EVAL", `local a, b = 'x', 'y'; error('boom')`, nil), "boom")
	if err := eval(t, c, "EVAL", `local x = 1`, nil).Error(); !isNil(err) {
		t.Fatalf("after a failed script: err = %v, want nil", err)
	}
}

func TestEmbeddedScriptsAfterErrors(t *testing.T) {
	c, _ := onEmbedded(t)
	ok := func(t *testing.T) {
		t.Helper()
		got := evalStrings(t, c, `redis.call('INCR', KEYS[1]); return {redis.call('GET', KEYS[1]), ARGV[1]}`, []string{"n"}, "ok")
		if len(got) != 2 || got[1] != "ok" {
			t.Fatalf("the next script = %v", got)
		}
	}
	for _, tc := range []struct{ name, script, want string }{
		{"redis.call of an unknown command", `redis.call('SET', KEYS[1], 'a'); redis.call('NOSUCHCMD'); return 1`, "Unknown Redis command"},
		{"redis.call error reply", `redis.call('SET', KEYS[1], 'a'); return redis.call('INCR', KEYS[1])`, "not an integer"},
		{"runtime error", `local t = nil; return t.x`, "attempt to index"},
		{"error()", `error('boom')`, "boom"},
		{"error with a table value", `error({err = 'custom'})`, ""},
		{"compile error", `return (`, "Error compiling script"},
		{"error inside a coroutine", `local co = coroutine.create(function() error('in co') end); local ok, e = coroutine.resume(co); error(e)`, "in co"},
		{"deep recursion", `local function f(n) return f(n + 1) + 1 end; return f(1)`, "stack overflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, eval(t, c, "EVAL", tc.script, []string{"s"}), tc.want)
			ok(t)
			sha, err := c.Do(t.Context(), c.B().ScriptLoad().Script(tc.script).Build()).ToString()
			if err != nil {
				return // a compile error: refused by SCRIPT LOAD already
			}
			wantErr(t, eval(t, c, "EVALSHA", sha, []string{"s"}), tc.want)
			ok(t)
		})
	}
	// Writes made before a failure stand, as on Redis (no rollback).
	if got, err := c.Do(t.Context(), c.B().Get().Key("s").Build()).ToString(); err != nil || got != "a" {
		t.Fatalf("GET s = %q, %v; want a", got, err)
	}
	// A pcall'd error is a value, not a failure.
	got := evalStrings(t, c, `local r = redis.pcall('INCR', KEYS[1]); return {type(r), tostring(r.err ~= nil)}`, []string{"s"})
	if diff := cmp.Diff([]string{"table", "true"}, got); diff != "" {
		t.Errorf("pcall (-want +got):\n%s", diff)
	}
}

func TestEmbeddedScriptsGlobals(t *testing.T) {
	c, _ := onEmbedded(t)
	for range 2 { // refused again: the first refusal left nothing behind
		wantErr(t, eval(t, c, "EVAL", `x = 1; return 1`, nil), "Script attempted to create global variable 'x'")
		wantErr(t, eval(t, c, "EVAL", `return x`, nil), "Script attempted to access nonexistent global variable 'x'")
	}
	// Assigning an existing global is allowed (as upstream miniredis), but
	// for that script only: the next one sees the globals as they were.
	for _, s := range []string{
		`redis = nil; return 1`,
		`redis.call = function() return 'fake' end; return 1`,
		`tonumber = nil; return 1`,
		`string.format = nil; return 1`,
		`setmetatable(_G, nil); return 1`,
	} {
		if err := eval(t, c, "EVAL", s, nil).Error(); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		got := evalStrings(t, c, `return {redis.call('PING'), tostring(tonumber('7')), string.format('%d', 8)}`, nil)
		if diff := cmp.Diff([]string{"PONG", "7", "8"}, got); diff != "" {
			t.Errorf("after %s (-want +got):\n%s", s, diff)
		}
		wantErr(t, eval(t, c, "EVAL", `y = 1; return 1`, nil), "Script attempted to create global variable 'y'")
	}
	// cjson and the os module stay usable.
	got := evalStrings(t, c, `return {cjson.encode({a = 1}), tostring(os.clock() > 0)}`, nil)
	if diff := cmp.Diff([]string{`{"a":1}`, "true"}, got); diff != "" {
		t.Errorf("cjson/os (-want +got):\n%s", diff)
	}
}

func TestEmbeddedScriptsReadOnly(t *testing.T) {
	c, _ := onEmbedded(t)
	const write = `return redis.call('SET', KEYS[1], 'x')`
	for range 2 {
		wantErr(t, eval(t, c, "EVAL_RO", write, []string{"k"}), "Write commands are not allowed in read-only scripts")
		got := evalStrings(t, c, `local r = redis.pcall('SET', KEYS[1], 'x'); return {tostring(r.err)}`, []string{"k"})
		if got[0] != "nil" {
			t.Fatalf("EVAL after EVAL_RO: pcall SET = %v, want no error", got)
		}
		if err := eval(t, c, "EVAL", write, []string{"k"}).Error(); err != nil {
			t.Fatalf("EVAL after EVAL_RO: %v", err)
		}
		ro, err := c.Do(t.Context(), c.B().Arbitrary("EVAL_RO").Args(`local r = redis.pcall('SET', KEYS[1], 'y'); return r.err`, "1", "k").Build()).ToString()
		if err != nil || !strings.Contains(ro, "Write commands are not allowed") {
			t.Fatalf("EVAL_RO pcall SET = %q, %v", ro, err)
		}
		if got, err := eval(t, c, "EVAL_RO", `return redis.call('GET', KEYS[1])`, []string{"k"}).ToString(); err != nil || got != "x" {
			t.Fatalf("EVAL_RO GET = %q, %v", got, err)
		}
	}
	// EVALSHA_RO of a loaded script too.
	sha, err := c.Do(t.Context(), c.B().ScriptLoad().Script(write).Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, eval(t, c, "EVALSHA_RO", sha, []string{"k"}), "Write commands are not allowed in read-only scripts")
	if err := eval(t, c, "EVALSHA", sha, []string{"k"}).Error(); err != nil {
		t.Fatalf("EVALSHA after EVALSHA_RO: %v", err)
	}
}

// A SELECT inside a script is for that run only, as on Redis: the next
// script starts in the caller's database.
func TestEmbeddedScriptsSelectPerRun(t *testing.T) {
	c, _ := onEmbedded(t)
	if err := eval(t, c, "EVAL", `redis.call('SELECT', 1); return redis.call('SET', KEYS[1], 'db1')`, []string{"k"}).Error(); err != nil {
		t.Fatal(err)
	}
	if err := eval(t, c, "EVAL", `return redis.call('GET', KEYS[1])`, []string{"k"}).Error(); !isNil(err) {
		t.Fatalf("GET k in the next script: err = %v, want nil (db 0)", err)
	}
	got, err := eval(t, c, "EVAL", `redis.call('SELECT', 1); return redis.call('GET', KEYS[1])`, []string{"k"}).ToString()
	if err != nil || got != "db1" {
		t.Fatalf("GET k in db 1 = %q, %v", got, err)
	}
}

func TestEmbeddedScriptsConcurrent(t *testing.T) {
	c, e := onEmbedded(t)
	const (
		workers = 16
		each    = 100
		incr    = `redis.call('INCR', KEYS[2]); return redis.call('INCR', KEYS[1])`
	)
	sha, err := c.Do(t.Context(), c.B().ScriptLoad().Script(incr).Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		// A connection each: the server runs them on goroutines of their own.
		wc := dialEmbedded(t, e)
		wg.Go(func() {
			own := fmt.Sprint("own-", w)
			for i := range each {
				cmd := "EVALSHA"
				script := sha
				if i%2 == 1 {
					cmd, script = "EVAL", incr
				}
				n, err := wc.Do(t.Context(), wc.B().Arbitrary(cmd).Args(script, "2", own, "total").Build()).AsInt64()
				if err != nil {
					errs <- fmt.Errorf("worker %d run %d: %w", w, i, err)
					return
				}
				if n != int64(i+1) {
					errs <- fmt.Errorf("worker %d run %d: own count %d, want %d", w, i, n, i+1)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total, err := c.Do(t.Context(), c.B().Get().Key("total").Build()).AsInt64()
	if err != nil || total != workers*each {
		t.Fatalf("total = %d, %v; want %d", total, err, workers*each)
	}
}

func TestEmbeddedScriptsInMultiExec(t *testing.T) {
	c, _ := onEmbedded(t)
	const incr = `return redis.call('INCRBY', KEYS[1], ARGV[1])`
	sha, err := c.Do(t.Context(), c.B().ScriptLoad().Script(incr).Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		err := c.Dedicated(func(d vk.DedicatedClient) error {
			res := d.DoMulti(t.Context(),
				d.B().Multi().Build(),
				d.B().Arbitrary("EVAL").Args(incr, "1", "m", "1").Build(),
				d.B().Arbitrary("EVAL").Args(`error('in exec')`, "0").Build(),
				d.B().Arbitrary("EVALSHA").Args(sha, "1", "m", "10").Build(),
				d.B().Arbitrary("EVAL_RO").Args(`return redis.call('GET', KEYS[1])`, "1", "m").Build(),
				d.B().Exec().Build(),
			)
			exec, err := res[len(res)-1].ToArray()
			if err != nil {
				return err
			}
			if len(exec) != 4 {
				return fmt.Errorf("EXEC: %d replies, want 4", len(exec))
			}
			a, err := exec[0].AsInt64()
			if err != nil {
				return err
			}
			if err := exec[1].Error(); err == nil || !strings.Contains(err.Error(), "in exec") {
				return fmt.Errorf("the failing script in EXEC: %v", err)
			}
			b, err := exec[2].AsInt64()
			if err != nil {
				return err
			}
			g, err := exec[3].ToString()
			if err != nil {
				return err
			}
			if want := fmt.Sprint(11 * (round + 1)); fmt.Sprint(b) != want || g != want || a != int64(11*round+1) {
				return fmt.Errorf("EXEC = %d, %d, %q; want %d, %s, %s", a, b, g, 11*round+1, want, want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// SCRIPT FLUSH starts the scripts afresh, as Redis resets its interpreter:
// even a global made with rawset (which the shared state does not undo by
// itself) is gone.
func TestEmbeddedScriptFlushResetsState(t *testing.T) {
	c, _ := onEmbedded(t)
	if err := eval(t, c, "EVAL", `rawset(_G, 'made', 'yes'); return 1`, nil).Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(t.Context(), c.B().ScriptFlush().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, eval(t, c, "EVAL", `return made`, nil), "nonexistent global variable 'made'")
}
