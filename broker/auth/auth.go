// Package auth authenticates the broker's callers with signed JSON Web
// Tokens.
//
// Every request under /FHIR/R4/ and /api/ carries "Authorization: Bearer
// <JWT>". The token names the user (sub), the user's organisation (ods, an
// ODS code) and the user's role (role). By default the broker trusts an
// Ed25519 issuer key it keeps in its data dir (see LoadOrCreateIssuerKey and
// Mint, which `epsctl token` uses); it can also, or instead, trust the keys of
// an external issuer published as a JWKS (a file or an https:// URL), as the
// NHS's CIS2 login would be.
//
// Verifier checks a token's signature, its times, issuer and audience, and
// the claims the broker relies on, and turns it into a Principal. Deciding
// what a Principal may do is left to the HTTP layer.
package auth

import (
	"errors"
	"strings"
	"time"
)

// DefaultIssuer is the iss claim of tokens signed with the broker's own key.
const DefaultIssuer = "epsbroker"

// DefaultAudience is the aud claim the broker expects by default.
const DefaultAudience = "eps-broker"

// ErrUnauthorized is wrapped by every error Verify returns: the request
// carries no acceptable credentials and answers 401.
var ErrUnauthorized = errors.New("unauthorized")

// Role is what a user does in EPS; it decides which requests the user may
// make.
type Role string

// The roles a token may carry.
const (
	// RolePrescriber posts orders and cancellations sent by its organisation.
	RolePrescriber Role = "prescriber"
	// RoleDispenser releases, returns, withdraws, dispenses and claims
	// prescriptions for its organisation.
	RoleDispenser Role = "dispenser"
	// RoleTracker reads the prescription tracker; it changes nothing.
	RoleTracker Role = "tracker"
	// RoleAdmin manages nominations and reads everything.
	RoleAdmin Role = "admin"
)

// Roles lists every valid role, in a stable order.
func Roles() []Role {
	return []Role{RolePrescriber, RoleDispenser, RoleTracker, RoleAdmin}
}

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool {
	switch r {
	case RolePrescriber, RoleDispenser, RoleTracker, RoleAdmin:
		return true
	}
	return false
}

// Principal is the authenticated caller of a request.
type Principal struct {
	// Subject identifies the user (the sub claim).
	Subject string
	// ODS is the ODS code of the user's organisation (the ods claim).
	ODS string
	// Role is the user's role (the role claim).
	Role Role
	// Expires is when the token ends (the exp claim); zero when not known.
	Expires time.Time
}

// BearerToken extracts the token from the value of an Authorization header,
// "Bearer <token>" with the scheme in any case (RFC 6750 section 2.1). It
// returns "" when the header is empty, uses another scheme or is malformed.
func BearerToken(header string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || !isB64Token(token) {
		return ""
	}
	return token
}

// isB64Token reports whether s matches RFC 6750's b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
