package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testNow is the fixed time the tests mint and verify at.
var testNow = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newLocalVerifier(t *testing.T, pub ed25519.PublicKey) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer:   DefaultIssuer,
		Audience: DefaultAudience,
		LocalKey: pub,
		Now:      func() time.Time { return testNow },
		// With a cache, so that the tests that verify a token twice
		// check that the cache answers as a full verification does.
		TokenCacheSize: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// validClaims are the claims of a good token at testNow; tests change them.
func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "user-1",
		"ods":  "FA565",
		"role": "dispenser",
		"iss":  DefaultIssuer,
		"aud":  DefaultAudience,
		"iat":  testNow.Unix(),
		"nbf":  testNow.Unix(),
		"exp":  testNow.Add(time.Hour).Unix(),
		"jti":  "j1",
	}
}

// sign signs c with method and key, setting kid when it is not empty.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMintVerifyRoundTrip(t *testing.T) {
	key := newKey(t)
	v := newLocalVerifier(t, key.Public().(ed25519.PublicKey))
	for _, role := range Roles() {
		t.Run(string(role), func(t *testing.T) {
			want := Principal{Subject: "sub-" + string(role), ODS: "A83008", Role: role}
			tok, err := Mint(key, DefaultIssuer, DefaultAudience, want, time.Hour, testNow)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !got.Expires.Equal(testNow.Add(time.Hour)) {
				t.Errorf("Expires = %v, want the token's exp %v", got.Expires, testNow.Add(time.Hour))
			}
			got.Expires = time.Time{}
			if got != want {
				t.Fatalf("Verify = %+v, want %+v", got, want)
			}
		})
	}
}

