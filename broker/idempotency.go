package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// ReserveRequest claims key for a request whose hash is hash, atomically:
// the first caller gets a reservation to complete or release; a caller
// whose request was answered before gets that answer; a caller while
// another is in progress gets service.ErrInFlight.
func (s *Store) ReserveRequest(ctx context.Context, key, hash string, now time.Time) (*service.SavedResponse, service.Reservation, error) {
	kept := s.pseudo.keyedHash(hash)
	pending, _ := json.Marshal(service.SavedResponse{BodyHash: kept})
	rev, err := s.requests.Create(ctx, key, pending)
	if err == nil {
		return nil, service.Reservation{Rev: rev}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, service.Reservation{}, fmt.Errorf("reserve request key: %w", err)
	}
	e, err := s.requestEntry(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, service.Reservation{}, service.ErrInFlight // released meanwhile: the client retries
	}
	if err != nil {
		return nil, service.Reservation{}, fmt.Errorf("read request key: %w", err)
	}
	var r service.SavedResponse
	if err := json.Unmarshal(e.value, &r); err != nil {
		return nil, service.Reservation{}, fmt.Errorf("request key: %w", err)
	}
	// Entries written before keyed hashes (and expiring with the bucket's
	// TTL) hold the plain hash.
	if r.BodyHash == kept || r.BodyHash == hash {
		r.BodyHash = hash
	}
	if r.Sealed != nil {
		if r.Body, err = s.pseudo.open(r.Sealed, []byte(key)); err != nil {
			return nil, service.Reservation{}, fmt.Errorf("request key: sealed answer: %w", err)
		}
		r.Sealed = nil
	}
	if r.Status != 0 {
		return &r, service.Reservation{}, nil
	}
	// A release answered 503 with its writes unconfirmed kept its
	// reservation for its retry: taken over at once, not when abandoned.
	// (Nothing runs under it: another request is told so at once.)
	if !r.Unresolved && now.Sub(e.created) < service.AbandonAfter {
		return nil, service.Reservation{}, service.ErrInFlight
	}
	if r.BodyHash != hash {
		// Another request under a key whose own request never finished.
		return &r, service.Reservation{}, nil
	}
	// Abandoned: take it over (exactly one retry can), keeping when it was
	// first reserved (the server's time, as the event log's).
	since := r.Since
	if since.IsZero() {
		since = e.created
	}
	pending, _ = json.Marshal(service.SavedResponse{BodyHash: kept, Since: since})
	rev, err = s.requests.Update(ctx, key, pending, e.rev)
	if err != nil {
		return nil, service.Reservation{}, service.ErrInFlight
	}
	return nil, service.Reservation{Rev: rev, TakenOver: since}, nil
}

// requestEntry is an entry of the X-Request-ID bucket as read.
type requestEntry struct {
	value   []byte
	rev     uint64
	created time.Time // when it was written, the server's clock
}

// requestEntry reads key's entry in the X-Request-ID bucket
// (jetstream.ErrKeyNotFound: none, or deleted). On a replicated bucket
// (the broker's streams and buckets all have the store's replicas) it is
// read from the bucket stream's leader (leaderGet), not by the key-value
// client's direct get, which a follower may answer without the entry
// another instance has just written or updated: a retry would be told
// that its first attempt is still in progress rather than given its
// answer, or not take over an unresolved release at once.
func (s *Store) requestEntry(ctx context.Context, key string) (*requestEntry, error) {
	if s.replicas <= 1 {
		e, err := s.requests.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		return &requestEntry{value: e.Value(), rev: e.Revision(), created: e.Created()}, nil
	}
	m, err := s.leaderGet(ctx, "KV_"+BucketRequests, leaderGetRequest{LastFor: "$KV." + BucketRequests + "." + key})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	// A delete or purge marker, or the server's marker of an entry
	// removed (its TTL), is no entry.
	if m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		return nil, jetstream.ErrKeyNotFound
	}
	return &requestEntry{value: m.Data, rev: m.Sequence, created: m.Time}, nil
}

// EventsUnder reads the events of the given types that carry messageID and
// were stored from since to since + window, in log order. Only headers are
// read (service.Event.Body is empty). On a replicated event log the scan
// reads on until it has reached the log's last sequence as the stream
// leader held it when the read began (or passed the window's end): the
// replica its consumer reads may be behind, and a release acknowledged a
// moment ago must be found (its retry hands it over); a replica that does
// not catch up in time fails the read (503), never shortens it.
func (s *Store) EventsUnder(ctx context.Context, messageID string, since time.Time, window time.Duration, types ...string) ([]*service.Event, error) {
	start := since
	end := since.Add(window)
	var until uint64
	if s.eventsReplicated() {
		var err error
		if until, err = s.leaderLastSeq(ctx); err != nil {
			return nil, fmt.Errorf("read event log: last sequence: %w", err)
		}
	}
	var out []*service.Event
	err := s.scanStreamUntil(ctx, "event log", StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectRx + ">"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		HeadersOnly:    true,
	}, until, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		if md.Timestamp.After(end) {
			return false, nil
		}
		if md.Timestamp.Before(start) {
			// A consumer made on a replica that held nothing from start
			// on starts after its last message, which may be older.
			return true, nil
		}
		h := m.Headers()
		if h.Get(HeaderMessageID) != messageID || !slices.Contains(types, h.Get(HeaderEvent)) {
			return true, nil
		}
		ev, err := DecodeEvent(md.Sequence.Stream, md.Timestamp, m.Subject(), h, nil)
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

// CompleteRequest records the answer to a reserved request. A
// SavedResponse marked Unresolved is no answer: it keeps the reservation
// for the request's retry, which takes it over at once (ReserveRequest),
// with Since the time it was reserved (read from the bucket when not
// given). An answer too
// large for one message of the bucket gives the reservation up and returns
// ErrAnswerTooLarge (a retry then runs again, rather than meeting 409 until
// the reservation is taken over).
func (s *Store) CompleteRequest(ctx context.Context, key string, rev uint64, r *service.SavedResponse) error {
	kept := *r
	kept.BodyHash = s.pseudo.keyedHash(r.BodyHash)
	if r.Unresolved && r.Since.IsZero() {
		// The work of the request is in the event log after its
		// reservation was made (the server's time, as the log's).
		e, err := s.requestEntry(ctx, key)
		if err != nil {
			return fmt.Errorf("read request key: %w", err)
		}
		if e.rev != rev {
			return fmt.Errorf("request key: revision %d, reserved %d", e.rev, rev)
		}
		kept.Since = e.created
	}
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
