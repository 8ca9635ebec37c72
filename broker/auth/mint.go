package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Mint signs an EdDSA token for p with the broker's issuer key. The token
// carries sub, ods, role, iss, aud, iat and nbf (now), exp (now+ttl) and a
// random jti; its kid header is KeyID of the key's public half. It refuses a
// Principal that Verify would reject.
func Mint(key ed25519.PrivateKey, issuer, audience string, p Principal, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case len(key) != ed25519.PrivateKeySize:
		return "", errors.New("auth: mint: not an Ed25519 private key")
	case issuer == "":
		return "", errors.New("auth: mint: issuer is empty")
	case audience == "":
		return "", errors.New("auth: mint: audience is empty")
	case p.Subject == "":
		return "", errors.New("auth: mint: subject is empty")
	case !validSubject(p.Subject):
		return "", errors.New("auth: mint: subject must be 1 to 256 bytes of printable characters, without leading or trailing spaces")
	case !p.Role.Valid():
		return "", fmt.Errorf("auth: mint: invalid role %q", p.Role)
	case !fhir.ValidODSCode(p.ODS):
		return "", fmt.Errorf("auth: mint: invalid ODS code %q", p.ODS)
	case ttl < time.Second:
		// JWT times have a resolution of one second.
		return "", fmt.Errorf("auth: mint: ttl %v is shorter than one second", ttl)
	}

	// A MapClaims rather than claims, so that aud is the plain string most
	// consumers expect: jwt.ClaimStrings marshals as an array by default.
	c := jwt.MapClaims{
		"iss":  issuer,
		"sub":  p.Subject,
		"aud":  audience,
		"ods":  p.ODS,
		"role": string(p.Role),
		"iat":  jwt.NewNumericDate(now),
		"nbf":  jwt.NewNumericDate(now),
		"exp":  jwt.NewNumericDate(now.Add(ttl)),
		"jti":  rand.Text(),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = KeyID(key.Public().(ed25519.PublicKey))
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}