func TestMintClaimsAndHeader(t *testing.T) {
	key := newKey(t)
	p := Principal{Subject: "u", ODS: "84H", Role: RoleTracker}
	tok, err := Mint(key, "iss-x", "aud-x", p, 2*time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parsed.Header["kid"], KeyID(key.Public().(ed25519.PublicKey)); got != want {
		t.Errorf("kid = %v, want %v", got, want)
	}
	if parsed.Header["alg"] != "EdDSA" {
		t.Errorf("alg = %v", parsed.Header["alg"])
	}
	c := parsed.Claims.(jwt.MapClaims)
	for name, want := range map[string]any{
		"sub": "u", "ods": "84H", "role": "tracker", "iss": "iss-x", "aud": "aud-x",
		"iat": float64(testNow.Unix()), "nbf": float64(testNow.Unix()),
		"exp": float64(testNow.Add(2 * time.Hour).Unix()),
	} {
		if c[name] != want {
			t.Errorf("%s = %v, want %v", name, c[name], want)
		}
	}
	if jti, _ := c["jti"].(string); jti == "" {
		t.Error("no jti")
	}
	tok2, _ := Mint(key, "iss-x", "aud-x", p, 2*time.Hour, testNow)
	if tok2 == tok {
		t.Error("two tokens are identical: jti is not random")
	}
}

func TestMintRefusesBadInput(t *testing.T) {
	key := newKey(t)
	good := Principal{Subject: "u", ODS: "FA565", Role: RoleAdmin}
	cases := map[string]func() (string, error){
		"bad role": func() (string, error) {
			return Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: "u", ODS: "FA565", Role: "doctor"}, time.Hour, testNow)
		},
		"bad ods": func() (string, error) {
			return Mint(key, DefaultIssuer, DefaultAudience, Principal{Subject: "u", ODS: "FA 565", Role: RoleAdmin}, time.Hour, testNow)
		},
		"no sub": func() (string, error) {
			return Mint(key, DefaultIssuer, DefaultAudience, Principal{ODS: "FA565", Role: RoleAdmin}, time.Hour, testNow)
		},
		"zero ttl":    func() (string, error) { return Mint(key, DefaultIssuer, DefaultAudience, good, 0, testNow) },
		"no issuer":   func() (string, error) { return Mint(key, "", DefaultAudience, good, time.Hour, testNow) },
		"no audience": func() (string, error) { return Mint(key, DefaultIssuer, "", good, time.Hour, testNow) },
		"no key":      func() (string, error) { return Mint(nil, DefaultIssuer, DefaultAudience, good, time.Hour, testNow) },
	}
	for name, mint := range cases {
		if tok, err := mint(); err == nil {
			t.Errorf("%s: minted %q", name, tok)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	kid := KeyID(pub)
	other := newKey(t)
	v := newLocalVerifier(t, pub)

	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := validClaims()
		change(c)
		return c
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, validClaims())
	good := sign(t, jwt.SigningMethodEdDSA, key, kid, validClaims())
	badKid := func() string { // a kid header that is not a string
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, validClaims())
		tok.Header["kid"] = 42
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	withCrit := func() string { // a crit header naming an extension
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, validClaims())
		tok.Header["kid"] = kid
		tok.Header["crit"] = []string{"b64"}
		tok.Header["b64"] = false
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()

	cases := []struct {
		name, token, reason string
	}{
		{"empty", "", "no token"},
		{"garbage", "not.a.jwt", "malformed"},
		{"expired", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) {
			c["exp"] = testNow.Add(-time.Minute).Unix()
		})), "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) {
			c["nbf"] = testNow.Add(time.Minute).Unix()
		})), "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) {
			c["iat"] = testNow.Add(time.Minute).Unix()
		})), "issued in the future"},
		{"no exp", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "exp") })), "missing exp"},
		{"wrong issuer", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["iss"] = "someone-else" })), "wrong issuer"},
		{"no issuer", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "iss") })), "missing iss"},
		{"wrong audience", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["aud"] = []string{"x", "y"} })), "wrong audience"},
		{"no audience", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "aud") })), "missing aud"},
		{"other key, same kid", sign(t, jwt.SigningMethodEdDSA, other, kid, validClaims()), "invalid signature"},
		{"other key, its kid", sign(t, jwt.SigningMethodEdDSA, other, KeyID(other.Public().(ed25519.PublicKey)), validClaims()), "not trusted"},
		{"other key, no kid", sign(t, jwt.SigningMethodEdDSA, other, "", validClaims()), "invalid signature"},
		{"tampered payload", tamper(t, good), "invalid signature"},
		{"alg none", none, "algorithm not allowed"},
		{"alg none, signature stripped", strings.TrimSuffix(none, ".") + ".", "algorithm not allowed"},
		{"HS256 with public key bytes", sign(t, jwt.SigningMethodHS256, []byte(pub), kid, validClaims()), "algorithm not allowed"},
		{"HS256 with public key PEM", sign(t, jwt.SigningMethodHS256, pubPEM, kid, validClaims()), "algorithm not allowed"},
		{"kid not a string", badKid, "malformed kid"},
		{"crit header", withCrit, "unsupported crit"},
		{"missing role", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "role") })), "missing role"},
		{"invalid role", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["role"] = "superuser" })), "invalid role"},
		{"role not a string", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["role"] = 7 })), "malformed"},
		{"role in wrong case", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["role"] = "Admin" })), "invalid role"},
		{"missing ods", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "ods") })), "missing ods"},
		{"invalid ods", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { c["ods"] = "FA.565" })), "invalid ods"},
		{"missing sub", sign(t, jwt.SigningMethodEdDSA, key, kid, with(func(c jwt.MapClaims) { delete(c, "sub") })), "missing sub"},
		{"too large", good + strings.Repeat("A", maxTokenSize), "too large"},
	}
	if _, err := v.Verify(good); err != nil {
		t.Fatalf("the untouched token is rejected: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: a refusal is not cached as an acceptance.
			if _, err := v.Verify(tc.token); err == nil {
				t.Fatal("accepted")
			}
			p, err := v.Verify(tc.token)
			if err == nil {
				t.Fatalf("accepted as %+v", p)
			}
			if !errors.Is(err, ErrUnauthorized) {
				t.Errorf("error %v does not wrap ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q contains the token", err)
			}
			if p != (Principal{}) {
				t.Errorf("principal %+v returned with an error", p)
			}
		})
	}
}

// tamper changes the role in a token's payload and keeps its signature.
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(payload), `"dispenser"`, `"admin"`, 1)
	if changed == string(payload) {
		t.Fatal("nothing to tamper with")
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(changed))
	return strings.Join(parts, ".")
}

