package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhs-eps/epsbroker/fhir"
)

// The fuzz targets of this file feed the token and key decoders with what a
// client or an external issuer could send: the Authorization header, the
// header and claims JSON of a token that is correctly signed by a trusted
// key (so that the claims are read at all), and JWKS documents.

// fzNow is the clock of the fuzz targets' verifiers.
var fzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// fzKeys are the keys the fuzz targets' verifiers trust: the broker's own
// Ed25519 key and an external issuer's P-256 key (kid "ec1") from a JWKS
// file.
type fzKeys struct {
	ed *ed25519.PrivateKey
	ec *ecdsa.PrivateKey
	v  *Verifier
}

func newFzKeys(f *testing.F) fzKeys {
	f.Helper()
	ed := ed25519.NewKeyFromSeed([]byte("epsbroker fuzz seed, 32 bytes.!!"))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
		"x": fzB64(ec.X.FillBytes(make([]byte, 32))), "y": fzB64(ec.Y.FillBytes(make([]byte, 32)))}}})
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwks, 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), VerifierConfig{Issuer: DefaultIssuer, Audience: DefaultAudience,
		LocalKey: ed.Public().(ed25519.PublicKey), JWKS: path, Now: func() time.Time { return fzNow }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = v.Close() })
	return fzKeys{ed: &ed, ec: ec, v: v}
}

// checkVerified holds Verify's answer to its promises: every refusal wraps
// ErrUnauthorized and repeats no part of the token; an accepted token names
// a user, one of the four roles and a valid ODS code, and has not expired.
func checkVerified(t *testing.T, token string, p Principal, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrUnauthorized) || p != (Principal{}) {
			t.Fatalf("Verify: %v with %+v, want an error wrapping ErrUnauthorized and no principal", err, p)
		}
		for seg := range strings.SplitSeq(token, ".") {
			if len(seg) >= 16 && strings.Contains(err.Error(), seg) {
				t.Fatalf("Verify's error %q repeats the token", err)
			}
		}
		return
	}
	if p.Subject == "" || !p.Role.Valid() || !fhir.ValidODSCode(p.ODS) || !p.Expires.After(fzNow.Add(-DefaultLeeway)) {
		t.Fatalf("Verify accepted %+v", p)
	}
}

