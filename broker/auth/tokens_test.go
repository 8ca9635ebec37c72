package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
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
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// signRaw signs the header and payload JSON text exactly as given with an
// Ed25519 key, as a token forger with a trusted key could: the JWT library
// would re-encode them and drop duplicate members.
func signRaw(key ed25519.PrivateKey, header, payload string) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(in)))
}

// rawPayload is validClaims as JSON text, with extra members before the
// closing brace.
func rawPayload(extra string) string {
	return fmt.Sprintf(`{"sub":"user-1","ods":"FA565","role":"dispenser","iss":%q,"aud":%q,"iat":%d,"nbf":%d,"exp":%d%s}`,
		DefaultIssuer, DefaultAudience, testNow.Unix(), testNow.Unix(), testNow.Add(time.Hour).Unix(), extra)
}

func TestVerifyTokenBounds(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	kid := KeyID(pub)
	v := newLocalVerifier(t, pub)
	header := fmt.Sprintf(`{"alg":"EdDSA","kid":%q,"typ":"JWT"}`, kid)

	with := func(change func(jwt.MapClaims)) string {
		c := validClaims()
		change(c)
		return sign(t, jwt.SigningMethodEdDSA, key, kid, c)
	}
	times := func(iat, exp time.Duration) string {
		return with(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = testNow.Add(iat).Unix(), testNow.Add(iat).Unix(), testNow.Add(exp).Unix()
		})
	}
	noIat := func(exp time.Duration) string {
		return with(func(c jwt.MapClaims) { delete(c, "iat"); c["exp"] = testNow.Add(exp).Unix() })
	}
	sub := func(s string) string { return with(func(c jwt.MapClaims) { c["sub"] = s }) }
	withKid := func(k any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, validClaims())
		tok.Header["kid"] = k
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cases := []struct {
		name, token string
		reason      string // "" when the token is accepted
	}{
		// Lifetime: exp - iat, or exp - now without iat, at most 12h.
		{"lifetime 12h", times(0, 12*time.Hour), ""},
		{"lifetime 12h and 1s", times(0, 12*time.Hour+time.Second), "lifetime longer than 12h0m0s"},
		{"issued 11h ago, 1h left", times(-11*time.Hour, time.Hour), ""},
		{"issued 13h ago, 1h left", times(-13*time.Hour, time.Hour), "lifetime longer"},
		{"issued in 1970", with(func(c jwt.MapClaims) { c["iat"], c["nbf"] = 0, 0 }), "lifetime longer"},
		{"a year", times(0, 365*24*time.Hour), "lifetime longer"},
		{"no iat, 12h left", noIat(12 * time.Hour), ""},
		{"no iat, 12h and 20s left (leeway)", noIat(12*time.Hour + 20*time.Second), ""},
		{"no iat, 12h and 1m left", noIat(12*time.Hour + time.Minute), "lifetime longer"},
		{"exp far in the future", noIat(100 * 365 * 24 * time.Hour), "lifetime longer"},

		// sub: 1 to 256 bytes of printable characters.
		{"sub CIS2 user ID", sub("555254242106"), ""},
		{"sub e-mail", sub("jane.smith@nhs.net"), ""},
		{"sub with accents and spaces", sub("Zoë O'Brien-Ñúñez 名"), ""},
		{"sub of 256 bytes", sub(strings.Repeat("a", 256)), ""},
		{"sub of 257 bytes", sub(strings.Repeat("a", 257)), "invalid sub"},
		{"sub of a megabyte-ish", sub(strings.Repeat("é", 5000)), "invalid sub"},
		{"sub with a line break (log forging)", sub("alice\n{\"level\":\"info\",\"role\":\"admin\"}"), "invalid sub"},
		{"sub with CR", sub("alice\rbob"), "invalid sub"},
		{"sub with NUL", sub("alice\x00"), "invalid sub"},
		{"sub with a tab", sub("alice\tbob"), "invalid sub"},
		{"sub with ESC (terminal codes)", sub("\x1b[31malice"), "invalid sub"},
		{"sub with a right-to-left override", sub("alice\u202egnp.exe"), "invalid sub"},
		{"sub with a zero-width space", sub("ali\u200bce"), "invalid sub"},
		{"sub with a leading space", sub(" alice"), "invalid sub"},
		{"sub with a trailing space", sub("alice "), "invalid sub"},
		{"sub only spaces", sub("   "), "invalid sub"},
		{"sub not a string", with(func(c jwt.MapClaims) { c["sub"] = 12 }), "malformed"},
		{"sub in invalid UTF-8", signRaw(key, header, strings.Replace(rawPayload(""), `"user-1"`, "\"user-\xff\"", 1)), "malformed"},

		// ods and role stay as before; an ods with odd characters is refused.
		{"ods with a line break", with(func(c jwt.MapClaims) { c["ods"] = "FA565\n" }), "invalid ods"},
		{"ods too long", with(func(c jwt.MapClaims) { c["ods"] = strings.Repeat("A", 300) }), "invalid ods"},
		{"role with a NUL", with(func(c jwt.MapClaims) { c["role"] = "admin\x00" }), "invalid role"},

		// kid: 1 to 256 visible ASCII characters; tricks are unknown keys.
		{"kid path traversal", withKid("../../keys/issuer-ed25519.pem"), "not trusted"},
		{"kid absolute path", withKid("/dev/null"), "not trusted"},
		{"kid file URL", withKid("file:///etc/passwd"), "not trusted"},
		{"kid SQL", withKid("x' OR '1'='1"), "malformed kid"},
		{"kid SQL without spaces", withKid("x'OR'1'='1"), "not trusted"},
		{"kid with NUL", withKid(kid + "\x00"), "malformed kid"},
		{"kid with a line break", withKid(kid + "\n"), "malformed kid"},
		{"kid empty", withKid(""), "malformed kid"},
		{"kid of 257 characters", withKid(strings.Repeat("k", 257)), "malformed kid"},
		{"kid an object", withKid(map[string]any{"kid": kid}), "malformed kid"},
		{"kid an array", withKid([]string{kid}), "malformed kid"},

		// Duplicate members, in the header or the claims, at any depth.
		{"raw control", signRaw(key, header, rawPayload("")), ""},
		{"duplicate role", signRaw(key, header, rawPayload(`,"role":"admin"`)), "duplicate member"},
		{"duplicate sub", signRaw(key, header, rawPayload(`,"sub":"someone-else"`)), "duplicate member"},
		{"duplicate ods", signRaw(key, header, rawPayload(`,"ods":"FH542"`)), "duplicate member"},
		{"duplicate exp", signRaw(key, header, rawPayload(fmt.Sprintf(`,"exp":%d`, testNow.Add(-time.Hour).Unix()))), "duplicate member"},
		{"duplicate aud", signRaw(key, header, rawPayload(`,"aud":"elsewhere"`)), "duplicate member"},
		{"duplicate role, escaped name", signRaw(key, header, rawPayload(`,"r\u006fle":"admin"`)), "duplicate member"},
		{"duplicate in a nested claim", signRaw(key, header, rawPayload(`,"x":{"a":1,"a":2}`)), "duplicate member"},
		{"duplicate alg in the header", signRaw(key, fmt.Sprintf(`{"alg":"none","kid":%q,"alg":"EdDSA"}`, kid), rawPayload("")), "duplicate member"},
		{"duplicate kid in the header", signRaw(key, fmt.Sprintf(`{"alg":"EdDSA","kid":"other","kid":%q}`, kid), rawPayload("")), "duplicate member"},
		{"trailing text after the claims", signRaw(key, header, rawPayload("")+`{"role":"admin"}`), "malformed"},
		// encoding/json matches names without regard to case; the JWT
		// specifications and other parsers do not.
		{"ROLE beside role", signRaw(key, header, rawPayload(`,"ROLE":"admin"`)), "spelled in another case"},
		{"Sub beside sub", signRaw(key, header, rawPayload(`,"Sub":"someone-else"`)), "spelled in another case"},
		{"long s: \u017fub beside sub", signRaw(key, header, rawPayload(`,"\u017fub":"someone-else"`)), "spelled in another case"},
		{"Aud alone", signRaw(key, header, fmt.Sprintf(`{"sub":"user-1","ods":"FA565","role":"dispenser","iss":%q,"Aud":%q,"exp":%d}`, DefaultIssuer, DefaultAudience, testNow.Add(time.Hour).Unix())), "spelled in another case"},
		{"ALG in the header", signRaw(key, fmt.Sprintf(`{"alg":"EdDSA","kid":%q,"ALG":"none"}`, kid), rawPayload("")), "spelled in another case"},
		{"another claim in capitals is fine", signRaw(key, header, rawPayload(`,"Department":"x","NAME":"y"`)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second answer may come from the token cache and
			// must be the same.
			first, firstErr := v.Verify(tc.token)
			p, err := v.Verify(tc.token)
			if p != first || (err == nil) != (firstErr == nil) {
				t.Fatalf("first %+v, %v; then %+v, %v", first, firstErr, p, err)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %+v", p)
			}
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q, want ErrUnauthorized saying %q", err, tc.reason)
			}
		})
	}
}