func TestVerifyLeeway(t *testing.T) {
	key := newKey(t)
	v := newLocalVerifier(t, key.Public().(ed25519.PublicKey))
	kid := KeyID(key.Public().(ed25519.PublicKey))
	c := validClaims()
	c["exp"] = testNow.Add(-20 * time.Second).Unix()
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key, kid, c)); err != nil {
		t.Errorf("expired 20s ago, within the default 30s leeway: %v", err)
	}
	c["exp"] = testNow.Add(-40 * time.Second).Unix()
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, key, kid, c)); err == nil {
		t.Error("expired 40s ago: accepted")
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	pub := newKey(t).Public().(ed25519.PublicKey)
	for name, cfg := range map[string]VerifierConfig{
		"no issuer":    {Audience: "a", LocalKey: pub},
		"no audience":  {Issuer: "i", LocalKey: pub},
		"no key":       {Issuer: "i", Audience: "a"},
		"short key":    {Issuer: "i", Audience: "a", LocalKey: pub[:10]},
		"http JWKS":    {Issuer: "i", Audience: "a", JWKS: "http://example.org/jwks.json"},
		"missing file": {Issuer: "i", Audience: "a", JWKS: filepath.Join(t.TempDir(), "nope.json")},
	} {
		if v, err := NewVerifier(context.Background(), cfg); err == nil {
			v.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKeyIDRFC8037(t *testing.T) {
	// RFC 8037 appendix A.3.
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := KeyID(ed25519.PublicKey(x)), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Errorf("KeyID = %s, want %s", got, want)
	}
}

func TestBearerToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc.def.ghi":     "abc.def.ghi",
		"bearer abc.def.ghi":     "abc.def.ghi",
		"BEARER   abc.def-_~+/=": "abc.def-_~+/=",
		"  Bearer abc  ":         "abc",
		"":                       "",
		"Bearer":                 "",
		"Bearer ":                "",
		"Basic dXNlcjpwYXNz":     "",
		"Bearerabc":              "",
		"Bearer abc def":         "",
		"Bearer a\"b":            "",
		"Bearer ===":             "",
	} {
		if got := BearerToken(header); got != want {
			t.Errorf("BearerToken(%q) = %q, want %q", header, got, want)
		}
	}
}

func TestIssuerKeyCreatedAndReused(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateIssuerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := IssuerKeyPath(dir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("key file mode %04o, want 0600", perm)
		}
		di, err := os.Stat(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if perm := di.Mode().Perm(); perm != 0o700 {
			t.Errorf("key directory mode %04o, want 0700", perm)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(data); block == nil || block.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM:\n%s", data)
	}
	k2, err := LoadOrCreateIssuerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Error("second call returned another key")
	}
}

func TestIssuerKeyConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	keys := make([]ed25519.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			keys[i], errs[i] = LoadOrCreateIssuerKey(dir)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("goroutine %d got another key", i)
		}
	}
	onDisk, err := LoadOrCreateIssuerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !onDisk.Equal(keys[0]) {
		t.Fatal("the key on disk is not the one returned")
	}
	entries, err := os.ReadDir(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("key directory holds %v, want only %s", names, issuerKeyFile)
	}
}

func TestIssuerKeyLooseModeRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on Windows")
	}
	dir := t.TempDir()
	if _, err := LoadOrCreateIssuerKey(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(IssuerKeyPath(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreateIssuerKey(dir)
	if err == nil || !strings.Contains(err.Error(), "readable") {
		t.Fatalf("err = %v, want a refusal saying the file is readable by others", err)
	}

	// A key directory others can write to is refused too.
	dir2 := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir2, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir2, "keys"), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIssuerKey(dir2); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("err = %v, want a refusal saying the directory is writable by others", err)
	}
}

func TestIssuerKeyCorruptRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(IssuerKeyPath(dir), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIssuerKey(dir); err == nil {
		t.Fatal("a corrupt key file was accepted")
	}
	if data, _ := os.ReadFile(IssuerKeyPath(dir)); string(data) != "not a key" {
		t.Fatal("a corrupt key file was overwritten")
	}
}

// JWKS helpers.

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwkOf returns the public JWK of key with the given kid.
func jwkOf(t *testing.T, kid string, key crypto.Signer) map[string]any {
	t.Helper()
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "kid": kid, "use": "sig",
			"n": b64u(pub.N.Bytes()), "e": b64u(big.NewInt(int64(pub.E)).Bytes())}
	case *ecdsa.PublicKey:
		b, err := pub.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		size := (len(b) - 1) / 2
		return map[string]any{"kty": "EC", "kid": kid, "crv": pub.Curve.Params().Name,
			"x": b64u(b[1 : 1+size]), "y": b64u(b[1+size:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u(pub)}
	}
	t.Fatalf("unexpected key type %T", key)
	return nil
}

