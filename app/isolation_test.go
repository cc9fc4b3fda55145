package main

// Isolation: whatever user A sends, through any public endpoint, it reads,
// changes, counts and warms only A's data; B's items, usage and warmup
// status are exactly as B left them. (The admin API has its own token:
// TestAdminTokenRequiredOnEveryAdminRoute.)

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIsolationBetweenUsers(t *testing.T) {
	in := start(t, backendEnv(t))
	a := in.newUser(t, "free", nil)
	b := in.newUser(t, "free", nil)
	if r := in.items(t, a.token, []string{"a1"}, nil); r.status != 200 {
		t.Fatalf("a items: %d %s", r.status, r.raw)
	}
	if r := in.items(t, b.token, []string{"b1", "b2"}, nil); r.status != 200 {
		t.Fatalf("b items: %d %s", r.status, r.raw)
	}
	// B is warm and its status settled, so anything that changed it later
	// would show.
	warmUp(t, in, in, b.token)
	_, bStatus := userWarmup(t, in, b.token)
	bUsed := 0.0

	bid := itoa(b.id)
	q := in.base + queryRoute
	cases := []struct {
		name, method, url string
		body              any
		headers           []string
		status            int
		aUsed             float64 // A's usage after the call
		aItems            []any   // what A's set misses of a1, b1, b2 after the call
	}{
		{"query sees only A's set", "POST", q, map[string]any{"items": []string{"a1", "b1", "b2"}}, nil, 200, 1, []any{"b1", "b2"}},
		{"query naming B in the body", "POST", q, json.RawMessage(`{"items":["b1"],"userId":` + bid + `,"user":` + bid + `,"user_id":"` + bid + `"}`), nil, 200, 2, []any{"b1", "b2"}},
		{"query naming B in headers", "POST", q, map[string]any{"items": []string{"b1"}}, []string{"X-User-Id", bid, "X-Forwarded-User", bid}, 200, 3, []any{"b1", "b2"}},
		{"items add changes only A", "POST", in.base + "/api/items", map[string]any{"add": []string{"b1"}}, nil, 200, 3, []any{"b2"}},
		{"items remove of B's item", "POST", in.base + "/api/items", map[string]any{"remove": []string{"b2", "b1"}}, nil, 200, 3, []any{"b1", "b2"}},
		{"items naming B in the body", "POST", in.base + "/api/items", json.RawMessage(`{"add":["x"],"remove":["b1"],"userId":` + bid + `}`), nil, 200, 3, []any{"b1", "b2"}},
		{"warmup post", "POST", in.base + "/api/user/warmup", nil, []string{"X-User-Id", bid}, 202, 3, []any{"b1", "b2"}},
		{"warmup get", "GET", in.base + "/api/user/warmup?userId=" + bid, nil, nil, 200, 3, []any{"b1", "b2"}},
		{"query with B's token prefix", "POST", q, map[string]any{"items": []string{"b1"}}, []string{"Authorization", "Bearer " + b.token[:20]}, 401, 3, []any{"b1", "b2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if raw, ok := body.(json.RawMessage); ok {
				body = []byte(raw)
			}
			r := call(t, tc.method, tc.url, a.token, body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("%d %s, want %d", r.status, r.raw, tc.status)
			}
			if tc.method == "GET" {
				var got struct{ WarmupStatus json.RawMessage }
				if err := json.Unmarshal(r.raw, &got); err != nil || bytes.Equal(got.WarmupStatus, bStatus) {
					t.Fatalf("A was answered B's warmup status (%v): %s", err, r.raw)
				}
			}
			// A: its usage and its set, as its own calls made them.
			ar := in.query(t, a.token, "a1", "b1", "b2")
			if ar.status != 200 {
				t.Fatalf("A's check: %d %s", ar.status, ar.raw)
			}
			if got := ar.body["usage"].(map[string]any)["used"]; got != tc.aUsed+1 {
				t.Errorf("A's usage %v, want %v", got, tc.aUsed+1)
			}
			// The check query counts too; later rows expect one more.
			for i := range cases {
				cases[i].aUsed++
			}
			if d := cmp.Diff(tc.aItems, ar.body["missing"]); d != "" {
				t.Errorf("A's set (-want +got missing):\n%s", d)
			}
			// B: untouched.
			br := in.query(t, b.token, "a1", "b1", "b2")
			bUsed++
			if br.status != 200 || br.body["usage"].(map[string]any)["used"] != bUsed {
				t.Fatalf("B's usage moved: %d %s, want used %v", br.status, br.raw, bUsed)
			}
			if d := cmp.Diff([]any{"a1"}, br.body["missing"]); d != "" {
				t.Fatalf("B's set changed (-want +got missing):\n%s", d)
			}
			if _, now := userWarmup(t, in, b.token); !bytes.Equal(now, bStatus) {
				t.Fatalf("B's warmup status changed:\n%s\nwas\n%s", now, bStatus)
			}
		})
	}
}
