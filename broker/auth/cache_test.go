package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is a settable time for a verifier.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.t.Store(&t) }
func (c *clock) now() time.Time   { return *c.t.Load() }

func cacheEvents() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "token_cache"}, []string{"event"})
}

// events is the count of event in c (0 when it was never counted).
func events(c *prometheus.CounterVec, event string) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, p := range m.GetLabel() {
				if p.GetName() == "event" && p.GetValue() == event {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A token accepted once is accepted from the cache exactly when a full
// verification would accept it at the same moment: at every moment around
// its nbf, iat, exp and lifetime bounds, with and without leeway.
func TestTokenCacheSameTimeRulesAsVerify(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	kid := KeyID(pub)
	tok := func(change func(jwt.MapClaims)) string {
		c := validClaims()
		change(c)
		return sign(t, jwt.SigningMethodEdDSA, key, kid, c)
	}
	at := func(d time.Duration) time.Time { return testNow.Add(d) }
	cases := []struct {
		name   string
		leeway time.Duration
		token  string
		warm   time.Time       // when it is first verified (and accepted)
		probes []time.Duration // moments, from testNow, to compare the two
	}{
		{"exp, default leeway", 0, tok(func(c jwt.MapClaims) {}), testNow,
			[]time.Duration{0, 59 * time.Minute, time.Hour, time.Hour + 29*time.Second, time.Hour + 30*time.Second, 2 * time.Hour}},
		{"exp, no leeway", -1, tok(func(c jwt.MapClaims) {}), testNow,
			[]time.Duration{0, time.Hour - time.Second, time.Hour, time.Hour + time.Second}},
		{"nbf ahead, clock set back", -1, tok(func(c jwt.MapClaims) { c["nbf"] = at(time.Minute).Unix() }), at(2 * time.Minute),
			[]time.Duration{2 * time.Minute, time.Minute, time.Minute - time.Second, 0}},
		{"iat ahead within leeway, clock set back", 0, tok(func(c jwt.MapClaims) { delete(c, "nbf"); c["iat"] = at(20 * time.Second).Unix() }), testNow,
			[]time.Duration{0, -10 * time.Second, -11 * time.Second, -time.Minute}},
		{"no iat: lifetime counted from now", -1, tok(func(c jwt.MapClaims) {
			delete(c, "iat")
			delete(c, "nbf")
			c["exp"] = at(13 * time.Hour).Unix()
		}), at(2 * time.Hour),
			[]time.Duration{2 * time.Hour, time.Hour, time.Hour - time.Second, 0, 12*time.Hour + 59*time.Minute, 13 * time.Hour}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock(tc.warm)
			cfg := VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub, Leeway: tc.leeway, Now: clk.now}
			full, err := NewVerifier(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			cfg.TokenCacheSize = 10
			ev := cacheEvents()
			cfg.TokenCacheEvents = ev
			cached, err := NewVerifier(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cached.Verify(tc.token); err != nil {
				t.Fatalf("refused when first seen: %v", err)
			}
			for _, d := range tc.probes {
				clk.set(testNow.Add(d))
				wantP, wantErr := full.Verify(tc.token)
				p, err := cached.Verify(tc.token)
				if (err == nil) != (wantErr == nil) || p != wantP {
					t.Errorf("at %v: cached %+v, %v; full verification %+v, %v", d, p, err, wantP, wantErr)
				}
				if err != nil && wantErr != nil && !strings.Contains(err.Error(), strings.SplitN(wantErr.Error(), ": ", 2)[1]) {
					t.Errorf("at %v: cached refusal %q, full %q", d, err, wantErr)
				}
			}
			if events(ev, "hit") == 0 {
				t.Error("the cache was never used")
			}
		})
	}
}

// The plain cases: a cached token stops working at exp, a refused token is
// not cached, a forged token with the same claims is not taken for the
// cached one, and the size bound evicts (the token is then verified in full
// again).
func TestTokenCache(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	kid := KeyID(pub)
	other := newKey(t)
	clk := newClock(testNow)
	ev := cacheEvents()
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub, Leeway: -1,
		Now: clk.now, TokenCacheSize: 2, TokenCacheEvents: ev,
	})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(sub string, d time.Duration) string {
		s, err := Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: sub, ODS: "FA565", Role: RoleDispenser}, d, testNow)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c := mint("a", time.Hour), mint("b", 2*time.Hour), mint("c", 2*time.Hour)
	forged := sign(t, jwt.SigningMethodEdDSA, other, kid, jwt.MapClaims{
		"sub": "a", "ods": "FA565", "role": "dispenser", "iss": DefaultIssuer, "aud": DefaultAudience,
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(),
	})
	// A token with the same claims and header but another signature.
	parts := strings.Split(a, ".")
	swapped := parts[0] + "." + parts[1] + "." + strings.Split(forged, ".")[2]

	type want struct {
		ok                          bool
		sub                         string
		hits, misses, evicted, gone float64
	}
	steps := []struct {
		name  string
		at    time.Duration
		token string
		want  want
	}{
		{"a verified in full", 0, a, want{true, "a", 0, 1, 0, 0}},
		{"a from the cache", time.Minute, a, want{true, "a", 1, 1, 0, 0}},
		{"forged a: another signature", time.Minute, forged, want{false, "", 1, 2, 0, 0}},
		{"a's claims with a foreign signature", time.Minute, swapped, want{false, "", 1, 3, 0, 0}},
		{"refusals were not cached", time.Minute, swapped, want{false, "", 1, 4, 0, 0}},
		{"b verified in full", time.Minute, b, want{true, "b", 1, 5, 0, 0}},
		{"a still cached", time.Minute, a, want{true, "a", 2, 5, 0, 0}},
		{"c evicts the oldest entry, a", time.Minute, c, want{true, "c", 2, 6, 1, 0}},
		{"a verified in full again", time.Minute, a, want{true, "a", 2, 7, 2, 0}},
		{"a from the cache again", 2 * time.Minute, a, want{true, "a", 3, 7, 2, 0}},
		{"a at its exp: refused and dropped", time.Hour, a, want{false, "", 3, 8, 2, 1}},
		{"b verified in full, evicting c", time.Hour, b, want{true, "b", 3, 9, 3, 1}},
	}
	for _, s := range steps {
		clk.set(testNow.Add(s.at))
		p, err := v.Verify(s.token)
		if (err == nil) != s.want.ok || p.Subject != s.want.sub {
			t.Fatalf("%s: %+v, %v", s.name, p, err)
		}
		got := want{err == nil, p.Subject, events(ev, "hit"), events(ev, "miss"), events(ev, "eviction"), events(ev, "stale")}
		if got != s.want {
			t.Fatalf("%s: %+v, want %+v", s.name, got, s.want)
		}
		if n := v.cache.len(); n > 2 {
			t.Fatalf("%s: %d entries held, bound 2", s.name, n)
		}
	}
}

