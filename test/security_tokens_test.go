package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
)

// The requests the token tests make: a tracker search anyone with a good
// token may make, and the admin-only audit list.
const (
	tokenProbe = "/FHIR/R4/RequestGroup?nhsNumber=9449304130"
	adminProbe = "/api/v1/audit"
)

// claimsFor are the claims of a good token of the broker's own issuer.
func claimsFor(role auth.Role, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "user-" + string(role), "ods": "FA565", "role": string(role),
		"iss": auth.DefaultIssuer, "aud": auth.DefaultAudience,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// signToken signs c with method and key; header values are set after the
// library's own (alg, typ), so they may replace them.
func signToken(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signJSON signs a header and payload given as JSON text, byte for byte,
// with an Ed25519 key.
func signJSON(key ed25519.PrivateKey, header, payload string) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(in)))
}

// ecJWK is the public JWK of an EC P-256 key.
func ecJWK(kid string, k *ecdsa.PrivateKey) map[string]any {
	b, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]), "y": base64.RawURLEncoding.EncodeToString(b[33:])}
}

func jwksOf(keys ...map[string]any) []byte {
	return mustJSON(map[string]any{"keys": keys})
}

// wantUnauthorized checks a 401 OperationOutcome that does not echo the
// token.
func wantUnauthorized(t *testing.T, r *response, token, reason string) {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: %s", r.Status, r.Body)
	}
	oo := r.outcome(t)
	if !oo.hasCode("UNAUTHORIZED") {
		t.Errorf("codes %v, want UNAUTHORIZED", oo.codes())
	}
	if reason != "" && !strings.Contains(oo.Issue[0].Diagnostics, reason) {
		t.Errorf("diagnostics %q do not say %q", oo.Issue[0].Diagnostics, reason)
	}
	if token != "" && strings.Contains(string(r.Body), token) {
		t.Error("the answer echoes the token")
	}
}

