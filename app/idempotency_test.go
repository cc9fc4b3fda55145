package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// keyedQuery sends a metered query with an Idempotency-Key.
func (in *instance) keyedQuery(t testing.TB, token, key string, items ...string) reply {
	t.Helper()
	return call(t, "POST", in.base+queryRoute, token, map[string]any{"items": items}, "Idempotency-Key", key)
}

func usedOf(t testing.TB, r reply) float64 {
	t.Helper()
	u, ok := r.body["usage"].(map[string]any)
	if !ok {
		t.Fatalf("no usage in %d %s", r.status, r.raw)
	}
	return u["used"].(float64)
}

func TestIdempotencyKeyQuery(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	in.items(t, u.token, []string{"a"}, nil)

	first := in.keyedQuery(t, u.token, "order-1", "a", "b")
	if first.status != 200 || usedOf(t, first) != 1 || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %s (replayed %q)", first.status, first.raw, first.header.Get("Idempotent-Replayed"))
	}
	// The set changes; a repeat still gets the first answer, uncounted.
	in.items(t, u.token, []string{"b"}, nil)
	for range 3 {
		again := in.keyedQuery(t, u.token, "order-1", "a", "b")
		if again.status != 200 || !bytes.Equal(again.raw, first.raw) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("repeat: %d %s (replayed %q), want the first answer %s", again.status, again.raw, again.header.Get("Idempotent-Replayed"), first.raw)
		}
		if again.header.Get("RateLimit") == "" {
			t.Fatalf("a replay carries the quota headers: %v", again.header)
		}
	}
	// The same key with another body.
	if r := in.keyedQuery(t, u.token, "order-1", "a"); r.status != 422 || r.errCode() != "idempotency_key_reused" {
		t.Fatalf("reused key: %d %s, want 422 idempotency_key_reused", r.status, r.raw)
	}
	// The same key on the other endpoint is another request too.
	r := call(t, "POST", in.base+"/api/items", u.token, map[string]any{"items": []string{"a", "b"}}, "Idempotency-Key", "order-1")
	if r.status != 400 && r.status != 422 {
		t.Fatalf("key of a query on /api/items: %d %s, want a 4xx", r.status, r.raw)
	}
	// Another key counts; no key counts.
	if r := in.keyedQuery(t, u.token, "order-2", "a", "b"); r.status != 200 || usedOf(t, r) != 2 {
		t.Fatalf("new key: %d %s, want used 2", r.status, r.raw)
	}
	if r := in.query(t, u.token, "a"); r.status != 200 || usedOf(t, r) != 3 {
		t.Fatalf("no key: %d %s, want used 3", r.status, r.raw)
	}
	// Keys are per user: user B's "order-1" is B's own.
	b := in.newUser(t, "free", nil)
	if r := in.keyedQuery(t, b.token, "order-1", "a", "b"); r.status != 200 || usedOf(t, r) != 1 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("B's order-1: %d %s, want B's own first answer", r.status, r.raw)
	}
	if got := in.metric(t, "warmpath_idempotent_replays_total"); got != 3 {
		t.Fatalf("warmpath_idempotent_replays_total = %v, want 3", got)
	}
}

// TestKeyedAnswerRendersLikeUnkeyed: a keyed answer is stored as rendered,
// and must read like the same answer without a key (one JSON encoder:
// "<", ">" and "&" are not escaped by one path and kept by the other).
func TestKeyedAnswerRendersLikeUnkeyed(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	const item = "<a&b>"
	for _, r := range []reply{in.keyedQuery(t, u.token, "k-1", item), in.query(t, u.token, item)} {
		if r.status != 200 || !bytes.Contains(r.raw, []byte(`"missing":["`+item+`"]`)) {
			t.Fatalf("%d %s, want the item rendered as sent: \"missing\":[\"%s\"]", r.status, r.raw, item)
		}
	}
}

func TestIdempotencyKeyItems(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	post := func(key string, add ...string) reply {
		return call(t, "POST", in.base+"/api/items", u.token, map[string]any{"add": add}, "Idempotency-Key", key)
	}
	first := post("add-1", "x", "y")
	if first.status != 200 || first.body["added"] != 2.0 {
		t.Fatalf("first: %d %s", first.status, first.raw)
	}
	again := post("add-1", "x", "y")
	if again.status != 200 || !bytes.Equal(again.raw, first.raw) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %s, want the first answer %s replayed", again.status, again.raw, first.raw)
	}
	if r := post("add-1", "z"); r.status != 422 || r.errCode() != "idempotency_key_reused" {
		t.Fatalf("reused: %d %s", r.status, r.raw)
	}
	// A request that failed does not hold its key: a corrected retry with
	// the same key runs.
	if r := post("add-2", strings.Repeat("x", 5000)); r.status != 400 {
		t.Fatalf("bad item: %d %s, want 400", r.status, r.raw)
	}
	if r := post("add-2", "z"); r.status != 200 || r.body["added"] != 1.0 {
		t.Fatalf("retry after a 400: %d %s", r.status, r.raw)
	}
}

func TestIdempotencyKeyInvalid(t *testing.T) {
	in := start(t, backendEnv(t))
	u := in.newUser(t, "free", nil)
	for name, key := range map[string]string{
		"too long":  strings.Repeat("k", 256),
		"non-ASCII": "clé",
	} {
		r := in.keyedQuery(t, u.token, key, "a")
		if r.status != 400 || r.errCode() != "invalid_idempotency_key" {
			t.Errorf("%s: %d %s, want 400 invalid_idempotency_key", name, r.status, r.raw)
		}
	}
	// Bytes net/http will not send: written on a raw connection.
	for name, key := range map[string]string{"empty": "", "tab": "a\tb", "DEL": "a\x7fb"} {
		body := `{"items":["a"]}`
		conn, err := net.Dial("tcp", strings.TrimPrefix(in.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nIdempotency-Key: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", queryRoute, u.token, key, len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(raw), `"invalid_idempotency_key"`) {
			t.Errorf("%s: %d %s, want 400 invalid_idempotency_key", name, resp.StatusCode, raw)
		}
	}
	if r := in.keyedQuery(t, u.token, strings.Repeat("k", 255), "a"); r.status != 200 || usedOf(t, r) != 1 {
		t.Fatalf("a 255-character key: %d %s, want 200 and the first count", r.status, r.raw)
	}
}