func jwksJSON(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJWKSFile(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edKey := newKey(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "jwks.json")
	doc := jwksJSON(t,
		jwkOf(t, "rsa-1", rsaKey),
		jwkOf(t, "ec-256", ec256),
		jwkOf(t, "ec-384", ec384),
		jwkOf(t, "ec-521", ec521),
		jwkOf(t, "ed-1", edKey),
		jwkOf(t, "rsa-small", small), // too short: skipped
		map[string]any{"kty": "oct", "kid": "hmac", "k": b64u([]byte("secret"))}, // symmetric: skipped
	)
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	const iss = "https://am.nhsidentity.spineservices.nhs.uk/openam/oauth2/realms/root/realms/NHSIdentity/realms/Healthcare"
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: iss, Audience: DefaultAudience, JWKS: path,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	claims := validClaims()
	claims["iss"] = iss
	good := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey, "rsa-1"},
		{"RS512", jwt.SigningMethodRS512, rsaKey, "rsa-1"},
		{"PS256", jwt.SigningMethodPS256, rsaKey, "rsa-1"},
		{"ES256", jwt.SigningMethodES256, ec256, "ec-256"},
		{"ES384", jwt.SigningMethodES384, ec384, "ec-384"},
		{"ES512", jwt.SigningMethodES512, ec521, "ec-521"},
		{"EdDSA", jwt.SigningMethodEdDSA, edKey, "ed-1"},
		{"ES256 without kid", jwt.SigningMethodES256, ec256, ""},
	}
	for _, tc := range good {
		if p, err := v.Verify(sign(t, tc.method, tc.key, tc.kid, claims)); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if p.ODS != "FA565" || p.Role != RoleDispenser || p.Subject != "user-1" {
			t.Errorf("%s: principal %+v", tc.name, p)
		}
	}

	bad := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"short RSA key", jwt.SigningMethodRS256, small, "rsa-small"},
		{"HS256 with the skipped oct key", jwt.SigningMethodHS256, []byte("secret"), "hmac"},
		{"EC key named as the RSA kid", jwt.SigningMethodES256, ec256, "rsa-1"},
	}
	for _, tc := range bad {
		if _, err := v.Verify(sign(t, tc.method, tc.key, tc.kid, claims)); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: err = %v, want ErrUnauthorized", tc.name, err)
		}
	}

	// The broker's own tokens are not trusted by a JWKS-only verifier.
	own, err := Mint(newKey(t), iss, DefaultAudience, Principal{Subject: "s", ODS: "FA565", Role: RoleAdmin}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(own); err == nil {
		t.Error("a token signed with an untrusted local key was accepted")
	}
}

func TestJWKSWithoutUsableKeysRefused(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc := jwkOf(t, "enc", ec)
	enc["use"] = "enc"
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksJSON(t, enc, map[string]any{"kty": "oct", "k": "c2VjcmV0"}), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: path})
	if err == nil {
		v.Close()
		t.Fatal("a JWKS without signature keys was accepted")
	}
}