func TestVerifyMaxLifetimeConfigured(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub,
		MaxLifetime: time.Hour, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for ttl, ok := range map[time.Duration]bool{time.Hour: true, time.Hour + time.Second: false, 8 * time.Hour: false} {
		tok, err := Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: "s", ODS: "FA565", Role: RoleTracker}, ttl, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok); (err == nil) != ok {
			t.Errorf("ttl %v: err %v, want accepted %v", ttl, err, ok)
		}
	}
}

func TestMintRefusesBadSubject(t *testing.T) {
	key := newKey(t)
	for _, sub := range []string{"a\nb", strings.Repeat("x", 257), " a", "a\u202e"} {
		if _, err := Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: sub, ODS: "FA565", Role: RoleTracker}, time.Hour, testNow); err == nil {
			t.Errorf("Mint accepted sub %q", sub)
		}
	}
}

// count is the value of the counter of c with the labels trigger and
// outcome (0 when it was never counted).
func count(c *prometheus.CounterVec, trigger, outcome string) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["trigger"] == trigger && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// jwksServer serves the JWKS in doc over TLS and reports each answered
// fetch on fetched.
type jwksServer struct {
	*httptest.Server
	doc     atomic.Pointer[[]byte]
	fetched chan struct{}
	fail    atomic.Bool
}

