package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	vk "github.com/valkey-io/valkey-go"
)

func TestAttackOnceSendsEveryTargetOnce(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") == "Bearer bad" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	users := []User{{ID: 1, Token: "a"}, {ID: 2, Token: "b"}, {ID: 3, Token: "bad"}}
	run := Attack(context.Background(), AttackSpec{Name: "once", Rate: 200, Workers: 2, Targeter: once(warmupTargets(srv.URL, users))})
	if run.Summary.Requests != 3 {
		t.Fatalf("sent %d requests, want 3 (one per target)", run.Summary.Requests)
	}
	slices.Sort(seen)
	if d := cmp.Diff([]string{"Bearer a", "Bearer b", "Bearer bad"}, seen); d != "" {
		t.Errorf("server saw (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{"200": 2, "503": 1}, run.Summary.StatusCodes); d != "" {
		t.Errorf("status codes (-want +got):\n%s", d)
	}
	if run.Summary.Success != 2.0/3 {
		t.Errorf("success %v, want 2/3", run.Summary.Success)
	}
}

func TestAttackStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Without the context the attack would run for an hour (36,000
	// requests). vegeta's pacer picks at random between a pending tick and
	// the stop signal, so a few requests may still go out.
	run := Attack(ctx, AttackSpec{Name: "cancelled", Rate: 10, Duration: time.Hour, Targeter: rotate(warmupTargets(srv.URL, []User{{Token: "a"}}))})
	if run.Summary.Requests >= 30 {
		t.Errorf("a cancelled attack sent %d requests", run.Summary.Requests)
	}
}

func TestAttackRecordsTransportErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := srv.URL
	srv.Close() // nothing listens there any more
	run := Attack(context.Background(), AttackSpec{Name: "refused", Rate: 100, Targeter: once(warmupTargets(url, []User{{Token: "a"}, {Token: "b"}}))})
	if run.Summary.Requests != 2 || run.Summary.StatusCodes["0"] != 2 || len(run.Summary.Errors) == 0 {
		t.Errorf("summary %+v, want 2 transport errors", run.Summary)
	}
}

func TestRotateCycles(t *testing.T) {
	tr := rotate([]vegeta.Target{{URL: "a"}, {URL: "b"}})
	var got []string
	for range 5 {
		var tg vegeta.Target
		if err := tr(&tg); err != nil {
			t.Fatal(err)
		}
		got = append(got, tg.URL)
	}
	if d := cmp.Diff([]string{"a", "b", "a", "b", "a"}, got); d != "" {
		t.Errorf("rotate (-want +got):\n%s", d)
	}
	if err := rotate(nil)(&vegeta.Target{}); err != vegeta.ErrNoTargets {
		t.Errorf("rotate(nil) = %v, want ErrNoTargets", err)
	}
}

func TestQueryTargets(t *testing.T) {
	users := []User{{ID: 1, Token: "t1"}, {ID: 2, Token: "t2"}}
	tg := queryTargets("http://x", users, 6)
	if len(tg) != 8 {
		t.Fatalf("%d targets, want 4 variants × 2 users", len(tg))
	}
	// The first len(users) targets are one per user (first-query workloads
	// rely on it).
	for i, u := range users {
		if tg[i].Header.Get("Authorization") != "Bearer "+u.Token || tg[i].URL != "http://x"+pathQuery || tg[i].Method != http.MethodPost {
			t.Errorf("target %d = %+v, want user %d's query", i, tg[i], u.ID)
		}
		var body struct{ Items []string }
		if err := json.Unmarshal(tg[i].Body, &body); err != nil || len(body.Items) != 6 {
			t.Errorf("target %d body %s: %v", i, tg[i].Body, err)
		}
		present := 0
		for _, it := range body.Items {
			if strings.HasPrefix(it, "item-") {
				present++
			}
		}
		if present != 3 {
			t.Errorf("target %d asks for %d items of the set, want half of 6", i, present)
		}
	}
}

func TestFloor(t *testing.T) {
	app := newFloor(nil)
	tests := []struct {
		name, body string
		want       int
		checked    int
	}{
		{"query body", `{"items":["a","b","c"]}`, 200, 3},
		{"bad json", `{"items":`, 400, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, pathQuery, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 200 {
				var out struct {
					Missing []string `json:"missing"`
					Checked int      `json:"checked"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Checked != tt.checked || out.Missing == nil {
					t.Errorf("answer %+v (%v), want checked=%d and a missing list", out, err, tt.checked)
				}
			}
		})
	}
}

// TestFloorRoundTrip: the round-trip floor makes exactly one script call per
// answered request (none for a refused body), and answers 503 when Valkey
// fails.
func TestFloorRoundTrip(t *testing.T) {
	srv := miniredis.RunT(t)
	c, err := vk.NewClient(vk.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	app := newFloor(c)
	post := func(body string) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, pathQuery, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(`{"items":["a"]}`); code != 200 {
		t.Fatalf("first query: status %d, want 200", code)
	}
	before := srv.CommandCount()
	for range 3 {
		if code := post(`{"items":["a","b"]}`); code != 200 {
			t.Fatalf("query: status %d, want 200", code)
		}
	}
	if code := post(`{"items":`); code != 400 {
		t.Fatalf("bad body: status %d, want 400", code)
	}
	if n := srv.CommandCount() - before; n != 3 {
		t.Errorf("3 answered queries and a refused body sent %d commands, want 3 (one EVALSHA each)", n)
	}
	srv.Close()
	if code := post(`{"items":["a"]}`); code != 503 {
		t.Errorf("with Valkey down: status %d, want 503", code)
	}
}
