package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Limits and intervals of JWKS handling.
const (
	// maxJWKSSize bounds a JWKS document, from a file or a URL.
	maxJWKSSize = 1 << 20
	// jwksFetchTimeout bounds one fetch of a JWKS URL.
	jwksFetchTimeout = 10 * time.Second
	// jwksRetryInterval is how soon a failed periodic refresh is retried.
	jwksRetryInterval = time.Minute
	// jwksMinRefresh is the shortest periodic refresh interval allowed.
	jwksMinRefresh = time.Second
	// jwksUnknownKIDInterval is the least time between two refreshes
	// caused by tokens with an unknown kid, which anyone can send.
	jwksUnknownKIDInterval = time.Minute
	// minRSABits is the smallest RSA modulus accepted.
	minRSABits = 2048
)

// trustedKey is a public key the verifier accepts, with the JWK metadata
// that restricts it.
type trustedKey struct {
	kid string
	alg string           // "" when the key is not restricted to one algorithm
	key crypto.PublicKey // ed25519.PublicKey, *rsa.PublicKey or *ecdsa.PublicKey
}

// fits reports whether k may verify a signature made with alg.
func (k trustedKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch pub := k.key.(type) {
	case ed25519.PublicKey:
		return alg == "EdDSA"
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	}
	return false
}

// jwk is the JSON form of one key of a JWKS (RFC 7517, RFC 7518, RFC 8037).
// Private members, if present, are ignored.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	N      string   `json:"n"`
	E      string   `json:"e"`
}

// parseJWKS returns the signature verification keys of a JWKS document.
// Keys that are not for signatures (use "enc", symmetric "oct" keys, X25519
// and the like), and keys that cannot be used, are skipped and described in
// skipped. It fails when no usable key is left.
func parseJWKS(data []byte) (keys []trustedKey, skipped []string, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	for i, raw := range set.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: malformed", i))
			continue
		}
		k, err := j.trustedKey()
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		if len(skipped) == 0 {
			return nil, nil, errors.New("JWKS holds no keys")
		}
		return nil, skipped, fmt.Errorf("JWKS holds no usable signature key: %s", strings.Join(skipped, "; "))
	}
	return keys, skipped, nil
}

// trustedKey checks j and decodes its public key.
func (j jwk) trustedKey() (trustedKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return trustedKey{}, fmt.Errorf("use %q is not sig", j.Use)
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return trustedKey{}, errors.New("key_ops does not include verify")
	}
	if j.Alg != "" && !allowedAlgs[j.Alg] {
		return trustedKey{}, fmt.Errorf("alg %q is not allowed", j.Alg)
	}
	k := trustedKey{kid: j.Kid, alg: j.Alg}
	var err error
	switch j.Kty {
	case "RSA":
		k.key, err = j.rsaKey()
	case "EC":
		k.key, err = j.ecKey()
	case "OKP":
		k.key, err = j.okpKey()
	default:
		return trustedKey{}, fmt.Errorf("unsupported kty %q", j.Kty)
	}
	if err != nil {
		return trustedKey{}, err
	}
	// A key restricted to an algorithm of another key type could never be
	// used; say so rather than keep it silently.
	if j.Alg != "" && !k.fits(j.Alg) {
		return trustedKey{}, fmt.Errorf("alg %q does not suit a %s key", j.Alg, j.Kty)
	}
	return k, nil
}

func (j jwk) rsaKey() (*rsa.PublicKey, error) {
	n, err := b64(j.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("bad RSA modulus n")
	}
	e, err := b64(j.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("bad RSA exponent e")
	}
	exp := new(big.Int).SetBytes(e).Int64()
	if exp < 3 || exp > math.MaxInt32 || exp%2 == 0 {
		return nil, errors.New("bad RSA exponent e")
	}
	mod := new(big.Int).SetBytes(n)
	if mod.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA modulus of %d bits is shorter than %d", mod.BitLen(), minRSABits)
	}
	return &rsa.PublicKey{N: mod, E: int(exp)}, nil
}

