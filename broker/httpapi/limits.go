package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
)

// Limits bound what one client can take of the broker.
type Limits struct {
	// UserRate is the requests per second one user (a token's sub and ods,
	// by bearer token or tracker session) may make, with bursts of
	// UserBurst; 0: no limit.
	UserRate  float64
	UserBurst int
	// AddressRate is the requests per second from one client address (IPv6:
	// one /64) that carry no valid credentials, with bursts of
	// AddressBurst; 0: no limit.
	AddressRate  float64
	AddressBurst int
	// SessionsPerUser is how many live tracker page sessions one user may
	// hold (service.DefaultSessionsPerUser when 0).
	SessionsPerUser int
}

// codeTooManyRequests is the EPS code of a 429 answer (as the NHS APIs
// answer a rate limit: issue code throttled, TOO_MANY_REQUESTS).
const codeTooManyRequests = "TOO_MANY_REQUESTS"

// Refusal reasons of eps_http_refused_total.
const (
	refusedUserRate    = "user_rate"
	refusedAddressRate = "address_rate"
	refusedConnections = "connections"
	refusedDropped     = "connections_dropped"
)

// LimitMetrics count what the limits refused and the open connections.
type LimitMetrics struct {
	Refused   *prometheus.CounterVec // reason
	OpenConns prometheus.Gauge
}

// NewLimitMetrics creates the limits' metrics and registers them on reg.
func NewLimitMetrics(reg prometheus.Registerer) *LimitMetrics {
	m := &LimitMetrics{
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_http_refused_total",
			Help: "HTTP requests and connections refused by a limit: user_rate and address_rate (429), connections (503 past --http-max-connections), connections_dropped (closed unanswered).",
		}, []string{"reason"}),
		OpenConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eps_http_connections_open",
			Help: "HTTP connections being served (counted against --http-max-connections).",
		}),
	}
	for _, r := range []string{refusedUserRate, refusedAddressRate, refusedConnections, refusedDropped} {
		m.Refused.WithLabelValues(r)
	}
	reg.MustRegister(m.Refused, m.OpenConns)
	return m
}

// keyedLimiter is a token bucket per key: a user or a client address.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

// maxBuckets is how many keys a limiter holds before it sweeps at once.
const maxBuckets = 1 << 16

// newKeyedLimiter returns nil (no limit) when perSecond is 0.
func newKeyedLimiter(perSecond float64, burst int, now func() time.Time) *keyedLimiter {
	if perSecond <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &keyedLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), now: now, buckets: map[string]*rate.Limiter{}}
}