// A cached token stops working once the key that signed it leaves the
// JWKS, as it would without the cache; tokens of the keys that stay are
// still served from the cache.
func TestTokenCacheKeyRemovedFromJWKS(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(doc []byte) {
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(jwksJSON(t, jwkOf(t, "k1", k1), jwkOf(t, "k2", k2)))
	ev := cacheEvents()
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, JWKS: path, JWKSRefresh: MaxJWKSRefresh,
		Now: func() time.Time { return testNow }, TokenCacheSize: 100, TokenCacheEvents: ev,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok1 := sign(t, jwt.SigningMethodES256, k1, "k1", validClaims())
	tok2 := sign(t, jwt.SigningMethodES256, k2, "k2", validClaims())
	noKid := sign(t, jwt.SigningMethodES256, k2, "", validClaims())
	for _, tok := range []string{tok1, tok2, noKid, tok1, tok2, noKid} {
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if events(ev, "hit") != 3 {
		t.Fatalf("hits %v, want 3", events(ev, "hit"))
	}

	// A refresh that keeps the same keys, as new objects, drops nothing.
	if err := v.jwks.load(context.Background(), "periodic"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok1); err != nil || events(ev, "hit") != 4 {
		t.Fatalf("after an unchanged refresh: %v, hits %v", err, events(ev, "hit"))
	}

	// The issuer withdraws k1.
	write(jwksJSON(t, jwkOf(t, "k2", k2)))
	if err := v.jwks.load(context.Background(), "periodic"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, token, reason string
	}{
		{"signed by the removed key", tok1, "not trusted"},
		{"signed by the remaining key", tok2, ""},
		// Verified first against both keys: it is dropped with k1, and
		// verified again in full against k2.
		{"no kid, signed by the remaining key", noKid, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 {
				_, err := v.Verify(tc.token)
				if tc.reason == "" && err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)) {
					t.Fatalf("error %v, want %q", err, tc.reason)
				}
			}
		})
	}
	if events(ev, "stale") != 2 {
		t.Errorf("stale entries dropped %v, want 2 (k1's token, and the one without kid)", events(ev, "stale"))
	}
}

// Size 0 turns the cache off.
func TestTokenCacheOff(t *testing.T) {
	key := newKey(t)
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: key.Public().(ed25519.PublicKey),
		Now: func() time.Time { return testNow }, TokenCacheEvents: cacheEvents(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if v.cache != nil {
		t.Fatal("a cache was made for size 0")
	}
}

// Many goroutines verifying good and bad tokens through a small cache (run
// with -race): every answer is the one a full verification gives, and the
// bound holds.
func TestTokenCacheConcurrent(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	other := newKey(t)
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience, LocalKey: pub,
		Now: func() time.Time { return testNow }, TokenCacheSize: 5, TokenCacheEvents: cacheEvents(),
	})
	if err != nil {
		t.Fatal(err)
	}
	type tokenCase struct {
		token, sub string // sub "" for a token to refuse
	}
	var toks []tokenCase
	for i := range 12 {
		sub := fmt.Sprintf("user-%d", i)
		signer := key
		if i%4 == 3 {
			signer = other
		}
		s, err := Mint(signer, DefaultIssuer, DefaultAudience, Principal{Subject: sub, ODS: "FA565", Role: RoleTracker}, time.Hour, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if i%4 == 3 {
			sub = ""
		}
		toks = append(toks, tokenCase{s, sub})
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				tc := toks[(g+i)%len(toks)]
				p, err := v.Verify(tc.token)
				if (err == nil) != (tc.sub != "") || p.Subject != tc.sub {
					select {
					case errs <- fmt.Sprintf("%s: %+v, %v", tc.sub, p, err):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := v.cache.len(); n > 5 {
		t.Errorf("%d entries held, bound 5", n)
	}
}
