package config

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAuthLimitConfig(t *testing.T) {
	c, err := Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthFailureRate != 1 || c.AuthFailureBurst != 20 || len(c.TrustedProxyPrefixes()) != 0 {
		t.Fatalf("defaults: rate %g burst %d proxies %v", c.AuthFailureRate, c.AuthFailureBurst, c.TrustedProxies)
	}
	c, err = Load(func(k string) string {
		return map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,::1,2001:db8::/32", "AUTH_FAILURE_RATE": "0"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("2001:db8::/32")}
	if d := cmp.Diff(want, c.TrustedProxyPrefixes(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Fatalf("TRUSTED_PROXIES (-want +got):\n%s", d)
	}
	for _, bad := range [][2]string{
		{"TRUSTED_PROXIES", "10.0.0.0/33"}, {"TRUSTED_PROXIES", "proxy.internal"}, {"AUTH_FAILURE_RATE", "-1"},
		{"AUTH_FAILURE_RATE", "fast"}, {"AUTH_FAILURE_BURST", "0"},
	} {
		_, err := Load(func(k string) string {
			if k == bad[0] {
				return bad[1]
			}
			return ""
		})
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != bad[0] {
			t.Errorf("%s=%s: got %v, want an error naming %s", bad[0], bad[1], err, bad[0])
		}
	}
}