// allow takes one request from key's bucket. When it is empty, it takes
// nothing and says how long until the next request would be allowed.
func (k *keyedLimiter) allow(key string) (bool, time.Duration) {
	if k == nil {
		return true, 0
	}
	now := k.now()
	k.mu.Lock()
	if now.Sub(k.swept) > time.Minute || len(k.buckets) >= maxBuckets {
		// A full bucket is the same as none: forget it.
		for key, l := range k.buckets {
			if l.TokensAt(now) >= float64(k.burst) {
				delete(k.buckets, key)
			}
		}
		k.swept = now
	}
	l := k.buckets[key]
	if l == nil {
		l = rate.NewLimiter(k.limit, k.burst)
		k.buckets[key] = l
	}
	k.mu.Unlock()
	r := l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// userKey is the rate limit key of a user: the token's sub and ods.
func userRateKey(p auth.Principal) string {
	h := sha256.Sum256([]byte(p.Subject + "\x00" + p.ODS))
	return string(h[:16])
}

// addressKey is the rate limit key of a client address: an IPv4 address,
// or the /64 of an IPv6 one (a host is usually given a whole /64).
func addressKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// throttled answers 429 with Retry-After (whole seconds, at least 1).
func (a *api) throttled(w http.ResponseWriter, r *http.Request, who string, limit float64, burst int, wait time.Duration, reason string) {
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	if a.LimitMetrics != nil {
		a.LimitMetrics.Refused.WithLabelValues(reason).Inc()
	}
	a.writeError(w, r, &fhir.Error{Kind: fhir.KindThrottled, IssueType: "throttled", Code: codeTooManyRequests, Display: "Too many requests",
		Diagnostics: fmt.Sprintf("too many requests %s: the limit is %s per second, in bursts of up to %d; retry after %d s", who, strconv.FormatFloat(limit, 'f', -1, 64), burst, secs)})
}

// allowUser takes one request of p's rate, or answers 429.
func (a *api) allowUser(w http.ResponseWriter, r *http.Request, p auth.Principal) bool {
	ok, wait := a.userLimiter.allow(userRateKey(p))
	if !ok {
		a.throttled(w, r, "from this user", a.Limits.UserRate, a.Limits.UserBurst, wait, refusedUserRate)
	}
	return ok
}

// allowAddress takes one request of the client address's rate (requests
// without valid credentials), or answers 429.
func (a *api) allowAddress(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := a.addressLimiter.allow(addressKey(r.RemoteAddr))
	if !ok {
		a.throttled(w, r, "without valid credentials from this address", a.Limits.AddressRate, a.Limits.AddressBurst, wait, refusedAddressRate)
	}
	return ok
}

// authHandler is a handler behind authenticated: it rate limits by user
// (and by address when the credentials fail) itself.
type authHandler struct{ http.Handler }

// unlimited are the routes no rate or connection limit applies to: probes
// must keep answering when the broker is busy.
var unlimited = map[string]bool{"GET /_ping": true, "/_ping": true, "GET /healthz": true, "GET /readyz": true}

// limited applies the limits to a route: a connection past the cap is
// answered 503 and closed (a probe is answered, then the connection
// closed), and a route without authentication is rate limited by client
// address (an authenticated one by user, in authenticated).
func (a *api) limited(pattern string, h http.Handler) http.Handler {
	exempt := unlimited[pattern]
	_, byUser := h.(*authHandler)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if overCap(r.Context()) {
			w.Header().Set("Connection", "close")
			if !exempt {
				// Answered by answerError rather than writeError: a
				// refusal is counted, not logged as a failure. Its kind
				// (unavailable) gives the 503 and Retry-After.
				if a.LimitMetrics != nil {
					a.LimitMetrics.Refused.WithLabelValues(refusedConnections).Inc()
				}
				answerError(w, fhir.Errorf(fhir.KindUnavailable, fhir.CodeServiceUnavailable,
					"the broker is serving as many connections as it takes; retry on a new connection"))
				return
			}
		}
		if !exempt && !byUser && !a.allowAddress(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// The connection cap. At most n connections are served at once; as many
// again are accepted only to be answered 503 (with Retry-After) and closed,
// so that a client learns at once that the broker is full; past that, new
// connections are closed unanswered. A connection that waits for its
// request holds its place until the read timeout ends it.

// capConn is an accepted connection that holds a place (served or over the
// cap) until it is closed.
type capConn struct {
	net.Conn
	over    bool
	release func()
	once    sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

type capListener struct {
	net.Listener
	n          int64
	open, over atomic.Int64
	m          *LimitMetrics
}

// LimitConnections caps the connections served from ln at n (no cap when
// n is 0). It goes under any TLS listener: the cap counts TCP connections.
// The server must set ConnContext to ConnContext, so that requests on a
// connection over the cap are answered 503.
func LimitConnections(ln net.Listener, n int, m *LimitMetrics) net.Listener {
	if n <= 0 {
		return ln
	}
	return &capListener{Listener: ln, n: int64(n), m: m}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.n {
			if l.m != nil {
				l.m.OpenConns.Inc()
			}
			return &capConn{Conn: c, release: func() {
				l.open.Add(-1)
				if l.m != nil {
					l.m.OpenConns.Dec()
				}
			}}, nil
		}
		l.open.Add(-1)
		if l.over.Add(1) <= l.n {
			return &capConn{Conn: c, over: true, release: func() { l.over.Add(-1) }}, nil
		}
		l.over.Add(-1)
		if l.m != nil {
			l.m.Refused.WithLabelValues(refusedDropped).Inc()
		}
		_ = c.Close()
	}
}

type overCapKey struct{}

// ConnContext is the http.Server ConnContext of a listener from
// LimitConnections: it marks the requests of a connection over the cap.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*capConn); ok && cc.over {
		return context.WithValue(ctx, overCapKey{}, true)
	}
	return ctx
}

func overCap(ctx context.Context) bool {
	over, _ := ctx.Value(overCapKey{}).(bool)
	return over
}

// MetricsHandler serves GET /metrics alone, for a listener of its own.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}
