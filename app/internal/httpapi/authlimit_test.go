package httpapi

import (
	"net/netip"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

func TestAuthLimiterBucket(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	l := newAuthLimiter(AuthLimit{Rate: 0.5, Burst: 3})
	l.now = func() time.Time { return now }
	key := clientKey(netip.MustParseAddr("192.0.2.1"))
	other := clientKey(netip.MustParseAddr("192.0.2.2"))
	for i := range 3 {
		if err := l.refused(key); err != nil {
			t.Fatalf("failure %d refused early: %v", i, err)
		}
		l.failed(key)
	}
	err := l.refused(key)
	if e := apperr.As(err); e == nil || e.Code != apperr.TooManyAuthFailures || e.RetryAfter != 2*time.Second {
		t.Fatalf("after the burst: %v, want too_many_auth_failures retry in 2s", err)
	}
	if l.refused(other) != nil {
		t.Fatal("another address is limited too")
	}
	// Concurrent failures go into debt: two more failures cost 4 more seconds.
	l.failed(key)
	l.failed(key)
	now = now.Add(5 * time.Second)
	if l.refused(key) == nil {
		t.Fatal("debt not paid: still 2 tokens short after 5s at 0.5/s")
	}
	now = now.Add(time.Second)
	if err := l.refused(key); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
}

func TestAuthLimiterOff(t *testing.T) {
	l := newAuthLimiter(AuthLimit{})
	key := clientKey(netip.MustParseAddr("192.0.2.1"))
	for range 1000 {
		l.failed(key)
	}
	if l.refused(key) != nil {
		t.Fatal("rate 0 must mean no limit")
	}
}

func TestAuthLimiterBounded(t *testing.T) {
	l := newAuthLimiter(AuthLimit{Rate: 1, Burst: 1})
	for i := range authClientsMax + 500 {
		l.failed(clientKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})))
	}
	if n := l.clients.Len(); n > authClientsMax {
		t.Fatalf("%d clients remembered, want at most %d", n, authClientsMax)
	}
}

func TestClientKeyIPv6By64(t *testing.T) {
	a := clientKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	b := clientKey(netip.MustParseAddr("2001:db8:1:2:bbbb::2"))
	c := clientKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if a != b || a == c {
		t.Fatalf("IPv6 keys by /64: %v %v %v", a, b, c)
	}
	if clientKey(netip.MustParseAddr("::ffff:192.0.2.1")) != clientKey(netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("an IPv4-mapped address is its IPv4 address")
	}
}

func TestClientAddr(t *testing.T) {
	l := newAuthLimiter(AuthLimit{Rate: 1, Burst: 1, TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
	}})
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1", nil, "192.0.2.1"},
		{"192.0.2.1", []string{"198.51.100.1"}, "192.0.2.1"}, // untrusted peer: header ignored
		{"10.1.1.1", nil, "10.1.1.1"},
		{"10.1.1.1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"10.1.1.1", []string{"203.0.113.5, 198.51.100.1"}, "198.51.100.1"}, // forged leftmost ignored
		{"10.1.1.1", []string{"198.51.100.1, 10.2.2.2"}, "198.51.100.1"},    // trusted hops skipped
		{"10.1.1.1", []string{"198.51.100.1", "10.2.2.2"}, "198.51.100.1"},  // several header lines
		{"10.1.1.1", []string{"garbage, 198.51.100.1"}, "198.51.100.1"},
		{"10.1.1.1", []string{"198.51.100.1, garbage"}, "10.1.1.1"}, // a bad hop: stop at what is known
		{"127.0.0.1", []string{" 2001:db8::1 "}, "2001:db8::1"},
		{"10.1.1.1", []string{"10.3.3.3"}, "10.3.3.3"}, // all trusted: the leftmost
	} {
		var xff [][]byte
		for _, h := range tc.xff {
			xff = append(xff, []byte(h))
		}
		if got := l.clientAddr(netip.MustParseAddr(tc.peer), xff); got != netip.MustParseAddr(tc.want) {
			t.Errorf("peer %s X-Forwarded-For %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// BenchmarkAuthLimiterPass is what the limit costs a request from an
// address that has not failed: the client address and one lookup.
func BenchmarkAuthLimiterPass(b *testing.B) {
	l := newAuthLimiter(AuthLimit{Rate: 1, Burst: 20})
	for i := range 1000 {
		l.failed(clientKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})))
	}
	peer := netip.MustParseAddr("192.0.2.1")
	for b.Loop() {
		if l.refused(clientKey(l.clientAddr(peer, nil))) != nil {
			b.Fatal("refused")
		}
	}
}
