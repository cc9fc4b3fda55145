package main

import (
	"bytes"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMeasureJWTWarmPath measures warm queries with a JWT against warm
// queries with an opaque token on one instance, interleaved in rounds: the
// auth phase median (Server-Timing) and the throughput. It is a measurement,
// not a check: it runs only with WARMPATH_MEASURE=1 and logs its figures.
func TestMeasureJWTWarmPath(t *testing.T) {
	if os.Getenv("WARMPATH_MEASURE") == "" {
		t.Skip("a measurement: set WARMPATH_MEASURE=1")
	}
	idp := newTestIDP(t)
	env := idp.env(backendEnv(t))
	env["LOG_LEVEL"] = "error"
	in := start(t, env)
	waitJWKSStep(t, in)
	u := in.newUser(t, "pro", nil)
	if r := in.items(t, u.token, []string{"a", "b", "c"}, nil); r.status != 200 {
		t.Fatalf("items: %d", r.status)
	}
	if r := call(t, "POST", in.admin+"/admin/users", "", map[string]any{"name": "m", "plan": "pro", "subject": "measure"}); r.status != 201 {
		t.Fatalf("create the JWT user: %d %s", r.status, r.raw)
	}
	cached := idp.token(t, "measure", nil)
	if r := in.items(t, cached, []string{"a", "b", "c"}, nil); r.status != 200 {
		t.Fatalf("items: %d", r.status)
	}
	fresh := make([]string, 40000)
	for i := range fresh {
		fresh[i] = idp.token(t, "measure", nil)
	}
	var next atomic.Int64
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	body := []byte(`{"items":["a","x","c"]}`)
	run := func(token func() string, d time.Duration) (reqs int, auth []float64) {
		const workers = 8
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		for range workers {
			wg.Go(func() {
				var mine []float64
				for time.Now().Before(stop) {
					req, _ := http.NewRequest("POST", in.base+queryRoute, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+token())
					resp, err := hc.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("status %d", resp.StatusCode)
						return
					}
					for part := range strings.SplitSeq(resp.Header.Get("Server-Timing"), ",") {
						if v, ok := strings.CutPrefix(strings.TrimSpace(part), "auth;dur="); ok {
							f, _ := strconv.ParseFloat(v, 64)
							mine = append(mine, f)
						}
					}
				}
				mu.Lock()
				auth = append(auth, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return len(auth), auth
	}
	kinds := []struct {
		name  string
		token func() string
	}{
		{"opaque", func() string { return u.token }},
		{"jwt-cached", func() string { return cached }},
		{"jwt-uncached", func() string { return fresh[int(next.Add(1))%len(fresh)] }},
	}
	total := map[string]int{}
	auth := map[string][]float64{}
	run(kinds[0].token, time.Second) // warm the connections
	for range 3 {
		for _, k := range kinds {
			n, a := run(k.token, 2*time.Second)
			total[k.name] += n
			auth[k.name] = append(auth[k.name], a...)
		}
	}
	for _, k := range kinds {
		a := auth[k.name]
		slices.Sort(a)
		med := a[len(a)/2]
		t.Logf("%-12s %7.0f req/s (%.2f× opaque)  auth median %.3f ms  p99 %.3f ms  (%d requests)",
			k.name, float64(total[k.name])/6, float64(total[k.name])/float64(total["opaque"]), med, a[len(a)*99/100], len(a))
	}
}
