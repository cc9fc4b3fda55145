package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/warmpath/warmpath/app/internal/auth/authtest"
	"github.com/warmpath/warmpath/app/internal/domain"
)

// The warm JWT path: keys fetched, the subject's principal in the shared
// cache. "first" verifies every token (a new token each time: signature,
// claims, subject lookup); "cached" repeats one verified token.
func BenchmarkAuthenticateJWT(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		for _, mode := range []string{"first", "cached"} {
			b.Run(alg+"/"+mode, func(b *testing.B) {
				t := &testing.T{}
				p := authtest.NewIDP(t)
				s := p.AddKey("k1", alg)
				f := newFixture(t, p, newMemStore(t))
				size := 10_000
				if mode == "first" {
					size = 1 // every put evicts the previous token: each one is verified
				}
				f.v = NewJWTVerifier(JWTConfig{
					JWKSURL: p.URL, Issuer: testIssuer, Audience: testAudience, Plan: "free",
					Subjects: f.subjects, Cache: f.cache, Now: f.clk.Now, TokenCacheSize: size,
				})
				if err := f.v.Refresh(context.Background()); err != nil {
					b.Fatal(err)
				}
				a := New(Config{Store: &fakeStore{}, JWT: f.v, Now: f.clk.Now})
				headers := make([]string, 256)
				for i := range headers {
					c := f.claims("bench-user")
					c["jti"] = fmt.Sprint(i)
					headers[i] = "Bearer " + authtest.Sign(t, s, map[string]any{"kid": "k1"}, c)
				}
				if mode == "cached" {
					headers = headers[:1]
				}
				ctx := context.Background()
				for _, h := range headers {
					if _, _, err := a.Authenticate(ctx, h); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if _, _, err := a.Authenticate(ctx, headers[i%len(headers)]); err != nil {
						b.Fatal(err)
					}
				}
				p.Close()
			})
		}
	}
}

// The warm opaque-token path for comparison: the principal in the shared
// cache (an in-process fake, so neither path pays a network round trip).
func BenchmarkAuthenticateOpaque(b *testing.B) {
	text, h, err := NewToken()
	if err != nil {
		b.Fatal(err)
	}
	cache := &fakeCache{m: map[domain.TokenHash]domain.Principal{h: {UserID: 1, TokenID: 1}}}
	a := New(Config{Store: NewCachedStore(&fakeStore{}, cache, nil, time.Hour)})
	ctx := context.Background()
	header := "Bearer " + text
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := a.Authenticate(ctx, header); err != nil {
			b.Fatal(err)
		}
	}
}
