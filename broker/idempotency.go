package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// SavedResponse is the answer given to a request that carried an
// X-Request-ID, kept so that the same request sent again is answered the
// same way without being processed again.
//
// A release's answer is not kept: it holds every released order whole (3.4
// MB for 25 large ones, more than one NATS message takes, and patient data
// besides). Release lists what was handed over instead, and the same answer
// is rebuilt from the event log (AnswerHash checks that it is the same).
//
// Other answers may name a patient (a nomination change answers the
// patient's nominations; an error may quote what was sent), so in the bucket
// the body is sealed (AES-256-GCM under a key derived from the pseudonym
// key, bound to the bucket key) and the request hash is keyed (a nomination
// change's path holds the NHS number, and a plain hash of it could be
// reversed by trying every number). The bucket entry expires with
// --idempotency-ttl. Store methods take and return them in clear.
type SavedResponse struct {
	BodyHash    string `json:"bodyHash"` // SHA-256 of method, path and body (keyed in the bucket)
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Body        []byte `json:"body,omitempty"`
	// Sealed is Body as kept in the bucket.
	Sealed []byte `json:"sealed,omitempty"`

	// Since is when the key was first reserved, set when a retry takes an
	// abandoned reservation over (kept by the next takeover): the work of
	// the request it was reserved for is in the event log after it.
	Since time.Time `json:"since,omitzero"`

	Release    []ReleasedRef `json:"release,omitempty"`
	Rebuild    bool          `json:"rebuild,omitempty"`    // the answer is rebuilt from Release (which may be empty)
	AnswerHash string        `json:"answerHash,omitempty"` // SHA-256 of the answer's body, when rebuilt
}

// ReleasedRef is one prescription a release handed over: what its answer
// needs to be written again (the order's bytes are read from the event log).
type ReleasedRef struct {
	ID       string `json:"id"`
	BundleID string `json:"bundleId"`
	Issue    int    `json:"issue,omitempty"`
	Issues   int    `json:"issues,omitempty"`
}

// AnswerHash is SavedResponse.AnswerHash for an answer's body.
func AnswerHash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
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

// ErrInFlight says that a request with the same X-Request-ID is being
// processed now.
var ErrInFlight = errors.New("a request with this X-Request-ID is in progress")

// abandonAfter is how long a reservation may stand without an answer before
// a retry may take it over (its request died with its broker).
const abandonAfter = service.AbandonAfter

// Reservation is a key claimed for a request.
type Reservation struct {
	Rev uint64
	// TakenOver is when the key was first reserved, when this reservation
	// took over one abandoned without an answer (its request may have done
	// part or all of its work: see Lifecycle.ReleasedUnder); zero otherwise.
	TakenOver time.Time
}

// ReserveRequest claims key for a request whose hash is hash, atomically:
// the first caller gets a reservation to complete or release; a caller
// whose request was answered before gets that answer; a caller while
// another is in progress gets ErrInFlight.
func (s *Store) ReserveRequest(ctx context.Context, key, hash string, now time.Time) (*SavedResponse, Reservation, error) {
	kept := s.pseudo.keyedHash(hash)
	pending, _ := json.Marshal(SavedResponse{BodyHash: kept})
	rev, err := s.requests.Create(ctx, key, pending)
	if err == nil {
		return nil, Reservation{Rev: rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, Reservation{}, fmt.Errorf("reserve request key: %w", err)
	}
	e, err := s.requests.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, Reservation{}, ErrInFlight // released meanwhile: the client retries
	}
	if err != nil {
		return nil, Reservation{}, fmt.Errorf("read request key: %w", err)
	}
	var r SavedResponse
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, Reservation{}, fmt.Errorf("request key: %w", err)
	}
	// Entries written before keyed hashes (and expiring with the bucket's
	// TTL) hold the plain hash.
	if r.BodyHash == kept || r.BodyHash == hash {
		r.BodyHash = hash
	}
	if r.Sealed != nil {
		if r.Body, err = s.pseudo.open(r.Sealed, []byte(key)); err != nil {
			return nil, Reservation{}, fmt.Errorf("request key: sealed answer: %w", err)
		}
		r.Sealed = nil
	}
	if r.Status != 0 {
		return &r, Reservation{}, nil
	}
	if now.Sub(e.Created()) < abandonAfter {
		return nil, Reservation{}, ErrInFlight
	}
	if r.BodyHash != hash {
		// Another request under a key whose own request never finished.
		return &r, Reservation{}, nil
	}
	// Abandoned: take it over (exactly one retry can), keeping when it was
	// first reserved (the server's time, as the event log's).
	since := r.Since
	if since.IsZero() {
		since = e.Created()
	}
	pending, _ = json.Marshal(SavedResponse{BodyHash: kept, Since: since})
	rev, err = s.requests.Update(ctx, key, pending, e.Revision())
	if err != nil {
		return nil, Reservation{}, ErrInFlight
	}
	return nil, Reservation{Rev: rev, TakenOver: since}, nil
}

// EventsUnder reads the events of the given types that carry messageID and
// were stored from since to since + window, in log order. Only headers are
// read (StoredEvent.Body is empty).
func (s *Store) EventsUnder(ctx context.Context, messageID string, since time.Time, window time.Duration, types ...string) ([]*StoredEvent, error) {
	start := since
	end := since.Add(window)
	var out []*StoredEvent
	err := s.scanStream(ctx, "event log", StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectRx + ">"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		HeadersOnly:    true,
	}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		if md.Timestamp.After(end) {
			return false, nil
		}
		h := m.Headers()
		if h.Get(HeaderMessageID) != messageID || !slices.Contains(types, h.Get(HeaderEvent)) {
			return true, nil
		}
		ev, err := decodeStored(md.Sequence.Stream, md.Timestamp, h, nil)
		if err != nil {
			return true, nil // not the broker's
		}
		out = append(out, ev)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ErrAnswerTooLarge is an answer too large to keep in one NATS message and
// not rebuildable: its reservation is given up instead (see CompleteRequest).
var ErrAnswerTooLarge = errors.New("the answer is too large to keep for X-Request-ID")

// CompleteRequest records the answer to a reserved request. An answer too
// large for one message of the bucket gives the reservation up and returns
// ErrAnswerTooLarge (a retry then runs again, rather than meeting 409 until
// the reservation is taken over).
func (s *Store) CompleteRequest(ctx context.Context, key string, rev uint64, r *SavedResponse) error {
	kept := *r
	kept.BodyHash = s.pseudo.keyedHash(r.BodyHash)
	if r.Body != nil {
		kept.Body, kept.Sealed = nil, s.pseudo.seal(r.Body, []byte(key))
	}
	b, err := json.Marshal(&kept)
	if err != nil {
		return err
	}
	if s.maxMsg > 0 && len(b)+len(key)+1024 > s.maxMsg {
		if err := s.ReleaseRequest(ctx, key, rev); err != nil {
			return fmt.Errorf("%w (%d bytes); and giving it up: %v", ErrAnswerTooLarge, len(b), err)
		}
		return fmt.Errorf("%w (%d bytes)", ErrAnswerTooLarge, len(b))
	}
	_, err = s.requests.Update(ctx, key, b, rev)
	return err
}

// ReleaseRequest gives a reservation up (the answer was not final), so that
// a retry runs again.
func (s *Store) ReleaseRequest(ctx context.Context, key string, rev uint64) error {
	return s.requests.Delete(ctx, key, jetstream.LastRevision(rev))
}
