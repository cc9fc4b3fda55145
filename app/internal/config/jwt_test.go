package config

import (
	"errors"
	"testing"
	"time"
)

func TestJWTOptions(t *testing.T) {
	ok := map[string]string{
		"AUTH_JWKS_URL":     "https://idp.example/.well-known/jwks.json",
		"AUTH_JWT_ISSUER":   "https://idp.example/",
		"AUTH_JWT_AUDIENCE": "my-app",
	}
	c, err := Load(getenv(ok))
	if err != nil {
		t.Fatal(err)
	}
	if !c.JWTEnabled() || c.AuthJWTPlan != "free" || c.AuthJWTLeeway != 30*time.Second || c.AuthJWKSMinRefresh != 10*time.Second {
		t.Fatalf("JWT defaults: %+v", c)
	}
	if d, err := Load(getenv(nil)); err != nil || d.JWTEnabled() {
		t.Fatalf("JWTs on by default: %v", err)
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{with("AUTH_JWT_ISSUER", ""), "AUTH_JWT_ISSUER"},
		{with("AUTH_JWT_AUDIENCE", ""), "AUTH_JWT_AUDIENCE"},
		{map[string]string{"AUTH_JWT_ISSUER": "https://idp.example/"}, "AUTH_JWKS_URL"},
		{map[string]string{"AUTH_JWT_AUDIENCE": "my-app"}, "AUTH_JWKS_URL"},
		{with("AUTH_JWKS_URL", "http://idp.example/jwks.json"), "AUTH_JWKS_URL"},
		{with("AUTH_JWKS_URL", "not a url"), "AUTH_JWKS_URL"},
		{with("AUTH_JWT_PLAN", "gold"), "AUTH_JWT_PLAN"},
		{with("AUTH_JWT_LEEWAY", "1h"), "AUTH_JWT_LEEWAY"},
		{with("AUTH_JWT_LEEWAY", "0s"), "AUTH_JWT_LEEWAY"},
		{with("AUTH_JWKS_MIN_REFRESH", "10ms"), "AUTH_JWKS_MIN_REFRESH"},
		{with("AUTH_JWKS_MIN_REFRESH", "often"), "AUTH_JWKS_MIN_REFRESH"},
	} {
		_, err := Load(getenv(tt.env))
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != tt.want {
			t.Errorf("Load(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
	if _, err := Load(getenv(with("AUTH_JWKS_URL", "http://127.0.0.1:8000/jwks.json"))); err != nil {
		t.Errorf("http JWKS on loopback: %v", err)
	}
}
