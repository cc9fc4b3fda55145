package httpapi

import (
	"net/netip"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/warmpath/warmpath/app/internal/apperr"
)

// authClientsMax bounds how many client addresses the failed-auth limiter
// remembers; past it the least recently failing one is forgotten.
const authClientsMax = 10_000

// AuthLimit configures the failed-authentication limit per client address.
type AuthLimit struct {
	// Rate is how many failed authentications per second a client address
	// earns back; 0 turns the limit off.
	Rate float64
	// Burst is how many failed authentications in a row a client address
	// may make before it is refused.
	Burst int
	// TrustedProxies are the peers whose X-Forwarded-For is believed; empty:
	// the client address is always the connection's peer.
	TrustedProxies []netip.Prefix
}

// authLimiter is a token bucket per client address that only failed
// authentications draw from. While a client's bucket is empty, every
// authenticated request from it is refused with 429 before any token lookup,
// valid tokens included: otherwise a correct guess would still be answered
// and guessing would not be slowed at all. A failure always takes its token,
// going into debt if several run at once, so parallel guessing pays the same
// rate as serial guessing.
type authLimiter struct {
	rate    rate.Limit
	burst   int
	trusted []netip.Prefix
	clients *lru.Cache[netip.Prefix, *rate.Limiter]
	now     func() time.Time
}

// newAuthLimiter returns the limiter, or nil when cfg.Rate is 0 (no limit).
func newAuthLimiter(cfg AuthLimit) *authLimiter {
	if cfg.Rate <= 0 {
		return &authLimiter{trusted: cfg.TrustedProxies}
	}
	clients, _ := lru.New[netip.Prefix, *rate.Limiter](authClientsMax) // only fails for size <= 0
	return &authLimiter{
		rate: rate.Limit(cfg.Rate), burst: max(cfg.Burst, 1), trusted: cfg.TrustedProxies,
		clients: clients, now: time.Now,
	}
}

// refused returns a 429 when key's bucket is empty, nil otherwise. It never
// adds an entry: a request that does not fail costs one lookup.
func (l *authLimiter) refused(key netip.Prefix) error {
	if l.clients == nil {
		return nil
	}
	b, ok := l.clients.Peek(key)
	if !ok {
		return nil
	}
	tokens := b.TokensAt(l.now())
	if tokens >= 1 {
		return nil
	}
	wait := time.Duration((1 - tokens) / float64(l.rate) * float64(time.Second))
	return &apperr.Error{Code: apperr.TooManyAuthFailures, RetryAfter: wait,
		Message: "too many failed authentications from this address; retry after Retry-After seconds"}
}

// failed draws a token from key's bucket.
func (l *authLimiter) failed(key netip.Prefix) {
	if l.clients == nil {
		return
	}
	b, ok := l.clients.Get(key)
	if !ok {
		fresh := rate.NewLimiter(l.rate, l.burst)
		if prev, found, _ := l.clients.PeekOrAdd(key, fresh); found {
			b = prev
		} else {
			b = fresh
		}
	}
	b.ReserveN(l.now(), 1) // always granted (burst >= 1); a concurrent failure goes into debt
}

// clientKey is the bucket of a request: its client address (see clientAddr),
// IPv6 addresses by their /64, which one host usually has to itself.
func clientKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := addr.BitLen()
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// clientAddr is the client's address: the connection's peer, unless the peer
// is a trusted proxy; then X-Forwarded-For is read from the right, skipping
// trusted proxies, and the first address that is not one is the client (the
// leftmost entries are whatever the client chose to send, so they are never
// believed on their own). Fiber's ProxyHeader takes the leftmost entry, which
// a client can forge, so it is not used.
func (l *authLimiter) clientAddr(peer netip.Addr, xff [][]byte) netip.Addr {
	peer = peer.Unmap()
	if !l.isTrusted(peer) || len(xff) == 0 {
		return peer
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(string(xff[i]), ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				// A hop that is not an address: believe nothing further left.
				return client
			}
			client = a.Unmap()
			if !l.isTrusted(client) {
				return client
			}
		}
	}
	return client
}

func (l *authLimiter) isTrusted(a netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// uniformAuthError is what a client is told when its token is refused:
// malformed, unknown and revoked tokens get one answer (code, message and
// headers), so the answer never tells whether a token exists or existed.
// Other errors pass unchanged.
func uniformAuthError(err error) error {
	switch apperr.CodeOf(err) {
	case apperr.MalformedToken, apperr.UnknownToken, apperr.RevokedToken, apperr.InvalidToken:
		return apperr.Wrap(err, apperr.InvalidToken, "the bearer token is not valid")
	}
	return err
}

// countsAsAuthFailure reports whether err is a refused token (one was sent
// and it was not accepted): those draw from the client's bucket; a missing
// token, a dependency that is down or a request that passed do not.
func countsAsAuthFailure(err error) bool {
	switch apperr.CodeOf(err) {
	case apperr.MalformedToken, apperr.UnknownToken, apperr.RevokedToken, apperr.ExpiredToken, apperr.InvalidToken:
		return true
	}
	return false
}
