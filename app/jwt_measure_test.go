package main

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkJWTWarmPath measures warm queries with a JWT against warm queries
// with an opaque token on one instance, interleaved: each iteration is one
// round of every kind (a JWT whose verification is cached, a new JWT on
// every request, an opaque token), 8 closed-loop clients for 500 ms each.
// It reports each kind's throughput as a ratio of the opaque token's and
// the auth phase median (Server-Timing):
//
//	go test -run '^$' -bench JWTWarmPath -benchtime 6x ./app/
func BenchmarkJWTWarmPath(b *testing.B) {
	idp := newTestIDP(b)
	env := withEnv(idp.env(backendEnv(b)), "LOG_LEVEL", "error")
	in := start(b, env)
	waitJWKSStep(b, in)
	u := in.newUser(b, "pro", nil)
	if r := in.items(b, u.token, []string{"a", "b", "c"}, nil); r.status != 200 {
		b.Fatalf("items: %d", r.status)
	}
	if r := call(b, "POST", in.admin+"/admin/users", "", map[string]any{"name": "m", "plan": "pro", "subject": "measure"}); r.status != 201 {
		b.Fatalf("create the JWT user: %d %s", r.status, r.raw)
	}
	cached := idp.token(b, "measure", nil)
	if r := in.items(b, cached, []string{"a", "b", "c"}, nil); r.status != 200 {
		b.Fatalf("items: %d", r.status)
	}
	fresh := make([]string, 40000)
	for i := range fresh {
		fresh[i] = idp.token(b, "measure", nil)
	}
	var next atomic.Int64
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	body := []byte(`{"items":["a","x","c"]}`)
	// run is d of closed-loop load with token: the auth phase of each answer.
	run := func(token func() string, d time.Duration) (auth []float64) {
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
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
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
		return auth
	}
	kinds := []struct {
		name  string
		token func() string
	}{
		{"opaque", func() string { return u.token }},
		{"jwt-cached", func() string { return cached }},
		{"jwt-uncached", func() string { return fresh[int(next.Add(1))%len(fresh)] }},
	}
	auth := map[string][]float64{}
	run(kinds[0].token, time.Second) // warm the connections
	b.ResetTimer()
	for b.Loop() {
		for _, k := range kinds {
			auth[k.name] = append(auth[k.name], run(k.token, 500*time.Millisecond)...)
		}
	}
	secs := 0.5 * float64(b.N)
	for _, k := range kinds {
		a := auth[k.name]
		slices.Sort(a)
		b.ReportMetric(float64(len(a))/secs, k.name+"-req/s")
		b.ReportMetric(a[len(a)/2], k.name+"-auth-median-ms")
		if k.name != "opaque" {
			b.ReportMetric(float64(len(a))/float64(len(auth["opaque"])), k.name+"/opaque")
		}
	}
}