func newJWKSServer(t *testing.T, doc []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{fetched: make(chan struct{}, 100)}
	s.doc.Store(&doc)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.fail.Load() {
			http.Error(w, "down", http.StatusBadGateway)
		} else {
			w.Write(*s.doc.Load())
		}
		select {
		case s.fetched <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(doc []byte) { s.doc.Store(&doc) }

// waitFetches waits for n more fetches to have been answered.
func (s *jwksServer) waitFetches(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.fetched:
		case <-time.After(30 * time.Second):
			t.Fatal("the JWKS was not fetched again")
		}
	}
}

// drain forgets the fetches reported so far.
func (s *jwksServer) drain() {
	for {
		select {
		case <-s.fetched:
		default:
			return
		}
	}
}

func TestJWKSRemovedKeyDistrustedAfterRefresh(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t, jwksJSON(t, jwkOf(t, "k1", k1), jwkOf(t, "k2", k2)))
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"trigger", "outcome"})
	logs, seen := observer.New(zap.InfoLevel)
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, JWKS: srv.URL + "/jwks.json?client_secret=hunter2",
		HTTPClient: srv.Client(), JWKSRefresh: time.Second, JWKSRefreshes: counter,
		Logger: zap.New(logs), Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok1 := sign(t, jwt.SigningMethodES256, k1, "k1", validClaims())
	if _, err := v.Verify(tok1); err != nil {
		t.Fatal(err)
	}

	// The issuer withdraws k1 (compromised, say). Its kid is still known,
	// so no token makes the verifier look again: the periodic refresh must.
	srv.set(jwksJSON(t, jwkOf(t, "k2", k2)))
	srv.drain()
	// Refreshes run one after another. Of the fetches reported from now
	// on, the first may have been answered before the change; the second
	// began after it, and once a third is answered, the second's keys are
	// in place.
	srv.waitFetches(t, 3)
	if _, err := v.Verify(tok1); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("a token signed with the removed key: %v", err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k2, "k2", validClaims())); err != nil {
		t.Fatalf("the remaining key: %v", err)
	}
	changed := seen.FilterMessage("JWKS keys changed").All()
	if len(changed) == 0 || fmt.Sprint(changed[0].ContextMap()["removed"]) != "[k1]" {
		t.Errorf("the removal was not logged with the kid: %+v", changed)
	}

	// The issuer's server fails: counted, logged without the URL's query,
	// and the keys stay.
	srv.fail.Store(true)
	srv.drain()
	srv.waitFetches(t, 3)
	if n := count(counter, "periodic", "failed"); n < 1 {
		t.Errorf("failed refreshes counted %v", n)
	}
	if n := count(counter, "start", "ok"); n != 1 {
		t.Errorf("start loads counted %v, want 1", n)
	}
	if n := count(counter, "periodic", "ok"); n < 2 {
		t.Errorf("periodic loads counted %v, want at least 2", n)
	}
	failed := seen.FilterMessage("JWKS refresh failed; keeping the previous keys").All()
	if len(failed) == 0 {
		t.Fatal("a failed refresh was not logged")
	}
	for _, e := range seen.All() {
		if s := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(s, "hunter2") {
			t.Errorf("a log line holds the URL's secret: %s", s)
		}
	}
	if !strings.Contains(fmt.Sprint(failed[0].ContextMap()), "502") {
		t.Errorf("the failure's cause is not logged: %v", failed[0].ContextMap())
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k2, "k2", validClaims())); err != nil {
		t.Fatalf("a failed refresh dropped the keys: %v", err)
	}
}

