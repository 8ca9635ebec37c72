package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// SavedResponse is the answer given to a request that carried an
// X-Request-ID, kept so that the same request sent again is answered the
// same way without being processed again.
type SavedResponse struct {
	BodyHash    string `json:"bodyHash"` // SHA-256 of method, path and body
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Body        []byte `json:"body"`
}

// RequestKey is the bucket key of an X-Request-ID: scoped to the user and
// organisation that sent it, so one client can never read another's answer.
func RequestKey(subject, ods, requestID string) string {
	h := sha256.Sum256([]byte(subject + "\x00" + ods + "\x00" + requestID))
	return hex.EncodeToString(h[:])
}

// RequestHash is SavedResponse.BodyHash for a request.
func RequestHash(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method + " " + path + "\x00"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// SavedResponse returns the answer remembered for key; ErrNotFound when none.
func (s *Store) SavedResponse(ctx context.Context, key string) (*SavedResponse, error) {
	e, err := s.requests.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read request key: %w", err)
	}
	var r SavedResponse
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("request key: %w", err)
	}
	return &r, nil
}

// SaveResponse remembers the answer for key unless one is remembered already.
func (s *Store) SaveResponse(ctx context.Context, key string, r *SavedResponse) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = s.requests.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	return err
}