// FuzzVerifyToken sends Verify what a client puts in its Authorization
// header, seeded with tokens the broker accepts and forgeries it refuses.
func FuzzVerifyToken(f *testing.F) {
	k := newFzKeys(f)
	good, err := Mint(*k.ed, DefaultIssuer, DefaultAudience, Principal{Subject: "u1", ODS: "FA565", Role: RoleDispenser}, time.Hour, fzNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer " + good)
	f.Add("bearer  " + good + "==")
	h, c, _ := strings.Cut(good, ".")
	c, _, _ = strings.Cut(c, ".")
	f.Add("Bearer " + fzB64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + c + ".")
	f.Add("Bearer " + h + "." + c + ".AAAA")
	f.Add("Bearer " + fzB64([]byte(`{"alg":"HS256","kid":"ec1"}`)) + "." + c + ".c2ln")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("Bearer a.b.c.d.e")
	f.Fuzz(func(t *testing.T, header string) {
		token := BearerToken(header)
		if token == "" {
			return
		}
		if !strings.Contains(header, token) || !isB64Token(token) {
			t.Fatalf("BearerToken(%q) = %q", header, token)
		}
		p, err := k.v.Verify(token)
		checkVerified(t, token, p, err)
	})
}

// FuzzVerifyClaims signs fuzzed token headers and claims with a trusted key
// (Ed25519, P-256, or no valid signature), so that Verify reads them: what
// it accepts must say, read independently with encoding/json, what the
// principal says, and meet every check Verify promises.
func FuzzVerifyClaims(f *testing.F) {
	k := newFzKeys(f)
	claims := func(extra string) string {
		return `{"iss":"epsbroker","aud":"eps-broker","sub":"user-1","ods":"FA565","role":"dispenser","iat":1780315200,"nbf":1780315200,"exp":1780318800` + extra + `}`
	}
	kid := KeyID(k.ed.Public().(ed25519.PublicKey))
	f.Add(`{"alg":"EdDSA","typ":"JWT","kid":"`+kid+`"}`, claims(""), uint8(0))
	f.Add(`{"alg":"EdDSA"}`, claims(`,"aud":["x","eps-broker"]`), uint8(0))
	f.Add(`{"alg":"ES256","kid":"ec1"}`, claims(""), uint8(1))
	f.Add(`{"alg":"ES256","kid":"ec1","crit":["b64"]}`, claims(""), uint8(1))
	f.Add(`{"alg":"EdDSA","kid":7}`, claims(`,"role":"admin","ods":"X26"`), uint8(0))
	f.Add(`{"alg":"EdDSA"}`, claims(`,"exp":"soon","sub":""`), uint8(0))
	f.Add(`{"alg":"EdDSA"}`, claims(`,"sub":"user-1","sub":"user-2"`), uint8(0))
	f.Add(`{"alg":"none"}`, claims(""), uint8(2))
	f.Fuzz(func(t *testing.T, header, body string, signer uint8) {
		input := fzB64([]byte(header)) + "." + fzB64([]byte(body))
		var sig []byte
		switch signer % 3 {
		case 0:
			sig = ed25519.Sign(*k.ed, []byte(input))
		case 1:
			var err error
			if sig, err = jwt.SigningMethodES256.Sign(input, k.ec); err != nil {
				t.Fatal(err)
			}
		}
		token := input + "." + fzB64(sig)
		p, err := k.v.Verify(token)
		checkVerified(t, token, p, err)
		if err != nil {
			return
		}
		var h, c map[string]any
		if json.Unmarshal([]byte(header), &h) != nil || json.Unmarshal([]byte(body), &c) != nil {
			t.Fatalf("accepted a token whose header or claims are not JSON objects: %q %q", header, body)
		}
		wantAlg := map[uint8]string{0: "EdDSA", 1: "ES256"}[signer%3]
		if h["alg"] != wantAlg || h["crit"] != nil {
			t.Fatalf("accepted header %q signed as %q", header, wantAlg)
		}
		if kid, ok := h["kid"]; ok {
			if s, _ := kid.(string); s != map[uint8]string{0: KeyID(k.ed.Public().(ed25519.PublicKey)), 1: "ec1"}[signer%3] {
				t.Fatalf("accepted kid %v", kid)
			}
		}
		if c["sub"] != p.Subject || c["ods"] != p.ODS || c["role"] != string(p.Role) || c["iss"] != DefaultIssuer {
			t.Fatalf("principal %+v from claims %q", p, body)
		}
		switch aud := c["aud"].(type) {
		case string:
			if aud != DefaultAudience {
				t.Fatalf("accepted aud %q", aud)
			}
		case []any:
			if !slices.Contains(aud, any(DefaultAudience)) {
				t.Fatalf("accepted aud %v", aud)
			}
		default:
			t.Fatalf("accepted aud %v", aud)
		}
		leeway := DefaultLeeway.Seconds()
		now := float64(fzNow.Unix())
		if exp, ok := c["exp"].(float64); !ok || exp < now-leeway {
			t.Fatalf("accepted exp %v as %v", c["exp"], p.Expires)
		}
		for _, name := range []string{"nbf", "iat"} {
			if v, ok := c[name]; ok {
				if n, isNum := v.(float64); !isNum || n > now+leeway {
					t.Fatalf("accepted %s %v at %v", name, v, fzNow)
				}
			}
		}
	})
}

// FuzzParseJWKS reads fuzzed JWKS documents, as an external issuer's URL or
// file could serve them: every key kept must be usable for signatures only
// with an allowed algorithm and strong enough, and carry a kid of the
// document; the document is refused exactly when no key is kept.
func FuzzParseJWKS(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ed := ed25519.NewKeyFromSeed(make([]byte, 32))
	doc := func(keys ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return b
	}
	ecJWK := map[string]any{"kty": "EC", "crv": "P-384", "kid": "e", "alg": "ES384",
		"x": fzB64(ec.X.FillBytes(make([]byte, 48))), "y": fzB64(ec.Y.FillBytes(make([]byte, 48)))}
	rsaJWK := map[string]any{"kty": "RSA", "kid": "r", "use": "sig", "key_ops": []string{"verify"},
		"n": fzB64(rsaKey.N.Bytes()), "e": fzB64(big.NewInt(int64(rsaKey.E)).Bytes())}
	okpJWK := map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": "o", "x": fzB64(ed.Public().(ed25519.PublicKey)) + "="}
	f.Add(doc(ecJWK, rsaJWK, okpJWK))
	f.Add(doc(map[string]any{"kty": "oct", "k": "c2VjcmV0"}, okpJWK))
	f.Add(doc(map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}))
	f.Add(doc(map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "alg": "RS256"}))
	f.Add(doc(map[string]any{"kty": "OKP", "crv": "X25519", "use": "enc", "x": fzB64(make([]byte, 32))}))
	f.Add([]byte(`{"keys":[1,null,{"kty":["RSA"]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, skipped, err := parseJWKS(data)
		if (err == nil) != (len(keys) > 0) {
			t.Fatalf("parseJWKS: %d keys, error %v", len(keys), err)
		}
		if err != nil {
			return
		}
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		_ = json.Unmarshal(data, &set)
		kids := map[string]bool{}
		for _, k := range set.Keys {
			if s, ok := k["kid"].(string); ok {
				kids[s] = true
			}
		}
		if len(keys)+len(skipped) > len(set.Keys) && len(set.Keys) > 0 {
			t.Fatalf("%d keys and %d skipped of %d", len(keys), len(skipped), len(set.Keys))
		}
		for _, k := range keys {
			if k.kid != "" && !kids[k.kid] {
				t.Fatalf("key with kid %q not in the document", k.kid)
			}
			if k.alg != "" && (!allowedAlgs[k.alg] || !k.fits(k.alg)) {
				t.Fatalf("key restricted to %q", k.alg)
			}
			usable := false
			for _, alg := range allowedAlgList {
				usable = usable || k.fits(alg)
			}
			if !usable {
				t.Fatalf("key %+v fits no allowed algorithm", k)
			}
			switch pub := k.key.(type) {
			case *rsa.PublicKey:
				if pub.N.BitLen() < minRSABits || pub.E < 3 || pub.E%2 == 0 {
					t.Fatalf("weak RSA key kept: %d bits, e %d", pub.N.BitLen(), pub.E)
				}
			case *ecdsa.PublicKey:
				if !pub.Curve.IsOnCurve(pub.X, pub.Y) {
					t.Fatal("EC key off its curve kept")
				}
			case ed25519.PublicKey:
				if len(pub) != ed25519.PublicKeySize {
					t.Fatalf("Ed25519 key of %d bytes kept", len(pub))
				}
			default:
				t.Fatalf("key of type %T kept", pub)
			}
		}
	})
}

// fzB64 is base64url without padding.
func fzB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