func TestJWKSUnknownKIDRefreshCounted(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t, jwksJSON(t, jwkOf(t, "k1", k1)))
	counter := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"trigger", "outcome"})
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, JWKS: srv.URL,
		HTTPClient: srv.Client(), JWKSRefreshes: counter, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	srv.set(jwksJSON(t, jwkOf(t, "k2", k2)))
	for range 10 {
		v.Verify(sign(t, jwt.SigningMethodES256, k2, "k2", validClaims()))
	}
	if n := count(counter, "unknown_kid", "ok"); n != 1 {
		t.Errorf("unknown-kid refreshes counted %v, want 1 (rate limited)", n)
	}
}

func TestJWKSRefreshIntervalBounded(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksJSON(t, jwkOf(t, "k", ec)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ set, want time.Duration }{
		{0, 5 * time.Minute}, {24 * time.Hour, MaxJWKSRefresh}, {time.Minute, time.Minute}, {time.Millisecond, time.Second},
	} {
		v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: path, JWKSRefresh: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if got := v.jwks.interval; got != tc.want {
			t.Errorf("JWKSRefresh %v: interval %v, want %v", tc.set, got, tc.want)
		}
		v.Close()
	}
}

func TestJWKSRedirects(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	doc := jwksJSON(t, jwkOf(t, "k", ec))
	other := newJWKSServer(t, doc) // another host (another port) with a JWKS
	mux := http.NewServeMux()
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) { w.Write(doc) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/jwks.json", http.StatusFound) })
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/jwks.json", http.StatusFound)
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+r.Host+"/jwks.json", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	srv.StartTLS()
	defer srv.Close()
	// One client that trusts both servers: only the redirect policy decides.
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(other.Certificate())

	for _, tc := range []struct{ path, refused string }{
		{"/jwks.json", ""},
		{"/moved", ""},
		{"/elsewhere", "redirect to another host refused"},
		{"/plain", "redirect away from https refused"},
		{"/loop", "too many JWKS redirects"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: srv.URL + tc.path, HTTPClient: client})
			if tc.refused == "" {
				if err != nil {
					t.Fatal(err)
				}
				v.Close()
				return
			}
			if err == nil {
				v.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("error %q, want %q", err, tc.refused)
			}
		})
	}
}

func TestJWKSCAFile(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t, jwksJSON(t, jwkOf(t, "k", ec)))
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience, JWKS: srv.URL, JWKSCAFile: ca,
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatalf("JWKS from a server the CA file vouches for: %v", err)
	}
	defer v.Close()
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, ec, "k", validClaims())); err != nil {
		t.Fatal(err)
	}

	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("no certificates here"), 0o644)
	for _, file := range []string{empty, filepath.Join(dir, "missing.pem")} {
		if v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: srv.URL, JWKSCAFile: file}); err == nil {
			v.Close()
			t.Errorf("CA file %s accepted", file)
		}
	}
}

func TestJWKSURLRedactedInErrors(t *testing.T) {
	srv := newJWKSServer(t, []byte("not json"))
	for _, u := range []string{
		srv.URL + "/jwks?access_token=hunter2",
		strings.Replace(srv.URL, "https://", "https://admin:hunter2@", 1) + "/jwks",
		strings.Replace(srv.URL, "https://", "http://", 1) + "/jwks?key=hunter2",
	} {
		v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: u, HTTPClient: srv.Client()})
		if err == nil {
			v.Close()
			t.Fatalf("%s: accepted", u)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q holds the URL's secret", err)
		}
	}
}

// BenchmarkVerify measures Verify on a token of the broker's own issuer
// without a token cache, answered from the cache, and missing the cache
// (verified in full, then cached); and checkSegments alone (the
// duplicate-member check Verify adds).
func BenchmarkVerify(b *testing.B) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub,
		Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	tok, err := Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: "555254242106", ODS: "FA565", Role: RoleDispenser}, time.Hour, testNow)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A token answered from the token cache.
	cached, err := NewVerifier(context.Background(), VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub,
		Now: func() time.Time { return testNow }, TokenCacheSize: DefaultTokenCacheSize})
	if err != nil {
		b.Fatal(err)
	}
	defer cached.Close()
	b.Run("VerifyCacheHit", func(b *testing.B) {
		for b.Loop() {
			if _, err := cached.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Two tokens through a cache of one: each is a miss, verified in full,
	// and evicts the other.
	tiny, err := NewVerifier(context.Background(), VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub,
		Now: func() time.Time { return testNow }, TokenCacheSize: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer tiny.Close()
	tok2, err := Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: "555254242107", ODS: "FA565", Role: RoleDispenser}, time.Hour, testNow)
	if err != nil {
		b.Fatal(err)
	}
	pair := [2]string{tok, tok2}
	b.Run("VerifyCacheMiss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := tiny.Verify(pair[i&1]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("checkSegments", func(b *testing.B) {
		for b.Loop() {
			if err := checkSegments(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
