package main

// Fault proxies (toxiproxy, in process) between the service and a real Postgres or Valkey.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// newProxy starts a toxiproxy proxy on 127.0.0.1:0 in front of the host:port
// of rawURL; it is stopped at cleanup.
func newProxy(t *testing.T, name, rawURL string) *toxiproxy.Proxy {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		t.Fatalf("proxy %s: cannot take host:port from the backend URL (%v)", name, err)
	}
	upstream := u.Host
	if u.Port() == "" {
		port := map[string]string{"postgres": "5432", "postgresql": "5432", "redis": "6379", "valkey": "6379"}[u.Scheme]
		upstream = net.JoinHostPort(u.Hostname(), port)
	}
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	// A cut proxy (px.Stop) is restored on the same port. A port the
	// kernel handed out (127.0.0.1:0) is an ephemeral one, which any
	// outgoing connection of this machine may take as its source port while
	// the proxy is down, and the restore then fails with "address already
	// in use". Ports below the ephemeral range are never handed out so.
	lo, hi := belowEphemeral()
	for range 50 {
		addr := "127.0.0.1:0"
		if hi > lo {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo)))
		}
		px := toxiproxy.NewProxy(server, name, addr, upstream)
		if err = px.Start(); err == nil {
			t.Cleanup(px.Stop)
			return px
		}
	}
	t.Fatalf("start proxy %s: %v", name, err)
	return nil
}

// belowEphemeral is a range of ports under the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), or lo == hi when there is no room.
func belowEphemeral() (lo, hi int) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 1 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first < 11024 {
		return 0, 0
	}
	return first - 10000, first
}

// viaProxy returns rawURL with its host:port replaced by listen, keeping
// everything else (the schema's search_path options, the database).
func viaProxy(t *testing.T, rawURL, listen string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse backend URL: %v", err)
	}
	u.Host = listen
	return u.String()
}

// addToxic adds a toxic described in toxiproxy's JSON form.
func addToxic(t *testing.T, px *toxiproxy.Proxy, js string) {
	t.Helper()
	if _, err := px.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("add toxic %s: %v", js, err)
	}
}

// removeToxic removes a toxic by name.
func removeToxic(t *testing.T, px *toxiproxy.Proxy, name string) {
	t.Helper()
	if err := px.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// restoreProxy restores a cut proxy on the same address.
func restoreProxy(t *testing.T, px *toxiproxy.Proxy) {
	t.Helper()
	if err := px.Start(); err != nil {
		t.Fatalf("restore proxy %s on %s: %v", px.Name, px.Listen, err)
	}
}

// taps maps a tap toxic's id to the channel it signals on each chunk.
var taps sync.Map
var tapOnce sync.Once

// tapToxic passes data through unchanged and signals taps[ID] (without
// blocking) on every chunk: the test learns that the proxy saw traffic.
type tapToxic struct {
	ID string `json:"id"`
}

// Pipe implements toxics.Toxic.
func (tp *tapToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if ch, ok := taps.Load(tp.ID); ok {
				select {
				case ch.(chan struct{}) <- struct{}{}:
				default:
				}
			}
			stub.Output <- c
		}
	}
}

// addTap installs a tap on the proxy's upstream (service → backend) stream
// and returns its channel.
func addTap(t *testing.T, px *toxiproxy.Proxy) chan struct{} {
	t.Helper()
	tapOnce.Do(func() { toxics.Register("sy_tap", new(tapToxic)) })
	id := randHex(6)
	ch := make(chan struct{}, 1)
	taps.Store(id, ch)
	t.Cleanup(func() { taps.Delete(id) })
	addToxic(t, px, fmt.Sprintf(`{"name":"tap","type":"sy_tap","stream":"upstream","attributes":{"id":%q}}`, id))
	return ch
}

// slowDatabase puts a proxy with a latency toxic (every answer from
// Postgres delayed by latency) in front of the Postgres of dbURL and returns
// the same URL (schema options kept) pointing at the proxy. The proxy stops
// at cleanup; register it before starting the instance that uses it, so the
// instance stops first.
func slowDatabase(t *testing.T, dbURL string, latency time.Duration) string {
	t.Helper()
	px := newProxy(t, "postgres", dbURL)
	addToxic(t, px, fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, latency.Milliseconds()))
	return viaProxy(t, dbURL, px.Listen)
}

// proxyPostgres puts a proxy in front of env's Postgres and points env's
// DATABASE_URL at it; direct is the URL that bypasses it.
func proxyPostgres(t *testing.T, env map[string]string) (px *toxiproxy.Proxy, direct string) {
	t.Helper()
	direct = env["DATABASE_URL"]
	px = newProxy(t, "postgres", direct)
	env["DATABASE_URL"] = viaProxy(t, direct, px.Listen)
	return px, direct
}
