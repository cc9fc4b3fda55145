package main

// HTTP calls to a running instance: the validating client, the public API, warmup and sync status.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/warmpath/warmpath/app/internal/usagesync"
	"github.com/warmpath/warmpath/app/internal/warmup"
)

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

// wantMissing fails the test unless r is a 200 whose missing items are want
// (at least one); what names the request.
func (r reply) wantMissing(t testing.TB, what string, want ...any) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("%s: %d %s", what, r.status, r.raw)
	}
	if d := cmp.Diff(want, r.body["missing"]); d != "" {
		t.Fatalf("%s: missing (-want +got):\n%s", what, d)
	}
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

// queryRequest is a metered query of token with a raw JSON body, plus the
// given header name, value pairs (for load loops that count their own
// outcomes rather than fail the test on a transport error, as call does).
func queryRequest(base, token, body string, headers ...string) *http.Request {
	req, _ := http.NewRequest("POST", base+queryRoute, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

// user is a provisioned user.
type user struct {
	id      int64
	tokenID int64
	token   string
}

// newUser provisions a user through the admin API, as the perf lab does.
// deadTokens issues two more tokens of u: one already expired and one
// revoked.
func (in *instance) deadTokens(t testing.TB, u user) (expired, revoked string) {
	t.Helper()
	exp := call(t, "POST", in.admin+"/admin/users/"+itoa(u.id)+"/tokens", "", map[string]any{"expiresAt": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
	rev := call(t, "POST", in.admin+"/admin/users/"+itoa(u.id)+"/tokens", "", map[string]any{})
	if exp.status != 201 || rev.status != 201 {
		t.Fatalf("tokens: %s %s", exp.raw, rev.raw)
	}
	if r := call(t, "DELETE", in.admin+"/admin/tokens/"+itoa(int64(rev.body["id"].(float64))), "", nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	return exp.body["token"].(string), rev.body["token"].(string)
}

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

const queryRoute = "/api/hasNotEngine-ultra-fast"

// systemWarmup reads GET /admin/warmup.
func systemWarmup(t testing.TB, in *instance) warmup.SystemStatus {
	t.Helper()
	r := call(t, "GET", in.admin+"/admin/warmup", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /admin/warmup: %d %s", r.status, r.raw)
	}
	var st warmup.SystemStatus
	if err := json.Unmarshal(r.raw, &st); err != nil {
		t.Fatalf("decode /admin/warmup: %v: %s", err, r.raw)
	}
	return st
}

// userWarmup reads the caller's GET /api/user/warmup; raw is the warmupStatus
// object as sent, for comparisons across instances.
func userWarmup(t testing.TB, in *instance, token string) (st warmup.Status, raw json.RawMessage) {
	t.Helper()
	r := call(t, "GET", in.base+"/api/user/warmup", token, nil)
	if r.status != 200 {
		t.Fatalf("GET /api/user/warmup: %d %s", r.status, r.raw)
	}
	var body struct {
		WarmupStatus json.RawMessage `json:"warmupStatus"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil || body.WarmupStatus == nil {
		t.Fatalf("decode warmup status: %v: %s", err, r.raw)
	}
	if err := json.Unmarshal(body.WarmupStatus, &st); err != nil {
		t.Fatalf("decode warmup status: %v: %s", err, r.raw)
	}
	return st, body.WarmupStatus
}

// postWarmup sends POST /api/user/warmup.
func postWarmup(t testing.TB, in *instance, token string) reply {
	t.Helper()
	return call(t, "POST", in.base+"/api/user/warmup", token, nil)
}

// warmUp asks for the user's login warmup through via (202) and waits until
// its status, read through readFrom, is ready.
func warmUp(t testing.TB, via, readFrom *instance, token string) warmup.Status {
	t.Helper()
	if r := postWarmup(t, via, token); r.status != 202 {
		t.Fatalf("POST /api/user/warmup: %d %s", r.status, r.raw)
	}
	return waitWarmup(t, readFrom, token, warmup.StateReady)
}

// waitWarmup polls the user's warmup status until it is want.
func waitWarmup(t testing.TB, in *instance, token string, want warmup.State) warmup.Status {
	t.Helper()
	var st warmup.Status
	eventually(t, 20*time.Second, "warmup state "+string(want), func() bool {
		st, _ = userWarmup(t, in, token)
		if st.State == warmup.StateFailed && want != warmup.StateFailed {
			t.Fatalf("warmup failed: %s", st.Error)
		}
		return st.State == want
	})
	return st
}

// queryAsync sends a query without a testing.TB (it runs in its own
// goroutine, where t.Fatal is not allowed); a transport error comes back as
// status 0 with the error in raw.
func queryAsync(in *instance, token string, items ...string) <-chan reply {
	out := make(chan reply, 1)
	go func() {
		body, _ := json.Marshal(map[string]any{"items": items})
		req, err := http.NewRequest("POST", in.base+"/api/hasNotEngine-ultra-fast", bytes.NewReader(body))
		if err != nil {
			out <- reply{raw: []byte(err.Error())}
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			out <- reply{raw: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
		_ = json.Unmarshal(raw, &r.body)
		out <- r
	}()
	return out
}

// syncStatus reads GET /admin/sync.
func syncStatus(t testing.TB, admin string) (usagesync.Status, int) {
	t.Helper()
	r := call(t, "GET", admin+"/admin/sync", "", nil)
	var st usagesync.Status
	if r.status == 200 {
		if err := json.Unmarshal(r.raw, &st); err != nil {
			t.Fatalf("decode /admin/sync: %v: %s", err, r.raw)
		}
	}
	return st, r.status
}

// drainSync forces a sync and waits until nothing is pending and no batch is
// held for retry.
func drainSync(t testing.TB, admin string, within time.Duration) usagesync.Status {
	t.Helper()
	if r := call(t, "POST", admin+"/admin/sync", "", nil); r.status != 202 {
		t.Fatalf("POST /admin/sync: %d %s", r.status, r.raw)
	}
	var last usagesync.Status
	eventually(t, within, "usage sync drained (nothing pending, nothing held)", func() bool {
		st, code := syncStatus(t, admin)
		last = st
		return code == 200 && st.PendingUsers == 0 && st.HeldBatches == 0
	})
	return last
}
