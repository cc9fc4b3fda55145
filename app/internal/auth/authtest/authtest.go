// Package authtest is a test identity provider for JWT sign-in: keys
// generated in the test, a JWKS served over HTTP, tokens signed by hand.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// IDP is a test identity provider: keys generated in the test and a JWKS
// served by an httptest server (at URL) that counts its fetches and can go
// down (503).
type IDP struct {
	URL string
	// Fetches counts JWKS requests; Down makes them fail.
	Fetches atomic.Int64
	Down    atomic.Bool

	t      testing.TB
	srv    *httptest.Server
	mu     sync.Mutex
	keys   map[string]Signer // kid → signer, published in the JWKS
	maxAge string
}

// Signer is a private key and the JWS algorithm it signs with.
type Signer struct {
	Alg string
	Key crypto.Signer
}

// NewIDP starts an identity provider with no keys, stopped at cleanup.
func NewIDP(t testing.TB) *IDP {
	t.Helper()
	p := &IDP{t: t, keys: map[string]Signer{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		if p.Down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		set := jwk.NewSet()
		p.mu.Lock()
		for kid, s := range p.keys {
			k, err := jwk.Import(s.Key.Public())
			if err != nil {
				t.Errorf("import key: %v", err)
			}
			_ = k.Set(jwk.KeyIDKey, kid)
			_ = k.Set(jwk.KeyUsageKey, "sig")
			_ = set.AddKey(k)
		}
		if p.maxAge != "" {
			w.Header().Set("Cache-Control", "public, max-age="+p.maxAge)
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	p.srv, p.URL = srv, srv.URL
	t.Cleanup(srv.Close)
	return p
}

// Close stops the server now (later fetches fail to connect).
func (p *IDP) Close() { p.srv.Close() }

// SetMaxAge makes the JWKS answer Cache-Control: public, max-age=seconds.
func (p *IDP) SetMaxAge(seconds string) {
	p.mu.Lock()
	p.maxAge = seconds
	p.mu.Unlock()
}

// AddKey generates a key of alg and publishes it under kid.
func (p *IDP) AddKey(kid, alg string) Signer {
	p.t.Helper()
	s := NewSigner(p.t, alg)
	p.mu.Lock()
	p.keys[kid] = s
	p.mu.Unlock()
	return s
}

// NewSigner generates a key of alg: RS256 (2048 bits), ES256 or EdDSA.
func NewSigner(t testing.TB, alg string) Signer {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no such alg %q", alg)
	}
	if err != nil {
		t.Fatalf("generate %s key: %v", alg, err)
	}
	return Signer{Alg: alg, Key: priv}
}

// B64 is base64url without padding, as JWS uses it.
func B64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// B64JSON is v as JSON, in B64.
func B64JSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return B64(b)
}

// Sign makes a compact JWS by hand (independent of the library under test);
// header gets "alg" from s unless it has one.
func Sign(t testing.TB, s Signer, header, claims map[string]any) string {
	t.Helper()
	if _, ok := header["alg"]; !ok {
		header["alg"] = s.Alg
	}
	input := B64JSON(t, header) + "." + B64JSON(t, claims)
	var sig []byte
	var err error
	digest := sha256.Sum256([]byte(input))
	switch s.Alg {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, s.Key.(*rsa.PrivateKey), crypto.SHA256, digest[:])
	case "ES256":
		var r, ss *big.Int
		r, ss, err = ecdsa.Sign(rand.Reader, s.Key.(*ecdsa.PrivateKey), digest[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			ss.FillBytes(sig[32:])
		}
	case "EdDSA":
		sig = ed25519.Sign(s.Key.(ed25519.PrivateKey), []byte(input))
	}
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return input + "." + B64(sig)
}
