package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
)

func TestReadinessRule(t *testing.T) {
	ok := func(n string) checkResult { return checkResult{Name: n, OK: true, State: CheckOK} }
	failed := func(n string, s CheckState) checkResult { return checkResult{Name: n, State: s} }
	for _, tc := range []struct {
		name    string
		results []checkResult
		want    CheckState
	}{
		{"no checks", nil, CheckOK},
		{"all ok", []checkResult{ok("store"), ok("valkey")}, CheckOK},
		{"valkey down, fail open", []checkResult{ok("store"), failed("valkey", CheckDegraded)}, CheckDegraded},
		{"valkey down, fail closed", []checkResult{ok("store"), failed("valkey", CheckDown)}, CheckDown},
		{"store down, valkey up: warm users answered", []checkResult{failed("store", CheckDegraded), ok("valkey")}, CheckDegraded},
		{"both down: nothing to answer from", []checkResult{failed("store", CheckDegraded), failed("valkey", CheckDegraded)}, CheckDown},
		{"both down, fail closed", []checkResult{failed("store", CheckDegraded), failed("valkey", CheckDown)}, CheckDown},
		{"a lone degraded check failing", []checkResult{failed("only", CheckDegraded)}, CheckDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readiness(tc.results); got != tc.want {
				t.Fatalf("readiness = %q, want %q", got, tc.want)
			}
		})
	}
}

func readyServer(t *testing.T, checks ...Check) *Public {
	t.Helper()
	return testServer(t, Config{
		Metrics: noopMetrics(t),
		Auth:    fakeAuth{}, Query: &fakeQuery{}, Items: fakeItems{}, Warmup: fakeSystem{}, Checks: checks,
	})
}

type readyzBody struct {
	Status   string `json:"status"`
	State    string `json:"state"`
	Draining bool   `json:"draining"`
	Checks   []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		State string `json:"state"`
		Error string `json:"error"`
	} `json:"checks"`
	Warmup any `json:"warmup"`
}

func getReadyz(t *testing.T, pub *Public) (int, string, readyzBody) {
	t.Helper()
	resp, err := pub.App.Test(httptest.NewRequest("GET", "/readyz?verbose", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b readyzBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

func TestReadyz(t *testing.T) {
	up := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	for _, tc := range []struct {
		name          string
		store, valkey func(context.Context) error
		valkeyFailure CheckState
		status        int
		state         string
		checkStates   [2]string
	}{
		{"all up", up, up, CheckDegraded, 200, "ok", [2]string{"ok", "ok"}},
		{"valkey down, open", up, down, CheckDegraded, 200, "degraded", [2]string{"ok", "degraded"}},
		{"valkey down, closed", up, down, CheckDown, 503, "down", [2]string{"ok", "down"}},
		{"store down", down, up, CheckDegraded, 200, "degraded", [2]string{"degraded", "ok"}},
		{"both down", down, down, CheckDegraded, 503, "down", [2]string{"degraded", "degraded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := readyServer(t,
				Check{Name: "store", Run: tc.store, Failure: CheckDegraded},
				Check{Name: "valkey", Run: tc.valkey, Failure: tc.valkeyFailure})
			code, retry, b := getReadyz(t, pub)
			if code != tc.status || b.State != tc.state {
				t.Fatalf("got %d %q, want %d %q (%+v)", code, b.State, tc.status, tc.state, b)
			}
			if wantStatus := map[int]string{200: "ready", 503: "unavailable"}[code]; b.Status != wantStatus {
				t.Fatalf("status %q, want %q", b.Status, wantStatus)
			}
			if (code == 503) != (retry != "") {
				t.Fatalf("Retry-After %q on a %d", retry, code)
			}
			if len(b.Checks) != 2 || b.Checks[0].Name != "store" || b.Checks[1].Name != "valkey" {
				t.Fatalf("checks %+v", b.Checks)
			}
			for i, c := range b.Checks {
				if c.State != tc.checkStates[i] || c.OK != (c.State == "ok") || (c.Error != "") == c.OK {
					t.Fatalf("check %+v, want state %q", c, tc.checkStates[i])
				}
			}
			if b.Warmup == nil {
				t.Fatal("verbose readyz must report warmup")
			}
		})
	}
	t.Run("an unset Failure means down", func(t *testing.T) {
		code, _, b := getReadyz(t, readyServer(t, Check{Name: "x", Run: up}, Check{Name: "y", Run: down}))
		if code != 503 || b.Checks[1].State != "down" {
			t.Fatalf("got %d %+v", code, b)
		}
	})
}

func TestReadyzIs503OnceShutdownHasBegun(t *testing.T) {
	pub := readyServer(t, Check{Name: "store", Run: func(context.Context) error { return nil }})
	if code, _, _ := getReadyz(t, pub); code != 200 {
		t.Fatalf("before shutdown: %d", code)
	}
	// Shutdown sets the flag before it stops anything; App.Test serves the
	// request in process, so the answer is observable after it.
	if err := pub.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, retry, b := getReadyz(t, pub)
	if code != 503 || !b.Draining || b.Status != "unavailable" || retry == "" {
		t.Fatalf("while draining: %d %+v Retry-After=%q", code, b, retry)
	}
	if b.State != "ok" {
		t.Fatalf("the checks still pass: state %q", b.State)
	}
}