func (j jwk) ecKey() (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch j.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported EC curve %q", j.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, errX := b64(j.X)
	y, errY := b64(j.Y)
	// RFC 7518 section 6.2.1.2: x and y are the full field size.
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, errors.New("bad EC coordinates")
	}
	point := make([]byte, 0, 1+2*size)
	point = append(point, 4) // uncompressed
	point = append(point, x...)
	point = append(point, y...)
	// ParseUncompressedPublicKey checks that the point is on the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, errors.New("EC point is not on the curve")
	}
	return pub, nil
}

func (j jwk) okpKey() (ed25519.PublicKey, error) {
	if j.Crv != "Ed25519" {
		return nil, fmt.Errorf("unsupported OKP curve %q", j.Crv)
	}
	x, err := b64(j.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		return nil, errors.New("bad Ed25519 key x")
	}
	return ed25519.PublicKey(x), nil
}

// b64 decodes base64url, tolerating the padding some issuers add.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// jwksSource holds the keys of an external issuer, read from a file or an
// https URL, and keeps them fresh: periodically, and on demand (rate
// limited) when a token names a key id it does not know.
type jwksSource struct {
	location string // the file path or URL without credentials or query, for messages
	fetch    func(ctx context.Context) ([]byte, error)
	interval time.Duration
	log      *zap.Logger
	counter  *prometheus.CounterVec // trigger, outcome; nil for none

	keys atomic.Pointer[[]trustedKey]

	mu           sync.Mutex // serialises refreshes; guards lastOnDemand
	lastOnDemand time.Time

	ctx    context.Context // ends when the verifier closes
	cancel context.CancelFunc
	done   chan struct{}
}

// Triggers of a JWKS load, as counted.
const (
	triggerStart      = "start"
	triggerPeriodic   = "periodic"
	triggerUnknownKID = "unknown_kid"
)

// newJWKSSource loads the keys at location (a file path or an https URL,
// fetched with client) and starts refreshing them until ctx ends or close
// is called. Loads are counted in counter when it is not nil.
func newJWKSSource(ctx context.Context, location string, interval time.Duration, client *http.Client, log *zap.Logger, counter *prometheus.CounterVec) (*jwksSource, error) {
	s := &jwksSource{location: location, interval: interval, log: log, counter: counter}
	lower := strings.ToLower(location)
	switch {
	case strings.HasPrefix(lower, "https://"):
		u, err := url.Parse(location)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("auth: JWKS: %q is not an https URL", redactURL(location))
		}
		s.location = redactURL(location)
		c := *client
		c.CheckRedirect = sameHostRedirect
		if c.Timeout == 0 {
			c.Timeout = jwksFetchTimeout
		}
		s.fetch = func(ctx context.Context) ([]byte, error) { return fetchURL(ctx, &c, location) }
	case strings.HasPrefix(lower, "http://"):
		return nil, fmt.Errorf("auth: JWKS %s: an issuer's keys must be fetched over https", redactURL(location))
	default:
		s.fetch = func(context.Context) ([]byte, error) { return readFile(location) }
	}

	if err := s.load(ctx, triggerStart); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.run()
	return s, nil
}

// redactURL returns u without its user information, query and fragment,
// which may hold secrets, for messages and logs.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.ForceQuery, p.Fragment, p.RawFragment = nil, "", false, "", ""
	return p.String()
}

// defaultJWKSClient is the client used when none is configured: it gives
// up after jwksFetchTimeout and verifies the server with the CA
// certificates in caFile, or with the system roots when caFile is "".
func defaultJWKSClient(caFile string) (*http.Client, error) {
	c := &http.Client{Timeout: jwksFetchTimeout}
	if caFile == "" {
		return c, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("auth: JWKS CA file %s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c.Transport = tr
	return c, nil
}

// sameHostRedirect is the redirect policy of every JWKS fetch: a redirect
// is followed only to https on the host and port first asked (at most 5
// times). The keys that decide who may prescribe and dispense are taken
// only from the server the operator named: a redirect elsewhere (an open
// redirect on the issuer's site, say) is refused.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case req.URL.Scheme != "https":
		return errors.New("JWKS redirect away from https refused")
	case !strings.EqualFold(req.URL.Host, first.Host):
		return errors.New("JWKS redirect to another host refused")
	case len(via) >= 5:
		return errors.New("too many JWKS redirects")
	}
	return nil
}

