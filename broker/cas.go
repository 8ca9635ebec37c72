package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
)

// The one compare-and-set helper: every write of a prescription to the
// event log goes through update (Store.Update, Store.Create), which reads
// the prescription's current state and its subject sequence, asks a pure
// decision what to write, and publishes it with that sequence as the
// expected last subject sequence. Another writer in between makes the
// publish fail with "wrong last sequence": the helper reads and decides
// again, at most service.MaxAttempts times.
//
// Once a write is decided it is completed, even when the client's context
// ends meanwhile (the HTTP client went away, the request timed out): the
// publish runs under context.WithoutCancel, bounded by its own
// service.WriteTimeout. A publish abandoned half-way may still be stored by
// JetStream, and then what the broker answers (or logs) would not be what
// happened; completing it makes the outcome the decided one. The reads
// before a decision use the client's context: a client that has gone
// before anything is decided stops the update with nothing written.

// maxAttempts bounds a compare-and-set loop (also the nomination
// registry's).
const maxAttempts = service.MaxAttempts

// storeUnavailable is service.StoreUnavailable: nothing was changed, retry.
func storeUnavailable(op string, err error) *fhir.Error { return service.StoreUnavailable(op, err) }

// Update is the compare-and-set write of prescription id (see
// service.Prescriptions.Update).
func (s *Store) Update(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return s.update(ctx, id, false, decide)
}

// Create is Update deciding first from "nothing stored", without a read
// (see service.Prescriptions.Create).
func (s *Store) Create(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return s.update(ctx, id, true, decide)
}

func (s *Store) update(ctx context.Context, id string, assumeNew bool, decide service.Decide) (*service.Event, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err // the client went before a decision: nothing written
		}
		var cur *service.Event
		if attempt > 0 || !assumeNew {
			var err error
			cur, err = s.Current(ctx, id)
			switch {
			case errors.Is(err, service.ErrNotFound):
				cur = nil
			case err != nil:
				return nil, err
			}
		}
		w, err := decide(cur)
		if err != nil {
			return nil, err
		}
		if w == nil {
			return nil, nil
		}
		if w.Record == nil || w.Record.ID != id {
			return nil, fmt.Errorf("decided write about %q is not about prescription %s", recordID(w), id)
		}
		var expect uint64
		if cur != nil {
			expect = cur.Seq
		}
		// Decided: completed even if the client goes (see above).
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), service.WriteTimeout)
		seq, err := s.appendEvent(wctx, w.Event, w.MessageID, w.Record, w.Body, expect)
		cancel()
		if errors.Is(err, service.ErrConflict) {
			s.metrics.Projected.WithLabelValues("lifecycle", "cas_retry").Inc()
			continue
		}
		if err != nil {
			return nil, err
		}
		return &service.Event{Seq: seq, Event: w.Event, MessageID: w.MessageID, Record: w.Record, Body: w.Body}, nil
	}
	return nil, fmt.Errorf("%w: prescription %s: %d compare-and-set attempts lost", service.ErrBusy, id, maxAttempts)
}

func recordID(w *service.Write) string {
	if w.Record == nil {
		return ""
	}
	return w.Record.ID
}
