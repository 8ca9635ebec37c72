package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Defaults of VerifierConfig.
const (
	DefaultJWKSRefresh = 5 * time.Minute
	DefaultLeeway      = 30 * time.Second
	DefaultMaxLifetime = 12 * time.Hour
)

// MaxJWKSRefresh is the longest JWKS refresh interval: a key the issuer
// removes from its JWKS is distrusted within it.
const MaxJWKSRefresh = 15 * time.Minute

// maxTokenSize bounds the tokens Verify looks at; real ones are well under
// 2 KiB.
const maxTokenSize = 16 << 10

// allowedAlgList holds the signature algorithms Verify accepts: never
// "none" and never HMAC, whose keys are secrets the broker does not share.
var allowedAlgList = []string{
	"EdDSA",
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
}

// allowedAlgs is allowedAlgList as a set.
var allowedAlgs = func() map[string]bool {
	m := make(map[string]bool, len(allowedAlgList))
	for _, a := range allowedAlgList {
		m[a] = true
	}
	return m
}()

// claims are the JWT claims Verify reads: the registered ones plus the
// user's organisation and role.
type claims struct {
	ODS  string `json:"ods,omitempty"`
	Role Role   `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// VerifierConfig says which tokens a Verifier accepts.
type VerifierConfig struct {
	// Issuer and Audience are the iss and aud the tokens must carry.
	// Both are required.
	Issuer, Audience string
	// LocalKey is the public half of the broker's own issuer key; nil
	// when only external keys are trusted.
	LocalKey ed25519.PublicKey
	// JWKS is optional: the path of a JWKS file or the https:// URL of an
	// external issuer's JWKS (NHS CIS2, say). When set, tokens signed by
	// those keys are trusted too.
	JWKS string
	// JWKSRefresh is how often the JWKS is reloaded (default
	// DefaultJWKSRefresh, at most MaxJWKSRefresh). A token whose kid is
	// unknown also triggers a reload, at most once a minute.
	JWKSRefresh time.Duration
	// JWKSCAFile is a PEM file of the CA certificates that verify the JWKS
	// URL's server, in place of the system roots; "" for the system roots.
	// Ignored when HTTPClient is set.
	JWKSCAFile string
	// JWKSRefreshes, when set, counts the JWKS loads by trigger ("start",
	// "periodic", "unknown_kid") and outcome ("ok", "failed").
	JWKSRefreshes *prometheus.CounterVec
	// MaxLifetime is the longest lifetime a token may have: exp - iat, or
	// exp - now for a token without iat (default DefaultMaxLifetime).
	MaxLifetime time.Duration
	// Leeway is the clock skew allowed when checking exp, nbf and iat
	// (default DefaultLeeway; negative for none).
	Leeway time.Duration
	// HTTPClient fetches the JWKS URL; nil for a client with a 10s
	// timeout. Whatever the client, redirects are followed only to https
	// on the same host and port.
	HTTPClient *http.Client
	// Now returns the current time; nil for time.Now. For tests.
	Now func() time.Time
	// Logger receives warnings about JWKS refreshes; nil for none.
	Logger *zap.Logger
	// TokenCacheSize is the most verified tokens remembered, so that a
	// token seen again is not verified in full (see Verify); 0 for none.
	TokenCacheSize int
	// TokenCacheEvents, when set, counts the token cache's events by the
	// label "event": hit, miss, eviction (dropped for room) and stale
	// (dropped as expired or no longer signed by a trusted key).
	TokenCacheEvents *prometheus.CounterVec
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	parser      *jwt.Parser
	maxLifetime time.Duration
	leeway      time.Duration
	now         func() time.Time
	local       []trustedKey // the broker's own key, if trusted
	jwks        *jwksSource  // the external issuer's keys, if configured
	cache       *tokenCache  // tokens verified before; nil when off
	close       sync.Once
}

// NewVerifier returns a Verifier for cfg. When cfg.JWKS is set it loads the
// JWKS first, within ctx, and fails if it holds no usable key; the keys are
// then refreshed in the background until ctx ends or Close is called.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("auth: verifier: issuer and audience are required")
	}
	if cfg.LocalKey == nil && cfg.JWKS == "" {
		return nil, errors.New("auth: verifier: no trusted key: give the local issuer key, a JWKS, or both")
	}
	if cfg.LocalKey != nil && len(cfg.LocalKey) != ed25519.PublicKeySize {
		return nil, errors.New("auth: verifier: local key is not an Ed25519 public key")
	}
	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		leeway = 0
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	refresh := cfg.JWKSRefresh
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	refresh = min(max(refresh, jwksMinRefresh), MaxJWKSRefresh)
	maxLifetime := cfg.MaxLifetime
	if maxLifetime <= 0 {
		maxLifetime = DefaultMaxLifetime
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}

	v := &Verifier{
		maxLifetime: maxLifetime,
		leeway:      leeway,
		now:         now,
		parser: jwt.NewParser(
			jwt.WithValidMethods(allowedAlgList),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
			jwt.WithTimeFunc(now),
		),
		cache: newTokenCache(cfg.TokenCacheSize, cfg.TokenCacheEvents),
	}
	if cfg.LocalKey != nil {
		pub := ed25519.PublicKey(append([]byte(nil), cfg.LocalKey...))
		v.local = []trustedKey{{kid: KeyID(pub), alg: "EdDSA", key: pub}}
	}
	if cfg.JWKS != "" {
		client := cfg.HTTPClient
		if client == nil {
			var err error
			if client, err = defaultJWKSClient(cfg.JWKSCAFile); err != nil {
				return nil, err
			}
		}
		src, err := newJWKSSource(ctx, cfg.JWKS, refresh, client, log, cfg.JWKSRefreshes)
		if err != nil {
			return nil, err
		}
		v.jwks = src
	}
	return v, nil
}

// Close stops refreshing the JWKS. Verify still works afterwards, with the
// keys last loaded.
func (v *Verifier) Close() error {
	v.close.Do(func() {
		if v.jwks != nil {
			v.jwks.close()
		}
	})
	return nil
}

// Verify checks token and returns whom it authenticates. It accepts only
// the signature algorithms EdDSA, RS256/384/512, PS256/384/512 and
// ES256/384/512, by a trusted key; it requires exp and checks exp, nbf and
// iat (with the configured leeway), iss and aud, and a lifetime (exp - iat,
// or exp - now without iat) of at most the configured maximum; it refuses
// a header or claims set with a member given twice, and a kid that is not
// 1 to 256 visible ASCII characters; and it requires a sub of 1 to 256
// bytes of printable characters, a role that is one of the four and an ods
// that is a valid ODS code.
//
// Any failure returns an error wrapping ErrUnauthorized with a short reason,
// which never includes the token or key material.
//
// With a token cache, a token accepted before is accepted again without
// being verified in full (it is found by the SHA-256 of the whole token) as
// long as the same time checks pass now and every key that may have signed
// it is still trusted. Refused tokens are not cached.
func (v *Verifier) Verify(token string) (Principal, error) {
	if token == "" {
		return Principal{}, unauthorized("no token")
	}
	if len(token) > maxTokenSize {
		return Principal{}, unauthorized("token too large")
	}
	if v.cache == nil {
		p, _, _, err := v.verify(token)
		return p, err
	}
	k := tokenKey(sha256.Sum256([]byte(token)))
	if p, ok := v.cached(k); ok {
		return p, nil
	}
	p, c, signers, err := v.verify(token)
	if err != nil {
		return Principal{}, err
	}
	v.remember(k, c, p, signers.keys, signers.jwks)
	return p, nil
}

// signers are the trusted keys that may have signed a token, and the JWKS
// key set they were chosen from (nil without a JWKS).
type signers struct {
	keys []trustedKey
	jwks *[]trustedKey
}

// verify verifies token in full, returning also its claims and the keys
// that may have signed it.
func (v *Verifier) verify(token string) (Principal, *claims, signers, error) {
	fail := func(reason string) (Principal, *claims, signers, error) {
		return Principal{}, nil, signers{}, unauthorized(reason)
	}
	if err := checkSegments(token); err != nil {
		if errors.Is(err, errDuplicate) {
			return fail("duplicate member in the token header or claims")
		}
		if errors.Is(err, errNameCase) {
			return fail("a header parameter or claim name is spelled in another case (claim names are case-sensitive)")
		}
		return fail("malformed token")
	}
	var (
		c claims
		s signers
	)
	t, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		var err error
		s, err = v.tokenKeys(t)
		if err != nil {
			return nil, err
		}
		if len(s.keys) == 1 {
			return s.keys[0].key, nil
		}
		set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(s.keys))}
		for i, k := range s.keys {
			set.Keys[i] = k.key
		}
		return set, nil
	})
	if err != nil {
		return fail(reason(t, &c, err))
	}
	// exp is required, so the parser has checked it is there.
	start, slack := v.now(), v.leeway
	if c.IssuedAt != nil {
		start, slack = c.IssuedAt.Time, 0
	}
	if c.ExpiresAt.Sub(start) > v.maxLifetime+slack {
		return fail("token lifetime longer than " + v.maxLifetime.String())
	}
	switch {
	case c.Subject == "":
		return fail("missing sub claim")
	case !validSubject(c.Subject):
		return fail("invalid sub claim")
	case c.Role == "":
		return fail("missing role claim")
	case !c.Role.Valid():
		return fail("invalid role claim")
	case c.ODS == "":
		return fail("missing ods claim")
	case !fhir.ValidODSCode(c.ODS):
		return fail("invalid ods claim")
	}
	p := Principal{Subject: c.Subject, ODS: c.ODS, Role: c.Role, Expires: c.ExpiresAt.Time}
	return p, &c, s, nil
}

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, reason)
}

// Errors of tokenKeys; their text is safe to show.
var (
	errNoKey  = errors.New("signing key not trusted")
	errBadKid = errors.New("malformed kid header")
	errCrit   = errors.New("unsupported crit header")
)

// tokenKeys chooses the trusted keys that may have signed t: those with its
// kid (all of them when it has none) that suit its algorithm. An unknown
// kid makes the JWKS refresh, at most once a minute. Tokens with a crit
// header are refused.
func (v *Verifier) tokenKeys(t *jwt.Token) (signers, error) {
	// RFC 7515 section 4.1.11: extensions listed in crit must be
	// understood, and the broker understands none.
	if _, ok := t.Header["crit"]; ok {
		return signers{}, errCrit
	}
	alg := t.Method.Alg()
	var kid string
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok || !validKID(s) {
			return signers{}, errBadKid
		}
		kid = s
	}
	s := v.candidates(kid, alg)
	if len(s.keys) == 0 && kid != "" && v.jwks != nil {
		v.jwks.refreshForUnknownKID()
		s = v.candidates(kid, alg)
	}
	if len(s.keys) == 0 {
		return signers{}, errNoKey
	}
	return s, nil
}

// candidates returns the trusted keys with the given kid ("" matches any)
// that suit alg, and the JWKS key set they were chosen from.
func (v *Verifier) candidates(kid, alg string) signers {
	var s signers
	add := func(keys []trustedKey) {
		for _, k := range keys {
			if (kid == "" || k.kid == kid) && k.fits(alg) {
				s.keys = append(s.keys, k)
			}
		}
	}
	add(v.local)
	if v.jwks != nil {
		s.jwks = v.jwks.currentSet()
		add(*s.jwks)
	}
	return s
}

// reason turns an error of the JWT parser into a short reason that holds
// nothing from the token (header values such as alg and kid are chosen by
// whoever sent it).
func reason(t *jwt.Token, c *claims, err error) string {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return "malformed token"
	}
	if t != nil {
		if alg, _ := t.Header["alg"].(string); !allowedAlgs[alg] {
			return "signing algorithm not allowed"
		}
	}
	switch {
	case errors.Is(err, errNoKey):
		return errNoKey.Error()
	case errors.Is(err, errBadKid):
		return errBadKid.Error()
	case errors.Is(err, errCrit):
		return errCrit.Error()
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		switch {
		case c.ExpiresAt == nil:
			return "missing exp claim"
		case c.Issuer == "":
			return "missing iss claim"
		case len(c.Audience) == 0:
			return "missing aud claim"
		}
		return "missing required claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "invalid token"
}