// TestSecurityTokenForgeries sends every token forgery the attack tried, and
// the claim tricks, to a running broker: each answers 401 and reads nothing.
func TestSecurityTokenForgeries(t *testing.T) {
	attackerJWKS := atomic.Int32{}
	attacker := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerJWKS.Add(1)
		http.NotFound(w, r)
	}))
	defer attacker.Close()

	b := startBroker(t, "")
	key := b.App.IssuerKey
	pub := key.Public().(ed25519.PublicKey)
	kid := auth.KeyID(pub)
	now := time.Now()
	own := func(change func(jwt.MapClaims)) string {
		c := claimsFor(auth.RoleAdmin, now)
		if change != nil {
			change(c)
		}
		return signToken(t, jwt.SigningMethodEdDSA, key, c, map[string]any{"kid": kid})
	}
	_, evil, _ := ed25519.GenerateKey(rand.Reader)
	evilPub := evil.Public().(ed25519.PublicKey)
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	header := fmt.Sprintf(`{"alg":"EdDSA","typ":"JWT","kid":%q}`, kid)
	payload := func(extra string) string {
		return fmt.Sprintf(`{"sub":"user-tracker","ods":"FA565","role":"tracker","iss":%q,"aud":%q,"iat":%d,"exp":%d%s}`,
			auth.DefaultIssuer, auth.DefaultAudience, now.Unix(), now.Add(time.Hour).Unix(), extra)
	}

	// The controls: the same shapes, untampered, are accepted.
	for name, tok := range map[string]string{
		"own token": own(nil), "raw JSON token": signJSON(key, header, payload("")),
		"12h token": own(func(c jwt.MapClaims) { c["exp"] = now.Add(12 * time.Hour).Unix() }),
	} {
		if r := b.do("GET", tokenProbe, tok, nil); r.Status != http.StatusOK {
			t.Fatalf("control %s: status %d: %s", name, r.Status, r.Body)
		}
	}
	if r := b.do("GET", adminProbe, signJSON(key, header, payload("")), nil); r.Status != http.StatusForbidden {
		t.Fatalf("control: a tracker on the audit list: status %d, want 403", r.Status)
	}

	cases := []struct {
		name, path, token, reason string
	}{
		{"alg none", tokenProbe, signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": kid}), "algorithm not allowed"},
		{"alg none with the signature of a real token", tokenProbe, func() string {
			p := strings.Split(own(nil), ".")
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
			return h + "." + p[1] + "." + p[2]
		}(), ""},
		{"alg NONE", tokenProbe, signJSON(key, `{"alg":"NONE"}`, payload("")), "algorithm not allowed"},
		{"HS256 with the public key as secret", tokenProbe, signToken(t, jwt.SigningMethodHS256, []byte(pub), claimsFor(auth.RoleAdmin, now), map[string]any{"kid": kid}), "algorithm not allowed"},
		{"HS256 with the public key PEM as secret", tokenProbe, signToken(t, jwt.SigningMethodHS256, pubPEM, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": kid}), "algorithm not allowed"},
		{"HS512 with the public key as secret, no kid", tokenProbe, signToken(t, jwt.SigningMethodHS512, []byte(pub), claimsFor(auth.RoleAdmin, now), nil), "algorithm not allowed"},
		{"unknown kid", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": auth.KeyID(evilPub)}), "not trusted"},
		{"attacker key under the broker's kid", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": kid}), "invalid signature"},
		{"attacker key, no kid", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), nil), "invalid signature"},
		{"attacker key in an embedded jwk header", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{
			"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(evilPub)}}), "invalid signature"},
		{"attacker JWKS in a jku header", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{
			"kid": "evil", "jku": attacker.URL + "/jwks.json", "x5u": attacker.URL + "/cert.pem"}), "not trusted"},
		{"kid path traversal to the issuer key", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": "../../keys/issuer-ed25519.pem"}), "not trusted"},
		{"kid path traversal to an empty file", tokenProbe, signToken(t, jwt.SigningMethodHS256, []byte{}, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": "../../../../dev/null"}), "algorithm not allowed"},
		{"kid absolute path", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": "/etc/passwd"}), "not trusted"},
		{"kid with NUL", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, key, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": kid + "\x00.pem"}), "malformed kid"},
		{"kid with SQL", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, evil, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": "' UNION SELECT 'key"}), "malformed kid"},
		{"kid not a string", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, key, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": []string{kid}}), "malformed kid"},
		{"kid of 1000 characters", tokenProbe, signToken(t, jwt.SigningMethodEdDSA, key, claimsFor(auth.RoleAdmin, now), map[string]any{"kid": strings.Repeat(kid, 24)}), "malformed kid"},
		{"expired", tokenProbe, own(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}), "token expired"},
		{"not yet valid", tokenProbe, own(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Minute).Unix() }), "not valid yet"},
		{"issued in the future", tokenProbe, own(func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() }), "issued in the future"},
		{"no exp", tokenProbe, own(func(c jwt.MapClaims) { delete(c, "exp") }), "missing exp"},
		{"wrong iss", tokenProbe, own(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), "wrong issuer"},
		{"wrong aud", tokenProbe, own(func(c jwt.MapClaims) { c["aud"] = "another-service" }), "wrong audience"},
		{"aud a list without ours", tokenProbe, own(func(c jwt.MapClaims) { c["aud"] = []string{"eps-broker-test", "EPS-BROKER"} }), "wrong audience"},
		{"over the maximum lifetime (12h)", tokenProbe, own(func(c jwt.MapClaims) { c["exp"] = now.Add(12*time.Hour + time.Minute).Unix() }), "lifetime longer than 12h0m0s"},
		{"issued long ago, still unexpired", tokenProbe, own(func(c jwt.MapClaims) {
			c["iat"], c["nbf"] = now.Add(-30*24*time.Hour).Unix(), now.Add(-30*24*time.Hour).Unix()
		}), "lifetime longer"},
		{"no iat, exp in 10 years", tokenProbe, own(func(c jwt.MapClaims) { delete(c, "iat"); c["exp"] = now.Add(10 * 365 * 24 * time.Hour).Unix() }), "lifetime longer"},
		{"sub of 4 KiB", tokenProbe, own(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("a", 4096) }), "invalid sub"},
		{"sub forging a log line", tokenProbe, own(func(c jwt.MapClaims) { c["sub"] = "alice\n{\"level\":\"info\",\"msg\":\"admin login\"}" }), "invalid sub"},
		{"sub with a right-to-left override", tokenProbe, own(func(c jwt.MapClaims) { c["sub"] = "alice\u202enimda" }), "invalid sub"},
		{"sub with ANSI escapes", tokenProbe, own(func(c jwt.MapClaims) { c["sub"] = "\x1b[2J\x1b[0;0Halice" }), "invalid sub"},
		{"sub a number", tokenProbe, own(func(c jwt.MapClaims) { c["sub"] = 555254242106 }), "malformed"},
		{"ods with HTML", tokenProbe, own(func(c jwt.MapClaims) { c["ods"] = "<b>FA565</b>" }), "invalid ods"},
		{"ods of 1 KiB", tokenProbe, own(func(c jwt.MapClaims) { c["ods"] = strings.Repeat("F", 1024) }), "invalid ods"},
		{"role unknown", tokenProbe, own(func(c jwt.MapClaims) { c["role"] = "root" }), "invalid role"},
		{"role a list", tokenProbe, own(func(c jwt.MapClaims) { c["role"] = []string{"tracker", "admin"} }), "malformed"},
		{"duplicate role: tracker then admin", adminProbe, signJSON(key, header, payload(`,"role":"admin"`)), "duplicate member"},
		{"duplicate role with an escaped name", adminProbe, signJSON(key, header, payload(`,"rol\u0065":"admin"`)), "duplicate member"},
		{"duplicate ods", tokenProbe, signJSON(key, header, payload(`,"ods":"FH542"`)), "duplicate member"},
		{"ROLE beside role: a case-insensitive reader takes admin", adminProbe, signJSON(key, header, payload(`,"ROLE":"admin"`)), "spelled in another case"},
		{"duplicate exp", tokenProbe, signJSON(key, header, payload(fmt.Sprintf(`,"exp":%d`, now.Add(-time.Hour).Unix()))), "duplicate member"},
		{"duplicate alg in the header", tokenProbe, signJSON(key, fmt.Sprintf(`{"alg":"none","kid":%q,"alg":"EdDSA"}`, kid), payload("")), "duplicate member"},
		{"payload tampered after signing", adminProbe, func() string {
			p := strings.Split(signJSON(key, header, payload("")), ".")
			p[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(payload(""), `"tracker"`, `"admin"`, 1)))
			return strings.Join(p, ".")
		}(), "invalid signature"},
		{"token of 20 KiB", tokenProbe, own(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 20<<10) }), "too large"},
		{"not a JWT", tokenProbe, "eyJhbGciOiJFZERTQSJ9.e30", "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantUnauthorized(t, b.do("GET", tc.path, tc.token, nil), tc.token, tc.reason)
			// The tracker page's sign-in verifies the same way.
			r := b.do("POST", "/tracker/session", "", mustJSON(map[string]string{"token": tc.token}),
				"Content-Type", "application/json", "X-EPS-Tracker", "1")
			wantUnauthorized(t, r, tc.token, tc.reason)
			if c := r.Header.Get("Set-Cookie"); c != "" {
				t.Errorf("sign-in set a cookie: %s", c)
			}
		})
	}
	if n := attackerJWKS.Load(); n != 0 {
		t.Errorf("the broker fetched the attacker's jku/x5u %d times", n)
	}
}

// TestSecurityTokenMaxLifetimeFlag: --token-max-lifetime is honoured.
func TestSecurityTokenMaxLifetimeFlag(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.TokenMaxLifetime = time.Hour })
	for ttl, want := range map[time.Duration]int{time.Hour: http.StatusOK, 2 * time.Hour: http.StatusUnauthorized} {
		tok, err := auth.Mint(b.App.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: "u", ODS: "FA565", Role: auth.RoleTracker}, ttl, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if r := b.do("GET", tokenProbe, tok, nil); r.Status != want {
			t.Errorf("ttl %v: status %d, want %d: %s", ttl, r.Status, want, r.Body)
		}
	}
	for _, args := range [][]string{{"--token-max-lifetime", "720h"}, {"--token-max-lifetime", "30s"}, {"--jwks-refresh", "1h"}, {"--jwks-refresh", "0s"}} {
		if _, err := config.Load(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if c, err := config.Load(nil, func(string) string { return "" }, io.Discard); err != nil || c.TokenMaxLifetime != 12*time.Hour || c.JWKSRefresh != 5*time.Minute {
		t.Errorf("defaults: %v %v %v", c.TokenMaxLifetime, c.JWKSRefresh, err)
	}
}

// issuerJWKS is an external issuer's https JWKS endpoint, with its CA
// certificate in a file for --jwks-ca.
type issuerJWKS struct {
	srv     *httptest.Server
	doc     atomic.Pointer[[]byte]
	fetched chan struct{}
	caFile  string
}

func newIssuerJWKS(t *testing.T, doc []byte) *issuerJWKS {
	t.Helper()
	s := &issuerJWKS{fetched: make(chan struct{}, 100)}
	s.doc.Store(&doc)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*s.doc.Load())
		select {
		case s.fetched <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "issuer-ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSecurityJWKSKeyRemoved: a key the external issuer removes from its
// JWKS is distrusted after the next refresh, while its other keys and the
// broker's own keep working; the refreshes show in /metrics.
func TestSecurityJWKSKeyRemoved(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss := newIssuerJWKS(t, jwksOf(ecJWK("k1", k1), ecJWK("k2", k2)))
	b := startBroker(t, "", func(c *config.Config) {
		c.JWKS = iss.srv.URL + "/.well-known/jwks.json"
		c.JWKSCA = iss.caFile
		c.JWKSRefresh = time.Second
	})
	now := time.Now()
	tok1 := signToken(t, jwt.SigningMethodES256, k1, claimsFor(auth.RoleTracker, now), map[string]any{"kid": "k1"})
	tok2 := signToken(t, jwt.SigningMethodES256, k2, claimsFor(auth.RoleTracker, now), map[string]any{"kid": "k2"})
	for _, tok := range []string{tok1, tok2, b.token(auth.RoleTracker, "FA565")} {
		if r := b.do("GET", tokenProbe, tok, nil); r.Status != http.StatusOK {
			t.Fatalf("before the removal: status %d: %s", r.Status, r.Body)
		}
	}

	only2 := jwksOf(ecJWK("k2", k2))
	iss.doc.Store(&only2)
	// Drop the fetches so far. Refreshes run one after another: of the
	// fetches reported from now on, the first may have been answered before
	// the change, the second began after it, and once a third is answered
	// the second's keys are in place.
	for len(iss.fetched) > 0 {
		<-iss.fetched
	}
	for range 3 {
		select {
		case <-iss.fetched:
		case <-time.After(30 * time.Second):
			t.Fatal("the broker did not refresh the JWKS")
		}
	}
	wantUnauthorized(t, b.do("GET", tokenProbe, tok1, nil), tok1, "not trusted")
	for _, tok := range []string{tok2, b.token(auth.RoleTracker, "FA565")} {
		if r := b.do("GET", tokenProbe, tok, nil); r.Status != http.StatusOK {
			t.Fatalf("after the removal: status %d: %s", r.Status, r.Body)
		}
	}
	r := b.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(r.Body), `eps_jwks_refreshes_total{outcome="ok",trigger="periodic"}`) ||
		!strings.Contains(string(r.Body), `eps_jwks_refreshes_total{outcome="ok",trigger="start"} 1`) {
		t.Errorf("/metrics does not count the JWKS refreshes")
	}
}

// TestSecurityJWKSRedirectElsewhereRefused: a JWKS URL that redirects to
// another host is refused, so the broker does not start on it; a redirect
// on the same host is followed.
func TestSecurityJWKSRedirectElsewhereRefused(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	doc := jwksOf(ecJWK("k", ec))
	// The attacker's host serves its own keys; the issuer's site has an
	// open redirect to it.
	elsewhere := newIssuerJWKS(t, doc)
	iss := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/open-redirect":
			http.Redirect(w, r, elsewhere.srv.URL+"/jwks.json", http.StatusFound)
		case "/moved":
			http.Redirect(w, r, "/jwks.json", http.StatusMovedPermanently)
		default:
			w.Write(doc)
		}
	}))
	iss.Config.ErrorLog = log.New(io.Discard, "", 0)
	iss.StartTLS()
	defer iss.Close()
	// One CA file vouching for both servers: only the redirect rule refuses.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBoth := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Certificate().Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: elsewhere.srv.Certificate().Raw})...)
	if err := os.WriteFile(ca, pemBoth, 0o644); err != nil {
		t.Fatal(err)
	}

	start := func(path string) (*app.App, error) {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.JWKS, cfg.JWKSCA = iss.URL+path, ca
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		return app.New(ctx, cfg, zap.NewNop(), nil)
	}
	for len(elsewhere.fetched) > 0 {
		<-elsewhere.fetched
	}
	if _, err := start("/open-redirect"); err == nil {
		t.Fatal("the broker started with keys fetched from another host")
	} else if !strings.Contains(err.Error(), "redirect to another host refused") {
		t.Errorf("error %q does not say why", err)
	}
	if n := len(elsewhere.fetched); n != 0 {
		t.Errorf("the other host was asked %d times", n)
	}

	b := startBroker(t, "", func(c *config.Config) { c.JWKS, c.JWKSCA = iss.URL+"/moved", ca })
	tok := signToken(t, jwt.SigningMethodES256, ec, claimsFor(auth.RoleTracker, time.Now()), map[string]any{"kid": "k"})
	if r := b.do("GET", tokenProbe, tok, nil); r.Status != http.StatusOK {
		t.Fatalf("keys behind a same-host redirect: status %d: %s", r.Status, r.Body)
	}
}