func TestJWKSURLRotation(t *testing.T) {
	key1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var doc atomic.Pointer[[]byte]
	set := func(b []byte) { doc.Store(&b) }
	set(jwksJSON(t, jwkOf(t, "k1", key1)))
	var fetches atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*doc.Load())
	}))
	defer srv.Close()

	localKey := newKey(t)
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience,
		LocalKey:   localKey.Public().(ed25519.PublicKey),
		JWKS:       srv.URL + "/jwks.json",
		HTTPClient: srv.Client(),
		Now:        func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after NewVerifier, want 1", n)
	}

	tok1 := sign(t, jwt.SigningMethodES256, key1, "k1", validClaims())
	if _, err := v.Verify(tok1); err != nil {
		t.Fatalf("token signed with the published key: %v", err)
	}
	// Local and external keys are trusted side by side.
	own, err := Mint(localKey, DefaultIssuer, DefaultAudience, Principal{Subject: "s", ODS: "FA565", Role: RoleAdmin}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(own); err != nil {
		t.Fatalf("token signed with the local key: %v", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after verifying known keys, want 1", n)
	}

	// The issuer rotates to key2; a token naming it makes the verifier
	// refresh.
	set(jwksJSON(t, jwkOf(t, "k2", key2)))
	tok2 := sign(t, jwt.SigningMethodRS256, key2, "k2", validClaims())
	if _, err := v.Verify(tok2); err != nil {
		t.Fatalf("token signed with the rotated key: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after the rotation, want 2", n)
	}
	if _, err := v.Verify(tok1); err == nil {
		t.Error("token signed with the retired key still accepted")
	}

	// Unknown kids do not make the verifier fetch again at once.
	for i := range 5 {
		tok := sign(t, jwt.SigningMethodRS256, key2, "unknown-"+string(rune('a'+i)), validClaims())
		if _, err := v.Verify(tok); err == nil {
			t.Error("token with an unknown kid accepted")
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after unknown kids, want still 2 (rate limited)", n)
	}

	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok2); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}

func TestJWKSURLPeriodicRefresh(t *testing.T) {
	key1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t, jwksJSON(t, jwkOf(t, "k1", key1)))
	v, err := NewVerifier(context.Background(), VerifierConfig{
		Issuer: DefaultIssuer, Audience: DefaultAudience,
		JWKS: srv.URL, HTTPClient: srv.Client(), JWKSRefresh: time.Second,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	// While the server fails, the old keys stay in use.
	srv.fail.Store(true)
	srv.drain()
	srv.waitFetches(t, 3)
	tok1 := sign(t, jwt.SigningMethodES256, key1, "k1", validClaims())
	if _, err := v.Verify(tok1); err != nil {
		t.Fatalf("a failed refresh dropped the keys: %v", err)
	}

	// The issuer rotates to key2: the periodic refresh, not an unknown
	// kid, must retire key1 (tokens without kid never refresh on demand).
	srv.set(jwksJSON(t, jwkOf(t, "k2", key2)))
	srv.fail.Store(false)
	srv.drain()
	srv.waitFetches(t, 3) // as in TestJWKSRemovedKeyDistrustedAfterRefresh
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key1, "", validClaims())); err == nil {
		t.Fatal("the periodic refresh did not retire the old key")
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key2, "", validClaims())); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
}

func TestJWKSURLRequiresTrustedTLS(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(jwksJSON(t, jwkOf(t, "k", ec)))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake is expected
	defer srv.Close()
	// The default client does not trust the test server's certificate.
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: "i", Audience: "a", JWKS: srv.URL})
	if err == nil {
		v.Close()
		t.Fatal("a JWKS from an untrusted TLS server was accepted")
	}
}

func TestKeyFitsAlg(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ed := newKey(t).Public()
	for _, tc := range []struct {
		key  crypto.PublicKey
		alg  string
		want bool
	}{
		{&ec256.PublicKey, "ES256", true},
		{&ec256.PublicKey, "ES384", false},
		{&ec384.PublicKey, "ES256", false},
		{&ec384.PublicKey, "ES384", true},
		{&rsaKey.PublicKey, "RS256", true},
		{&rsaKey.PublicKey, "PS512", true},
		{&rsaKey.PublicKey, "ES256", false},
		{&rsaKey.PublicKey, "HS256", false},
		{ed, "EdDSA", true},
		{ed, "RS256", false},
		{ed, "none", false},
	} {
		if got := (trustedKey{key: tc.key}).fits(tc.alg); got != tc.want {
			t.Errorf("%T fits %s = %v, want %v", tc.key, tc.alg, got, tc.want)
		}
	}
	if (trustedKey{key: &rsaKey.PublicKey, alg: "RS256"}).fits("PS256") {
		t.Error("a key restricted to RS256 fits PS256")
	}
}

func TestParseJWKSRejectsBadKeys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := jwkOf(t, "good", ec)
	offCurve := jwkOf(t, "off", ec)
	offCurve["y"] = offCurve["x"]
	wrongAlg := jwkOf(t, "alg", ec)
	wrongAlg["alg"] = "RS256"
	hsAlg := jwkOf(t, "hs", ec)
	hsAlg["alg"] = "HS256"
	noVerify := jwkOf(t, "ops", ec)
	noVerify["key_ops"] = []string{"encrypt"}
	x25519 := map[string]any{"kty": "OKP", "crv": "X25519", "x": b64u(make([]byte, 32))}

	keys, skipped, err := parseJWKS(jwksJSON(t, good, offCurve, wrongAlg, hsAlg, noVerify, x25519))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].kid != "good" {
		t.Errorf("kept %v, want only the good key", keys)
	}
	if len(skipped) != 5 {
		t.Errorf("skipped %d keys (%v), want 5", len(skipped), skipped)
	}
	if _, _, err := parseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Error("an empty JWKS was accepted")
	}
	if _, _, err := parseJWKS([]byte(`[`)); err == nil {
		t.Error("malformed JSON was accepted")
	}
}
