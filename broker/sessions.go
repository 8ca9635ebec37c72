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
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
)

// service.Session keys and cookies. A session's bucket key is its user's tag, a
// dot, and the hash of its cookie: the bucket never holds the cookie
// itself, and a user's sessions can be listed by the tag alone. The cookie
// carries the tag after a dot (the random part is base64url, which has no
// dot) so that the key can be found from the cookie; the tag only indexes,
// it grants nothing: a cookie whose tag was changed names no session.
// Cookies without a tag (made before sessions were capped) keep their old
// key, the hash alone, until they end.

// userTag is the tag of a user (a token's sub and ods) in session keys and
// cookies: a hash, so that neither holds the user's identifiers.
func userTag(subject, ods string) string {
	h := sha256.Sum256([]byte("session-user\x00" + subject + "\x00" + ods))
	return hex.EncodeToString(h[:12])
}

// sessionKey is the bucket key of a session cookie value.
func sessionKey(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	key := hex.EncodeToString(h[:])
	if _, tag, ok := strings.Cut(cookie, "."); ok {
		key = tag + "." + key
	}
	return key
}

// validCookie reports whether a cookie value has the shape of one: checked
// before it becomes part of a bucket key.
func validCookie(cookie string) bool {
	if cookie == "" || len(cookie) > 128 {
		return false
	}
	for i := 0; i < len(cookie); i++ {
		c := cookie[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	rnd, tag, tagged := strings.Cut(cookie, ".")
	return rnd != "" && (!tagged || len(tag) == 24 && !strings.Contains(tag, "."))
}

func sessionLimit(ctx context.Context) int { return service.SessionLimit(ctx) }

// NewSession stores a session for p and returns the cookie value. A user
// (sub and ods, whatever the token) holds at most the context's session
// limit (service.WithSessionLimit) of live sessions: beyond it, the ones used
// longest ago end, never the new one. So one token, or one user's tokens,
// cannot fill the bucket, and a user who lost a cookie can always sign in
// again.
func (s *Store) NewSession(ctx context.Context, p auth.Principal, now time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tag := userTag(p.Subject, p.ODS)
	cookie := base64.RawURLEncoding.EncodeToString(b[:]) + "." + tag
	v, _ := json.Marshal(service.Session{Subject: p.Subject, ODS: p.ODS, Role: p.Role, Expires: p.Expires, Used: now})
	if _, err := s.sessions.Create(ctx, sessionKey(cookie), v); err != nil {
		return "", fmt.Errorf("session: %w", err)
	}
	if err := s.trimSessions(ctx, tag, sessionKey(cookie), sessionLimit(ctx)); err != nil {
		// The cap could not be applied: the new session is not handed out.
		_ = s.sessions.Purge(context.WithoutCancel(ctx), sessionKey(cookie))
		return "", fmt.Errorf("session: %w", err)
	}
	return cookie, nil
}

// trimSessions ends a user's sessions beyond the newest limit (by their last
// write, which every use makes), never keep's. Two sign-ins at once both
// trim, to the same newest sessions.
func (s *Store) trimSessions(ctx context.Context, tag, keep string, limit int) error {
	w, err := s.sessions.WatchFiltered(ctx, []string{tag + ".*"}, jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	type live struct {
		key string
		rev uint64
	}
	var all []live
list:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("session list ended early")
			}
			if e == nil { // every current session seen
				break list
			}
			all = append(all, live{e.Key(), e.Revision()})
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(all) <= limit {
		return nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].rev > all[j].rev }) // newest first
	for _, e := range all[limit:] {
		if e.key == keep {
			continue
		}
		if err := s.sessions.Purge(ctx, e.key); err != nil {
			return err
		}
	}
	return nil
}

// TouchSession returns the session of a cookie and restarts its idle timer.
func (s *Store) TouchSession(ctx context.Context, cookie string, now time.Time) (*service.Session, error) {
	if !validCookie(cookie) {
		return nil, service.ErrNoSession
	}
	key := sessionKey(cookie)
	e, err := s.sessions.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, service.ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	var ss service.Session
	if err := json.Unmarshal(e.Value(), &ss); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	if now.Sub(ss.Used) > SessionIdle {
		return nil, service.ErrNoSession // idle too long (the bucket's TTL removes it too)
	}
	if !ss.Expires.IsZero() && now.After(ss.Expires) {
		_ = s.sessions.Purge(ctx, key)
		return nil, service.ErrNoSession
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
	if !validCookie(cookie) {
		return nil
	}
	key := sessionKey(cookie)
	if _, err := s.sessions.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return s.sessions.Purge(ctx, key)
}
