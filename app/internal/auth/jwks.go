package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// JWKS refresh bounds: a Cache-Control max-age is honoured within them.
const (
	jwksMinMaxAge     = time.Minute
	jwksMaxMaxAge     = 24 * time.Hour
	jwksDefaultMaxAge = 15 * time.Minute
	jwksMaxBody       = 1 << 20
)

// ErrNoKeys is returned while no JWKS has been fetched yet.
var ErrNoKeys = errors.New("jwks: no keys fetched yet")

// verifyKey is one usable key of the JWKS: its algorithm is fixed by the key
// (its "alg", or the only one allowed for its type), never by a token.
type verifyKey struct {
	alg jwa.SignatureAlgorithm
	raw any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

type keySet struct {
	byKID map[string]verifyKey
	only  *verifyKey // the single key of a one-key set: tokens without kid use it
}

// JWKSObserver is told about every JWKS fetch (telemetry.Metrics implements
// it); result is "ok" or "error".
type JWKSObserver interface {
	JWKSRefresh(ctx context.Context, result string)
}

// jwks holds the keys of one JWKS URL and refetches them: in the background
// before they go stale, and on an unknown kid at most once per minRefresh.
type jwks struct {
	url        string
	client     *http.Client
	timeout    time.Duration
	minRefresh time.Duration
	now        func() time.Time
	obs        JWKSObserver

	mu        sync.Mutex
	keys      *keySet
	lastErr   error     // of the last fetch; nil after a success
	lastFetch time.Time // start of the last fetch (any outcome)
	maxAge    time.Duration
	inflight  chan struct{} // closed when the fetch in flight ends
}

// current returns the keys, nil before the first successful fetch.
func (j *jwks) current() *keySet {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.keys
}

// refresh fetches the JWKS now (joining a fetch in flight).
func (j *jwks) refresh(ctx context.Context) error {
	return j.fetch(ctx, false)
}

// refreshOnMiss fetches the JWKS for a token with an unknown kid, unless one
// was fetched less than minRefresh ago: however many such tokens arrive, the
// JWKS server sees at most one fetch per minRefresh. It returns the error of
// the last fetch (nil when that one succeeded).
func (j *jwks) refreshOnMiss(ctx context.Context) error {
	return j.fetch(ctx, true)
}

func (j *jwks) fetch(ctx context.Context, limited bool) error {
	j.mu.Lock()
	if ch := j.inflight; ch != nil {
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.lastErr
	}
	if limited && !j.lastFetch.IsZero() && j.now().Sub(j.lastFetch) < j.minRefresh {
		defer j.mu.Unlock()
		return j.lastErr
	}
	ch := make(chan struct{})
	j.inflight, j.lastFetch = ch, j.now()
	j.mu.Unlock()

	keys, maxAge, err := j.get(ctx)
	result := "ok"
	if err != nil {
		result = "error"
	}
	if j.obs != nil {
		j.obs.JWKSRefresh(ctx, result)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lastErr = err
	if err == nil {
		j.keys, j.maxAge = keys, maxAge
	}
	j.inflight = nil
	close(ch)
	return err
}

// get fetches and parses the JWKS, with a deadline.
func (j *jwks) get(ctx context.Context) (*keySet, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("jwks: fetch: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: read: %w", err)
	}
	if len(body) > jwksMaxBody {
		return nil, 0, fmt.Errorf("jwks: larger than %d bytes", jwksMaxBody)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: parse: %w", err)
	}
	keys, err := usableKeys(set)
	if err != nil {
		return nil, 0, err
	}
	return keys, maxAge(resp.Header.Get("Cache-Control")), nil
}

// usableKeys keeps the signature-verification keys of algorithms warmpath
// accepts; a set with none is an error.
func usableKeys(set jwk.Set) (*keySet, error) {
	ks := &keySet{byKID: map[string]verifyKey{}}
	var all []verifyKey
	for i := range set.Len() {
		k, _ := set.Key(i)
		if use, ok := k.KeyUsage(); ok && use != "" && use != "sig" {
			continue
		}
		vk, ok := verifyKeyOf(k)
		if !ok {
			continue
		}
		all = append(all, vk)
		if kid, ok := k.KeyID(); ok && kid != "" {
			if _, dup := ks.byKID[kid]; !dup {
				ks.byKID[kid] = vk
			}
		}
	}
	if len(all) == 0 {
		return nil, errors.New("jwks: no RS256, ES256 or EdDSA signing key")
	}
	if len(all) == 1 {
		ks.only = &all[0]
	}
	return ks, nil
}

// verifyKeyOf fixes a key's algorithm from the key: RSA → RS256, EC P-256 →
// ES256, OKP Ed25519 → EdDSA. A key whose "alg" names anything else (HMAC
// above all) is not usable.
func verifyKeyOf(k jwk.Key) (verifyKey, bool) {
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return verifyKey{}, false
	}
	var alg jwa.SignatureAlgorithm
	switch pk := raw.(type) {
	case *rsa.PublicKey:
		if pk.N.BitLen() < 2048 {
			return verifyKey{}, false
		}
		alg = jwa.RS256()
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() {
			return verifyKey{}, false
		}
		alg = jwa.ES256()
	case ed25519.PublicKey:
		alg = jwa.EdDSA()
	default: // private and symmetric keys never verify here
		return verifyKey{}, false
	}
	if ka, ok := k.Algorithm(); ok && ka.String() != "" && ka.String() != alg.String() {
		return verifyKey{}, false
	}
	return verifyKey{alg: alg, raw: raw}, true
}

// maxAge reads Cache-Control max-age, bounded; the default without one.
func maxAge(cc string) time.Duration {
	for part := range strings.SplitSeq(cc, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(strings.ToLower(part)), "max-age=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.Trim(v, `"`))
		if err != nil || n < 0 {
			break
		}
		return min(max(time.Duration(n)*time.Second, jwksMinMaxAge), jwksMaxMaxAge)
	}
	return jwksDefaultMaxAge
}

// nextRefresh says how long the background refresher waits: most of the
// keys' max-age after a success, minRefresh after a failure.
func (j *jwks) nextRefresh() time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastErr != nil || j.keys == nil {
		return j.minRefresh
	}
	return j.maxAge * 3 / 4
}
