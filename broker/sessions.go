package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/auth"
)

// Session is a tracker page sign-in: the principal of the bearer token the
// user signed in with. It ends after SessionIdle without use, and never
// outlives the token.
type Session struct {
	Subject string    `json:"sub"`
	ODS     string    `json:"ods"`
	Role    auth.Role `json:"role"`
	Expires time.Time `json:"exp"`  // the token's expiry
	Used    time.Time `json:"used"` // last use, by the broker's clock
}

// Principal is the session's user.
func (s *Session) Principal() auth.Principal {
	return auth.Principal{Subject: s.Subject, ODS: s.ODS, Role: s.Role, Expires: s.Expires}
}

// sessionKey is the bucket key of a session cookie value: the bucket never
// holds the cookie itself.
func sessionKey(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return hex.EncodeToString(h[:])
}

// NewSession stores a session for p and returns the cookie value.
func (s *Store) NewSession(ctx context.Context, p auth.Principal, now time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	cookie := base64.RawURLEncoding.EncodeToString(b[:])
	v, _ := json.Marshal(Session{Subject: p.Subject, ODS: p.ODS, Role: p.Role, Expires: p.Expires, Used: now})
	if _, err := s.sessions.Create(ctx, sessionKey(cookie), v); err != nil {
		return "", fmt.Errorf("session: %w", err)
	}
	return cookie, nil
}

// ErrNoSession is a cookie with no live session.
var ErrNoSession = errors.New("no session")

// TouchSession returns the session of a cookie and restarts its idle timer.
func (s *Store) TouchSession(ctx context.Context, cookie string, now time.Time) (*Session, error) {
	key := sessionKey(cookie)
	e, err := s.sessions.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	var ss Session
	if err := json.Unmarshal(e.Value(), &ss); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	if now.Sub(ss.Used) > SessionIdle {
		return nil, ErrNoSession // idle too long (the bucket's TTL removes it too)
	}
	if !ss.Expires.IsZero() && now.After(ss.Expires) {
		_ = s.sessions.Purge(ctx, key)
		return nil, ErrNoSession
	}
	// Writing it again records the use and restarts the bucket's TTL.
	ss.Used = now
	v, _ := json.Marshal(ss)
	if _, err := s.sessions.Update(ctx, key, v, e.Revision()); err != nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, fmt.Errorf("session: %w", err)
	}
	return &ss, nil
}

// EndSession signs a cookie out. A cookie with no session writes nothing.
func (s *Store) EndSession(ctx context.Context, cookie string) error {
	key := sessionKey(cookie)
	if _, err := s.sessions.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return s.sessions.Purge(ctx, key)
}