func fetchURL(ctx context.Context, client *http.Client, location string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, location, nil)
	if err != nil {
		return nil, errors.New("bad JWKS URL")
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := client.Do(req)
	if err != nil {
		// A *url.Error names the URL, query and all: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSSize)
	}
	return data, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSSize)
	}
	return data, nil
}

// load refreshes the keys, counts the load under trigger and logs what
// changed; a failure is logged by the caller.
func (s *jwksSource) load(ctx context.Context, trigger string) error {
	old := s.keys.Load()
	err := s.refresh(ctx)
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	if s.counter != nil {
		s.counter.WithLabelValues(trigger, outcome).Inc()
	}
	if err == nil && old != nil {
		added, removed := kidDiff(*old, *s.keys.Load())
		if len(added) > 0 || len(removed) > 0 {
			s.log.Info("JWKS keys changed", zap.String("jwks", s.location), zap.String("trigger", trigger),
				zap.Strings("added", added), zap.Strings("removed", removed))
		}
	}
	return err
}

// kidDiff lists the key ids in next but not in prev (added) and in prev but
// not in next (removed); a key without kid is listed as "".
func kidDiff(prev, next []trustedKey) (added, removed []string) {
	ids := func(keys []trustedKey) map[string]bool {
		m := make(map[string]bool, len(keys))
		for _, k := range keys {
			m[k.kid] = true
		}
		return m
	}
	p, n := ids(prev), ids(next)
	for id := range n {
		if !p[id] {
			added = append(added, id)
		}
	}
	for id := range p {
		if !n[id] {
			removed = append(removed, id)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// refresh fetches and parses the JWKS and, if that works, replaces the
// keys; on failure the old keys stay.
func (s *jwksSource) refresh(ctx context.Context) error {
	data, err := s.fetch(ctx)
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", s.location, err)
	}
	keys, skipped, err := parseJWKS(data)
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", s.location, err)
	}
	if len(skipped) > 0 {
		s.log.Warn("JWKS keys skipped", zap.String("jwks", s.location), zap.Strings("skipped", skipped))
	}
	s.keys.Store(&keys)
	return nil
}

// run refreshes the keys every interval, and sooner after a failure, until
// the source's context ends.
func (s *jwksSource) run() {
	defer close(s.done)
	t := time.NewTimer(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		err := s.load(s.ctx, triggerPeriodic)
		s.mu.Unlock()
		next := s.interval
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.log.Warn("JWKS refresh failed; keeping the previous keys", zap.String("jwks", s.location), zap.Error(err))
			next = min(next, jwksRetryInterval)
		}
		t.Reset(next)
	}
}

// refreshForUnknownKID refreshes the keys because a token named a key id
// that is not among them, unless such a refresh happened less than
// jwksUnknownKIDInterval ago. A refresh already under way is waited for.
func (s *jwksSource) refreshForUnknownKID() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lastOnDemand.IsZero() && time.Since(s.lastOnDemand) < jwksUnknownKIDInterval {
		return
	}
	s.lastOnDemand = time.Now()
	if err := s.load(s.ctx, triggerUnknownKID); err != nil && s.ctx.Err() == nil {
		s.log.Warn("JWKS refresh for an unknown key id failed; keeping the previous keys", zap.String("jwks", s.location), zap.Error(err))
	}
}

// current returns the keys as last loaded.
func (s *jwksSource) current() []trustedKey {
	return *s.currentSet()
}

// currentSet returns the keys in use as the set they were stored as: a
// refresh stores a new set, so a set still current has not changed.
func (s *jwksSource) currentSet() *[]trustedKey {
	return s.keys.Load()
}

// close stops the refreshing and waits for it to end.
func (s *jwksSource) close() {
	s.cancel()
	<-s.done
}
