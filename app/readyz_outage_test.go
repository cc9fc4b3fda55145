package main

// /readyz through real backend outages (toxiproxy, as outage_test.go): 200
// while the instance answers, degraded included; 503 when it cannot answer.
// Every top-level identifier here starts with "ry".

import (
	"testing"
	"time"
)

// ryCheckState is the state /readyz?verbose gives the named check.
func ryCheckState(r reply, name string) any {
	checks, _ := r.body["checks"].([]any)
	for _, c := range checks {
		if m, _ := c.(map[string]any); m["name"] == name {
			return m["state"]
		}
	}
	return nil
}

// ryWaitReadyz waits until /readyz?verbose answers status with the named
// check in checkState, and returns that answer.
func ryWaitReadyz(t *testing.T, in *instance, status int, check, checkState string) reply {
	t.Helper()
	var last reply
	eventually(t, 15*time.Second, "readyz "+check+" "+checkState, func() bool {
		last = call(t, "GET", in.base+"/readyz?verbose", "", nil)
		return last.status == status && ryCheckState(last, check) == checkState
	})
	return last
}

func TestReadyzValkeyCut(t *testing.T) {
	needReal(t, "toxiproxy faults between the service and a real Valkey")
	for _, tc := range []struct {
		mode, checkState, state string
		readyz, query           int
	}{
		{"open", "degraded", "degraded", 200, 200},
		{"closed", "down", "down", 503, 503},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			env, px, _ := valkeyProxyEnv(t, tc.mode)
			in := start(t, env)
			users := warmUsers(t, in, 1)
			if r := ryWaitReadyz(t, in, 200, "valkey", "ok"); r.body["state"] != "ok" {
				t.Fatalf("before the cut: %s", r.raw)
			}

			px.Stop()
			r := ryWaitReadyz(t, in, tc.readyz, "valkey", tc.checkState)
			if r.body["state"] != tc.state || ryCheckState(r, "store") != "ok" {
				t.Fatalf("during the cut: %s", r.raw)
			}
			if tc.readyz == 503 && r.header.Get("Retry-After") == "" {
				t.Fatalf("a 503 readyz without Retry-After: %s", r.raw)
			}
			// The plain probe (no ?verbose) a load balancer uses says the same.
			if p := call(t, "GET", in.base+"/readyz", "", nil); p.status != tc.readyz {
				t.Fatalf("plain readyz during the cut: %d %s", p.status, p.raw)
			}
			if q := in.query(t, users[0].token, "a"); q.status != tc.query {
				t.Fatalf("query during the cut: %d, want %d: %s", q.status, tc.query, q.raw)
			}

			restoreProxy(t, px)
			if r := ryWaitReadyz(t, in, 200, "valkey", "ok"); r.body["state"] != "ok" {
				t.Fatalf("after restore: %s", r.raw)
			}
		})
	}
}

// Postgres cut with Valkey up: warm users are still answered (from Valkey),
// so the instance stays in the load balancer, degraded.
func TestReadyzPostgresCut(t *testing.T) {
	env, px, _ := pgProxyEnv(t)
	in := start(t, env)
	users := warmUsers(t, in, 1)

	px.Stop()
	r := ryWaitReadyz(t, in, 200, "store", "degraded")
	if r.body["state"] != "degraded" || ryCheckState(r, "valkey") != "ok" {
		t.Fatalf("during the cut: %s", r.raw)
	}
	if q := in.query(t, users[0].token, "a"); q.status != 200 {
		t.Fatalf("warm query during the Postgres cut: %d %s", q.status, q.raw)
	}

	restoreProxy(t, px)
	ryWaitReadyz(t, in, 200, "store", "ok")
}
